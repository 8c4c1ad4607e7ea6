"""forget and prune on real repositories: what is freed is measured on the drive, every snapshot
left restores bit for bit, a prune killed at any change leaves a repository that verifies, a
backup running beside a prune keeps everything it uses, and a running restore keeps prune away."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat
from tests.integration.prune_history import WINDOW, history, new_repo, restores_exactly, stored_objects
from tests.integration.test_repository_safety import one_line_error


@pytest.fixture(autouse=True)
def small_packs(monkeypatch):
    """256 KiB packs: a small disk spreads over many packs, as a large one does over 64 MiB packs."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(256 * 1024))


def packs_of(repo) -> dict[str, int]:
    """The packs themselves (their parity sidecars beside them are not packs)."""
    return {k: v for k, v in stored_objects(repo).items() if k.startswith("packs/") and k.endswith(".pack")}


def test_forget_then_prune_frees_what_only_forgotten_snapshots_used(tmp_path):
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 6)
    before = stored_objects(repo)
    out = lifeboat("forget", "--repo", repo, "--keep-last", "2", "--prune", "--json", json_out=True).data
    gone = [sid for sid, _ in snaps[:4]]
    assert sorted(v["id"] for v in out["remove"]) == sorted(gone)
    assert [(v["id"], v["reasons"]) for v in out["keep"]] == [(sid, ["last 2"]) for sid, _ in reversed(snaps[4:])]
    after = stored_objects(repo)
    for sid in gone:                    # the manifest and its check mark are gone
        assert f"snapshots/{sid}.json" in before and f"verified/{sid}.json" in before
        assert f"snapshots/{sid}.json" not in after and f"verified/{sid}.json" not in after
    # What prune says it freed is what the drive lost, to the byte (packs and index files).
    def data(objs):
        return sum(v for k, v in objs.items() if k.startswith(("packs/", "index/")))
    pruned = out["prune"]
    assert pruned["bytes_freed"] == data(before) - data(after) > 0
    # Only packs holding garbage were read and replaced; every other pack is untouched.
    old, new = {k: v for k, v in before.items() if k.startswith("packs/") and k.endswith(".pack")}, packs_of(repo)
    deleted, written = set(old) - set(new), set(new) - set(old)
    assert len(deleted) == pruned["packs_deleted"] and len(written) == pruned["packs_written"]
    assert pruned["bytes_read"] <= sum(old[k] for k in deleted)
    assert pruned["packs_repacked"] + pruned["plan"]["packs_to_delete"] == pruned["packs_deleted"]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    for sid, version in snaps[4:]:
        restores_exactly(repo, sid, version, tmp_path)
    # A second prune finds nothing left to do.
    again = lifeboat("prune", "--repo", repo, "--json", json_out=True).data
    assert again["plan"]["packs_to_delete"] == again["plan"]["packs_to_repack"] == again["bytes_freed"] == 0


def test_dry_runs_change_nothing_and_say_what_would_go(tmp_path):
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 3)
    before = stored_objects(repo)
    out = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--dry-run", "--prune")
    assert "would remove" in out.stdout and snaps[0][0][:8] in out.stdout and "(dry run" in out.stdout
    # The prune part plans as if the forget had happened: the two older snapshots' own chunks.
    plan = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--dry-run", "--prune", "--json",
                    json_out=True).data["prune"]["plan"]
    assert plan["snapshots"] == 1 and plan["garbage_bytes"] >= 2 * 8 * 64 * 1024 * 0.9
    assert lifeboat("prune", "--repo", repo, "--dry-run", "--json", json_out=True).data["bytes_freed"] == 0
    assert stored_objects(repo) == before


def test_forget_judges_each_machine_apart_and_name_limits_it(tmp_path):
    repo = new_repo(tmp_path / "repo")
    a = history(tmp_path, repo, 3, name="office-a")
    b = history(tmp_path, repo, 2, name="office-b", seed=2)
    out = lifeboat("forget", "--repo", repo, "--name", "office-a", "--keep-last", "1", "--json", json_out=True).data
    assert [v["id"] for v in out["remove"]] == [a[1][0], a[0][0]]
    left = {s["id"] for s in lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]}
    assert left == {a[2][0], b[0][0], b[1][0]}
    # Without --name, each machine keeps its own newest.
    out = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--json", json_out=True).data
    assert [v["id"] for v in out["keep"]] == [a[2][0], b[1][0]]
    assert [v["id"] for v in out["remove"]] == [b[0][0]]


