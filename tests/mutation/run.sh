#!/bin/bash
# Mutation testing, by hand (under nice: the machine is shared) and outside CI (it takes tens of minutes on 2 cores):
#   .venv/bin/pip install mutmut==2.5.1      # not a project dependency: only this script uses it
#   tests/mutation/run.sh [MODULE_LABEL ...]  # default: every module below
# Each module is mutated with the unit tests that exercise it, in a scratch copy of the tracked
# files (the work tree is never mutated). Results: $OUT/<label>.results, and `mutmut show ID`
# run inside $OUT/copy with $OUT/cache-<label> copied to .mutmut-cache (never while a run is going:
# mutmut reads the mutated file and corrupts its cache). Kill rates: tests/mutation/tally.py $OUT.
# mutmut 2 counts only pytest's exit code 1 as a kill; a mutant that breaks an import ends in a
# collection error (exit 2), which mutexit.py maps to 1; one that crashes the interpreter (a
# signal) ends the run with 1 through crashexit.py.
set -uo pipefail
# The whole script is one function, read before it runs: editing this file during a run (bash
# reads a script as it goes) cannot change what the run does next.
main() {
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/build/mutation}
V=$ROOT/.venv/bin
[ -x "$V/mutmut" ] || { echo "install mutmut first: $V/pip install mutmut==2.5.1" >&2; exit 2; }
# RESUME=1 goes on from a run that stopped (mutmut keeps every result in its cache as it goes;
# a full disk or a killed worker leaves it waiting forever): same copy, same cache.
if [ -z "${RESUME:-}" ]; then
    rm -rf "$OUT/copy" && mkdir -p "$OUT/copy"
    (cd "$ROOT" && git ls-files -z | xargs -0 cp --parents -t "$OUT/copy")
    cp "$ROOT/tests/mutation/mutexit.py" "$OUT/copy/"
fi
cd "$OUT/copy"
export PYTHONPATH=$OUT/copy