def test_bad_input_is_one_line_and_removes_nothing(tmp_path):
    repo = new_repo(tmp_path / "repo")
    history(tmp_path, repo, 2)
    before = stored_objects(repo)
    line = one_line_error(lifeboat("forget", "--repo", repo, check=False), 2)
    assert "no retention rule" in line
    one_line_error(lifeboat("forget", "--repo", repo, "--keep-last", "-1", check=False), 2)
    one_line_error(lifeboat("prune", "--repo", repo, "--repack-threshold", "101", check=False), 2)
    one_line_error(lifeboat("prune", "--repo", tmp_path / "nowhere", check=False), 5)
    assert stored_objects(repo) == before


def changes_of(result: dict) -> int:
    """Objects a prune wrote or deleted (each a point where the test hook may stop it)."""
    return (result["packs_written"] + result["index_files_written"] + result["index_files_deleted"]
            + result["packs_deleted"])


def test_prune_killed_after_any_change_leaves_every_snapshot_whole(tmp_path, monkeypatch):
    # 1 MiB packs: still every kind of change (packs written and deleted, index files written
    # and deleted), at 23 points instead of 256 KiB packs' 38 (each point costs seven runs).
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(MiB))
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 5)
    lifeboat("forget", "--repo", repo, "--keep-last", "2")
    left = snaps[3:]
    probe = str(tmp_path / "probe")
    shutil.copytree(repo, probe)
    probed = lifeboat("prune", "--repo", probe, "--repack-threshold", "100", "--json", json_out=True).data
    kinds = ("packs_written", "index_files_written", "index_files_deleted", "packs_deleted")
    assert all(probed[k] > 0 for k in kinds), {k: probed[k] for k in kinds}
    total = changes_of(probed)
    points = range(1, total + 1)                 # after every pack and index file written or deleted
    for n in points:
        copy = str(tmp_path / f"killed-{n}")
        shutil.copytree(repo, copy)
        env = {**os.environ, "LIFEBOAT_TEST_SIGNAL_AFTER": f"{n}:KILL"}
        proc = subprocess.run([sys.executable, "-m", "recovery", "prune", "--repo", copy, "--repack-threshold",
                               "100"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
        assert lifeboat("verify", "--repo", copy, "--json", json_out=True).data["ok"], n
        for sid, version in left:
            restores_exactly(copy, sid, version, tmp_path)
        # The next prune (its stale lock removed) finishes the work.
        lifeboat("prune", "--repo", copy, "--repack-threshold", "100")
        assert lifeboat("verify", "--repo", copy, "--json", json_out=True).data["ok"], n
        # ... leaving no unused or duplicated blob behind.
        left_over = lifeboat("prune", "--repo", copy, "--repack-threshold", "100", "--dry-run", "--json",
                             json_out=True).data["plan"]
        assert left_over["packs_to_delete"] == left_over["packs_to_repack"] == 0, (n, left_over)
        shutil.rmtree(copy)


def wait_state(pid: int, state: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == state:
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never reached state {state}")


def test_backup_finishing_during_prune_keeps_what_it_uses(tmp_path):
    """A backup of the oldest disk state runs while prune repacks (both under shared locks):
    its chunks lie in packs prune chose to delete, which must then stay."""
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 4, changed=24)
    lifeboat("forget", "--repo", repo, "--keep-last", "1")
    env = {**os.environ, "LIFEBOAT_TEST_SIGNAL_AFTER": "1:STOP"}
    prune = subprocess.Popen([sys.executable, "-m", "recovery", "prune", "--repo", repo, "--repack-threshold",
                              "100", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_state(prune.pid, "T")                   # stopped after sealing its first new pack
        old_disk = tmp_path / "old.img"
        shutil.copyfile(snaps[0][1], old_disk)
        back = lifeboat("backup", old_disk, "--repo", repo, "--name", "pc", "--json", json_out=True).data
    finally:
        prune.send_signal(signal.SIGCONT)
    out, err = prune.communicate(timeout=120)
    assert prune.returncode == 0, err
    result = json.loads(out)
    assert any("saved meanwhile" in k for k in result["kept"]), result
    assert back["bytes_stored_new"] < 2 * MiB          # it reused the chunks prune had doomed
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    restores_exactly(repo, back["snapshot"], snaps[0][1], tmp_path)
    restores_exactly(repo, snaps[-1][0], snaps[-1][1], tmp_path)


def test_prune_waits_for_a_running_backup_then_deletes(tmp_path):
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 3)
    lifeboat("forget", "--repo", repo, "--keep-last", "1")
    big = tmp_path / "other.img"
    big.write_bytes(os.urandom(24 * MiB))
    backup = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(big), "--repo", repo, "--name",
                               "other", "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while not list((Path(repo) / "lock").glob("*.json")) if (Path(repo) / "lock").is_dir() else True:
            assert time.monotonic() < deadline and backup.poll() is None, "the backup never took its lock"
            time.sleep(0.005)
        os.kill(backup.pid, signal.SIGSTOP)          # a backup in the middle of its work
        before = stored_objects(repo)
        gave_up = lifeboat("prune", "--repo", repo, "--wait", "1", check=False)
        # What it was doing, that it waits, then one error line of its own exit code.
        assert gave_up.returncode == 12 and "Traceback" not in gave_up.stderr, gave_up.stderr
        said = gave_up.stderr.strip().splitlines()
        assert "waiting up to 1 s" in said[-2]
        assert [x for x in said if x.startswith("lifeboat: ")] == [said[-1]]
        assert "backups or restores are running (backup by process" in said[-1] and "waited 1 s" in said[-1]
        assert {k for k in stored_objects(repo) if not k.startswith(("packs/", "index/"))} == \
            {k for k in before if not k.startswith(("packs/", "index/"))}
        assert {k for k in before if k.startswith("packs/")} <= set(stored_objects(repo))   # nothing deleted
        # forget waits the same way, and removes nothing when it gives up.
        gave_up = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--wait", "1", check=False)
        assert gave_up.returncode == 12 and "waited 1 s" in gave_up.stderr.strip().splitlines()[-1]
        assert {k for k in stored_objects(repo) if k.startswith("snapshots/")} == \
            {k for k in before if k.startswith("snapshots/")}
        waiting = subprocess.Popen([sys.executable, "-m", "recovery", "prune", "--repo", repo, "--wait", "120",
                                    "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        said = waiting.stderr.readline()
        while said and "waiting" not in said:
            said = waiting.stderr.readline()
        assert "waiting up to 120 s" in said, said
    finally:
        os.kill(backup.pid, signal.SIGCONT)
    back_out, back_err = backup.communicate(timeout=120)
    assert backup.returncode == 0, back_err
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert json.loads(out)["bytes_freed"] > 0
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    restores_exactly(repo, json.loads(back_out)["snapshot"], big, tmp_path)
    restores_exactly(repo, snaps[-1][0], snaps[-1][1], tmp_path)


def test_prune_waits_for_a_running_restore_which_reads_every_byte(tmp_path):
    """A restore holds the shared lock while it reads: prune (which would repack the packs
    the restore reads) gives up after --wait, deleting nothing, or waits for it; the restore,
    stopped in the middle meanwhile, still writes the snapshot bit for bit."""
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 3, size=48 * MiB, changed=200)
    lifeboat("forget", "--repo", repo, "--keep-last", "1")
    sid, expected = snaps[-1]
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(expected.stat().st_size)
    restore = subprocess.Popen([sys.executable, "-m", "recovery", "restore", sid, str(target), "--repo", repo,
                                "--yes", "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    waiting = None
    try:
        locks = Path(repo) / "lock"
        deadline = time.monotonic() + 60
        while not (locks.is_dir() and list(locks.glob("*.json"))):
            assert time.monotonic() < deadline and restore.poll() is None, "the restore never took its lock"
            time.sleep(0.002)
        os.kill(restore.pid, signal.SIGSTOP)         # a restore in the middle of its reads
        held = json.loads(next(locks.glob("*.json")).read_text())
        assert (held["mode"], held["purpose"], held["pid"]) == ("shared", "restore", restore.pid)
        before = stored_objects(repo)
        gave_up = lifeboat("prune", "--repo", repo, "--repack-threshold", "100", "--wait", "1", check=False)
        assert gave_up.returncode == 12 and "Traceback" not in gave_up.stderr, gave_up.stderr
        last = gave_up.stderr.strip().splitlines()[-1]
        assert f"restore by process {restore.pid}" in last and "nothing was deleted" in last, last
        assert set(before) <= set(stored_objects(repo))     # repacked copies may be written, nothing deleted
        waiting = subprocess.Popen([sys.executable, "-m", "recovery", "prune", "--repo", repo, "--repack-threshold",
                                    "100", "--wait", "120", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        said = waiting.stderr.readline()
        while said and "waiting" not in said:
            said = waiting.stderr.readline()
        assert "waiting up to 120 s" in said, said
        assert set(before) <= set(stored_objects(repo))
    finally:
        os.kill(restore.pid, signal.SIGCONT)
    out, err = restore.communicate(timeout=120)
    assert restore.returncode == 0, err
    assert target.read_bytes() == expected.read_bytes()
    assert waiting is not None
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    pruned = json.loads(out)
    assert pruned["bytes_freed"] > 0 and pruned["packs_deleted"] > 0, pruned     # packs the restore read
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    restores_exactly(repo, sid, expected, tmp_path)


def test_a_restore_refuses_while_prune_holds_the_exclusive_lock(tmp_path):
    """The other way round: while the exclusive lock is held (as prune holds it while it
    deletes; taken here by the test itself, through the same Lock), a restore refuses (busy,
    exit 5) before writing anything, instead of reading packs that may go."""
    from recovery.repo.lock import Lock
    from recovery.storage.local import LocalStorage

    repo = new_repo(tmp_path / "repo")
    sid, expected = history(tmp_path, repo, 1)[0]
    size = expected.stat().st_size
    target = tmp_path / "target.img"
    target.write_bytes(b"\xa5" * size)
    with Lock(LocalStorage(Path(repo)), exclusive=True, purpose="prune"):
        refused = lifeboat("restore", sid, target, "--repo", repo, "--yes", check=False)
        verified = lifeboat("verify", "--repo", repo, check=False)
    assert refused.returncode == 5 and "Traceback" not in refused.stderr, refused.stderr   # busy
    assert len(refused.stderr.strip().splitlines()) == 1 and "is busy" in refused.stderr
    assert target.read_bytes() == b"\xa5" * size                   # nothing written
    assert verified.returncode == 5 and "is busy" in verified.stderr
    restores_exactly(repo, sid, expected, tmp_path)


def test_forget_and_prune_in_an_s3_bucket(tmp_path, seaweedfs, monkeypatch):
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    seaweedfs.bucket("prune")
    repo = "s3://prune/office"

    def data_bytes():
        return sum(o.size for o in seaweedfs.client().list_objects("prune", prefix="office/", recursive=True)
                   if o.object_name.startswith(("office/packs/", "office/index/")))

    new_repo(repo)
    snaps = history(tmp_path, repo, 4)
    before = data_bytes()
    out = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--prune", "--json", json_out=True).data
    assert len(out["remove"]) == 3
    assert out["prune"]["bytes_freed"] == before - data_bytes() > 0
    ids = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in ids] == [snaps[-1][0]]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    restores_exactly(repo, snaps[-1][0], snaps[-1][1], tmp_path)


@pytest.mark.loop
def test_full_destination_says_what_forget_and_prune_would_free(tmp_path, loops):
    """The repository on a 30 MiB ext4 filesystem: six backups of a disk changing 2 MiB each
    time, then a new disk that does not fit. The error says what the default policy (keep last
    3, ...: all six were made today, so only the three newest stay) would free: the windows only
    the three oldest hold (random, stored as they are: 64 KiB each) and their own chunk tables."""
    from recovery.units import human_size

    store = fi.make_ext4(tmp_path / "store.img", 30 * MiB, None, garbage=False)
    mnt = tmp_path / "usb"
    mnt.mkdir()
    subprocess.run(["mount", loops.attach(store), mnt], check=True)
    try:
        repo = new_repo(mnt / "repo")
        snaps = history(tmp_path, repo, 6, changed=32)
        windows = [{v.read_bytes()[i:i + WINDOW] for i in range(0, 8 * MiB, WINDOW)} for _, v in snaps]
        only_old = set().union(*windows[:3]) - set().union(*windows[3:])
        table = 8 * MiB // WINDOW * 32                 # one chunk table: 32 random bytes a window
        expected = len(only_old) * WINDOW + 3 * table
        newcomer = tmp_path / "new.img"
        newcomer.write_bytes(os.urandom(8 * MiB))
        line = one_line_error(lifeboat("backup", newcomer, "--repo", repo, "--name", "pc", check=False), 7)
        assert "full" in line
        assert (f"forgetting 3 snapshot(s) by the default retention policy (keep last 3, daily 7, weekly 4, "
                f"monthly 12) and pruning would free {human_size(expected)}") in line, line
        # Doing what it says makes room for it.
        out = lifeboat("forget", "--repo", repo, "--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4",
                       "--keep-monthly", "12", "--prune", "--json", json_out=True).data
        assert len(out["remove"]) == 3 and out["prune"]["bytes_freed"] >= 0.8 * expected
        lifeboat("backup", newcomer, "--repo", repo, "--name", "pc")
        assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    finally:
        subprocess.run(["umount", mnt], check=True)


@pytest.mark.loop
def test_prune_on_a_full_drive_deletes_first_then_repacks_the_rest(tmp_path, loops):
    """The repository's filesystem is filled to the last few KiB by another file: the repack's
    first new pack cannot be written. Prune then deletes what it can (unused packs), and
    repacks the rest in the room that made."""
    store = fi.make_ext4(tmp_path / "store.img", 40 * MiB, None, garbage=False)
    mnt = tmp_path / "usb"
    mnt.mkdir()
    subprocess.run(["mount", loops.attach(store), mnt], check=True)
    try:
        repo = new_repo(mnt / "repo")
        snaps = history(tmp_path, repo, 5, changed=32)
        lifeboat("forget", "--repo", repo, "--keep-last", "2")
        filler = mnt / "filler.bin"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\xa5" * MiB)
                    f.flush()
            except OSError:
                pass
        with open(filler, "r+b") as f:        # leave less than one new pack of room
            f.truncate(max(filler.stat().st_size - 128 * 1024, 0))
        proc = lifeboat("prune", "--repo", repo, "--repack-threshold", "100", "--json", json_out=True)
        assert "the destination was full" in proc.stderr, proc.stderr
        assert proc.data["packs_deleted"] > 0 and proc.data["bytes_freed"] > 0
        assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
        for sid, version in snaps[3:]:
            restores_exactly(repo, sid, version, tmp_path)
        again = lifeboat("prune", "--repo", repo, "--repack-threshold", "100", "--json", json_out=True).data
        assert again["plan"]["packs_to_delete"] == again["plan"]["packs_to_repack"] == 0
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_a_damaged_manifest_is_kept_by_forget_and_stops_prune(tmp_path):
    repo = new_repo(tmp_path / "repo")
    snaps = history(tmp_path, repo, 3)
    manifest = Path(repo) / "snapshots" / f"{snaps[0][0]}.json"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x01
    manifest.write_bytes(bytes(data))
    Path(f"{manifest}.par").unlink()         # damage its parity cannot repair (it has none left)
    out = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--json", json_out=True).data
    assert out["unjudged"] == [snaps[0][0][:8]] and [v["id"] for v in out["remove"]] == [snaps[1][0]]
    assert manifest.exists()
    before = stored_objects(repo)
    line = one_line_error(lifeboat("prune", "--repo", repo, check=False), 6)
    assert "prune needs every snapshot readable" in line
    assert stored_objects(repo) == before


def test_forget_and_prune_in_an_encrypted_repository(tmp_path, monkeypatch):
    """Sealed blobs are copied as they are, new packs get sealed footers and the new index file
    is sealed: the kept snapshots still open and restore bit for bit."""
    secret = tmp_path / "pass"
    secret.write_text("a long passphrase for pruning\n")
    secret.chmod(0o600)
    monkeypatch.setenv("LIFEBOAT_PASSPHRASE_FILE", str(secret))
    repo = str(tmp_path / "repo")
    lifeboat("repo", "init", repo, "--chunk-size", WINDOW, "--encrypt",
             "--kdf-memory", "8", "--kdf-iterations", "1", "--kdf-parallelism", "1")
    snaps = history(tmp_path, repo, 4)
    out = lifeboat("forget", "--repo", repo, "--keep-last", "1", "--prune", "--json", json_out=True).data
    assert out["prune"]["bytes_freed"] > 0 and out["prune"]["packs_repacked"] > 0, out["prune"]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    sid, version = snaps[-1]
    restores_exactly(repo, sid, version, tmp_path)
    index_files = list((tmp_path / "repo" / "index").glob("*.idx"))
    assert index_files and all(not f.read_bytes().startswith(b"LBINDEX\x01") for f in index_files)


@pytest.mark.loop
def test_a_read_only_repository_restores_and_verifies_without_a_lock(tmp_path):
    """A repository on a read-only mount cannot hold a lock (and cannot be pruned): restore
    and verify read it without one; a backup says it may not write there, not that it is busy."""
    repo = new_repo(tmp_path / "repo")
    sid, expected = history(tmp_path, repo, 1)[0]
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", repo, ro], check=True)
    try:
        restores_exactly(str(ro), sid, expected, tmp_path)
        assert lifeboat("verify", "--repo", ro, "--json", json_out=True).data["ok"]
        line = one_line_error(lifeboat("backup", expected, "--repo", ro, check=False), 5)
        assert f"no permission to write to {ro} (Read-only file system)" in line and "busy" not in line, line
    finally:
        subprocess.run(["umount", ro], check=True)