declare -A PATHS=(
    [chunking]=recovery/chunking.py
    [layout]=recovery/plan/layout.py
    [bitmap]=recovery/fs/bitmap.py
    [format]=recovery/repo/format.py
    [sealing]=recovery/repo/sealing.py
    [retention]=recovery/repo/retention.py
    [index]=recovery/repo/index.py
    [parity]=recovery/repo/parity.py
    [ext]=recovery/fs/ext.py
    [fat]=recovery/fs/fat.py
    [ntfs]=recovery/fs/ntfs.py
    [packs]=recovery/repo/packs.py
    [manifest]=recovery/repo/manifest.py
    [locations]=recovery/repo/locations.py
    [keys]=recovery/repo/keys.py
    [lock]=recovery/repo/lock.py
    [cache]=recovery/repo/cache.py
    [locations]=recovery/repo/locations.py
    [reader]=recovery/repo/reader.py
    [upgrade]=recovery/repo/upgrade.py
    [scrub]=recovery/repo/scrub.py
    [swap]=recovery/fs/swap.py
    [foreign]=recovery/fs/foreign.py
    [fsinit]=recovery/fs/__init__.py
    [repository]=recovery/repo/repository.py     # in two parts: up to class WriteSession, and WriteSession
    [writesession]=recovery/repo/repository.py   # on; only_lines.py marks the other part, then RESUME=1 (RESULTS.md)
    [prune]=recovery/repo/prune.py
    [ranges]=recovery/repo/ranges.py
    [isal]=recovery/repo/isal.py
    [jbd2]=recovery/fs/jbd2.py
    [extjournal]=recovery/fs/ext.py              # its journal lines only (only_lines.py, RESULTS.md)
)
# Narrowed where a module's tests are slow: parity without its 9 MB objects (the same bound at
# a smaller size) and with 2 of the 40 seeds of scattered damage (5 s a run instead of 17), ext with two of the ten mkfs variants (one ext4, one ext2 with 1 KiB blocks).
declare -A TESTS=(
    [chunking]="tests/unit/test_chunking.py tests/unit/test_repo_format.py tests/unit/test_windowread.py"
    [layout]="tests/unit/test_plan_layout.py tests/unit/test_plan_roles.py"
    [bitmap]="tests/unit/test_fs_bitmap.py"
    [format]="tests/unit/test_repo_format.py tests/integration/test_format_on_disk.py"
    [sealing]="tests/unit/test_repo_sealing.py"
    [retention]="tests/unit/test_retention.py"
    [index]="tests/unit/test_repo_index.py tests/unit/test_repo_format.py tests/unit/test_repo_sealing.py"
    [parity]="tests/unit/test_parity_edges.py tests/unit/test_parity_isal.py tests/unit/test_parity.py -k 'not 9000001 and (not words_allow or words_allow[3] or words_allow[17])'"
    [ext]="tests/unit/test_ext_edges.py tests/unit/test_fs_ext.py -k 'not dumpe2fs and not one_terabyte'"
    [fat]="tests/unit/test_fat_edges.py tests/unit/test_fs_fat.py"
    [ntfs]="tests/unit/test_ntfs_damage.py tests/unit/test_ntfs_attribute_lists.py tests/unit/test_ntfs_edges.py tests/unit/test_fs_ntfs.py -k 'not other_geometries and not copy_of_mapped'"
    [packs]="tests/unit/test_repo_format.py tests/unit/test_repo_index.py tests/unit/test_repo_sealing.py tests/unit/test_packs_edges.py tests/unit/test_parity_isal.py"
    [manifest]="tests/unit/test_manifest_json.py tests/unit/test_repo_format.py"
    [cache]="tests/unit/test_index_cache.py"
    [keys]="tests/unit/test_keys_edges.py"
    [lock]="tests/unit/test_lock_edges.py tests/unit/test_lock_races.py tests/integration/test_lock_object_store.py"
    [locations]="tests/unit/test_locations_edges.py tests/integration/test_locations_failing_drive.py"
    [reader]="tests/integration/test_partition_reader.py tests/integration/test_reader_edges.py tests/integration/test_reader_decoding.py"
    [upgrade]="tests/unit/test_upgrade_edges.py tests/integration/test_repo_upgrade.py"
    [scrub]="tests/unit/test_scrub_edges.py"
    [swap]="tests/unit/test_fs_signatures.py tests/unit/test_fs_probe.py"
    [foreign]="tests/unit/test_fs_signatures.py tests/unit/test_fs_probe.py"
    [fsinit]="tests/unit/test_fs_dispatch.py tests/unit/test_fs_signatures.py tests/unit/test_fs_probe.py"
    [repository]="tests/unit/test_repository_edges.py tests/unit/test_write_session.py tests/loop/test_repository_placement_loop.py tests/unit/test_repo_format.py tests/unit/test_repo_unlock_background.py"
    [writesession]="tests/unit/test_write_session.py tests/unit/test_repo_format.py tests/unit/test_repository_edges.py"
    [prune]="tests/unit/test_prune_edges.py"
    [ranges]="tests/unit/test_ranges_edges.py"
    [isal]="tests/unit/test_parity_isal.py tests/unit/test_isal_edges.py"
    [jbd2]="tests/loop/test_ext_unrecovered_journal.py"
    [extjournal]="tests/loop/test_ext_unrecovered_journal.py tests/unit/test_fs_ext.py tests/unit/test_ext_edges.py -k 'not dumpe2fs and not one_terabyte'"
)
for label in "${@:-chunking bitmap format layout sealing retention index parity ext fat ntfs}"; do
    for one in $label; do
        [ -n "${RESUME:-}" ] || rm -f .mutmut-cache
        # AGAIN=1: start from the last run's results, so after tests are added only the
        # survivors and the untested run again (mutmut keeps a killed mutant killed).
        [ -n "${AGAIN:-}" ] && [ -f "$OUT/cache-$one" ] && cp "$OUT/cache-$one" .mutmut-cache
        nice -n 19 "$V/mutmut" run --paths-to-mutate "${PATHS[$one]}" \
            --runner "$V/python $ROOT/tests/mutation/crashexit.py $V/python -m pytest -x -q -p no:cacheprovider -p mutexit --basetemp=$OUT/pytest ${TESTS[$one]}" \
            > "$OUT/$one.log" 2>&1
        cp .mutmut-cache "$OUT/cache-$one"
        "$V/mutmut" results > "$OUT/$one.results" 2>&1
        python3 "$ROOT/tests/mutation/tally.py" "$OUT" | grep -E "^(module|$one) "
    done
done
}
main "$@"; exit
