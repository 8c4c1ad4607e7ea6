"""Restore you can trust: proof before writing, the plan as typed actions, the incomplete-restore
mark, kill -9 at random points and resume — on real filesystems in real image files."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from recovery.probe.disks import describe
from recovery.probe.restore_mark import read_mark
from recovery.probe.table import read_layout
from recovery.repo.packs import pack_path
from recovery.repo.repository import Repository
from recovery.verify import chunk_table, table_ids
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_repository_safety import data_tree, one_line_error, one_partition_disk


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def damage_chunk(repo_dir: Path, sid: str, partition: int, window: int | None = None) -> int:
    """Overwrite 4 bytes inside the stored form of one data chunk of `partition` (the middle one,
    or `window`); returns the window's number."""
    repo = Repository.open(repo_dir)
    part = next(p for p in repo.load_manifest(sid).partitions if p.number == partition)
    ids = list(table_ids(chunk_table(repo, part)))
    w, bid = ids[len(ids) // 2] if window is None else next(x for x in ids if x[0] == window)
    loc = repo.index.get(bid)
    with open(pack_path(repo.path, loc.pack_id), "r+b") as f:
        f.seek(loc.offset + loc.stored_len // 2)
        f.write(b"\xde\xad\xbe\xef")
    repo.close()
    return w


def test_damaged_pack_is_refused_before_anything_is_written(tmp_path):
    tree = data_tree(tmp_path / "tree", 6, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo, "--format", "1")  # no parity: damage stays
    sid = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]
    w = damage_chunk(repo, sid, 1)

    # The target holds another PC's disk: it must come out byte for byte unchanged.
    target = tmp_path / "target.img"
    (tmp_path / "other").mkdir()
    build = build_gpt_pc(tmp_path / "other", _small_tree(tmp_path / "other-tree"))
    os.replace(build.disk, target)
    before = sha256(target)
    proc = lifeboat("restore", "latest", target, "--repo", repo, "--yes", check=False)
    line = one_line_error(proc, 6)
    assert f"snapshot {sid[:8]}" in line and "partition 1" in line
    assert f"bytes {w * MiB}-{(w + 1) * MiB - 1}" in line and "nothing was written" in line
    assert sha256(target) == before


def _small_tree(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "letter.txt").write_text("Dear Ann,\n" * 200)
    (root / "photo.jpg").write_bytes(random.Random(5).randbytes(300_000))
    return root


def test_dry_run_json_lists_the_actions_apply_runs_in_order(tmp_path):
    _, repo, target = backed_up_pc(tmp_path, 160 * MiB)
    plan = lifeboat("restore", "latest", target, "--repo", repo, "--dry-run", "--json", json_out=True).data["plan"]
    kinds = [a["action"] for a in plan["actions"]]
    assert kinds[:2] == ["prove", "prepare"]
    assert kinds.count("write-partition") == 4
    assert kinds[-1] == "write-table"           # an image file gets no UEFI boot entry
    assert kinds.index("resize-filesystem") < kinds.index("write-table")
    assert all(a["text"] and str(target) not in a["text"] for a in plan["actions"])
    grow = next(a for a in plan["actions"] if a["action"] == "resize-filesystem")
    assert grow["new_size"] > grow["old_size"]
    assert target.stat().st_size == 160 * MiB and sha256(target) == sha256_of_zeros(160 * MiB)

    human = lifeboat("restore", "latest", target, "--repo", repo, "--dry-run").stdout
    for a in plan["actions"]:
        assert a["text"] in human


def sha256_of_zeros(n: int) -> str:
    h = hashlib.sha256()
    block = bytes(MiB)
    for _ in range(n // MiB):
        h.update(block)
    return h.hexdigest()


DISK = 480 * MiB     # the kill test's disk


def _restore_cmd(repo, target) -> list[str]:
    return [sys.executable, "-m", "recovery", "restore", "latest", str(target), "--repo", str(repo), "--yes",
            "--json"]


def test_killed_restore_is_never_taken_for_a_working_disk_and_resumes(tmp_path):
    """kill -9 at random points: each time the target is either marked as an incomplete restore
    (no partition table at all) or completely restored; the next run resumes and finishes."""
    # 400 MiB of incompressible files: a data phase long enough (0.1-0.8 s here) for the
    # watcher below to kill inside it on a loaded 2-core machine.
    tree = data_tree(tmp_path / "tree", 100, 4 * MiB, seed=11)
    root = fi.make_ext4(tmp_path / "root.img", 460 * MiB, tree)
    disk, _ = one_partition_disk(tmp_path, "pc", root, DISK)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "pc")
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, DISK)

    started = time.monotonic()
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    full = time.monotonic() - started
    expected = fi.ext_tree(target, *_part(target))
    allocated = os.stat(target).st_blocks * 512

    untouched = sha256_of_zeros(DISK)
    rng = random.Random(20261130)
    skipped_any = False
    for attempt in range(5):
        os.truncate(target, 0)            # a fresh disk each round: nothing of the last round helps
        os.truncate(target, DISK)
        kills = 0
        for k in range(3):                 # kill it up to three times in a row, then let it finish
            # The restore runs niced: on 2 busy cores the watcher below must still get the CPU
            # within the data phase (50-300 ms here), or its kill comes only after the table.
            # In a session of its own, so the kill stops it and every tool it runs at once, as a
            # crash or a power cut does. Killed alone, a tool it had started could go on writing:
            # once this test read the mark in sector 0 and then, a moment later, a GPT (sfdisk
            # writes the protective MBR over the mark last; without it no GPT is recognised).
            proc = subprocess.Popen(_restore_cmd(repo, target), cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(10),
                                    start_new_session=True)
            if (attempt + k) % 2:
                # Half the kills land while data is being written, whatever the machine's load
                # does to the timing: when a random share of the data has reached the (sparse)
                # target file.
                want = rng.uniform(0.05, 0.9) * allocated
                deadline = time.monotonic() + 60
                while os.stat(target).st_blocks * 512 < want and proc.poll() is None \
                        and time.monotonic() < deadline:
                    time.sleep(0.001)
            else:
                time.sleep(rng.uniform(0.05, full))
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            _detach_loops_over(target)
            mark = read_mark(str(target))
            layout = read_layout(str(target))
            if mark is not None:
                assert layout.table == "none", "a marked disk must carry no partition table"
                assert describe(str(target)).incomplete_restore.startswith("incomplete restore of pc")
            elif layout.table == "none":
                assert sha256(target) == untouched, "killed before the mark, yet something was written"
            else:
                # Killed only after the table went on: then everything else was already in place.
                assert layout.table == "gpt"
                assert fi.ext_tree(target, *_part(target)) == expected
        proc = subprocess.run(_restore_cmd(repo, target), cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        import json
        skipped_any |= kills > 0 and json.loads(proc.stdout)["bytes_skipped"] > 0
        assert read_mark(str(target)) is None
        start, size = _part(target)
        assert fi.fsck_clean("ext4", target, start, size)
        assert fi.ext_tree(target, start, size) == expected
    assert skipped_any, "no re-run resumed anything: every kill landed before the data"


def _detach_loops_over(image: Path) -> None:
    """A restore killed while it resized a filesystem leaves the loop device it used over this
    test's own image: detach it, so the test leaks no device."""
    if os.geteuid() != 0:
        return
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True)


def _part(target: Path) -> tuple[int, int]:
    p = read_layout(str(target)).partitions[0]
    return p.start, p.size


def backed_up_pc(tmp_path: Path, target_size: int | None = None):
    """The GPT test PC backed up as "pc", and a blank target image (of the PC's size unless
    `target_size`)."""
    pc = build_gpt_pc(tmp_path, _small_tree(tmp_path / "tree"))
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", pc.disk, "--repo", repo, "--name", "pc")
    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, target_size or pc.disk.stat().st_size)
    return pc, repo, target


def interrupted_restore(repo_dir: Path, target) -> None:
    """Start a real restore of the latest snapshot onto `target` and stop it at its first write."""
    from recovery.errors import Cancelled
    from recovery.events import CancelToken, Progress
    from recovery.jobs import RestoreJob, run_job

    token = CancelToken()

    def stop_at_first_write(event):
        if isinstance(event, Progress) and event.phase == "restore" and event.done:
            token.cancel()

    repo = Repository.open(repo_dir)
    try:
        run_job(RestoreJob(repo, "latest", str(target)), confirm=lambda plan: True, on_event=stop_at_first_write,
                cancel=token)
        raise AssertionError("the restore was not stopped")
    except Cancelled:
        pass
    finally:
        repo.close()


def test_whole_restore_of_the_gpt_pc_checks_every_file(tmp_path):
    pc, repo, target = backed_up_pc(tmp_path)
    result = lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--layout", "keep", "--json",
                      json_out=True).data
    assert result["status"] == "ok" and result["bytes_skipped"] == 0
    assert_restored(pc, target)
    assert read_mark(str(target)) is None


def test_salvage_restores_what_is_readable_and_names_the_files_hit(tmp_path):
    tree = data_tree(tmp_path / "tree", 6, MiB)
    root = fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree)
    disk, start = one_partition_disk(tmp_path, "pc", root, 24 * MiB)
    # Where each file's data lies, asked of the filesystem's own tool; damage the window in the
    # middle of f002.bin, which neighbouring files may share.
    def windows_of(name: str) -> set[int]:
        out = subprocess.run(["debugfs", "-R", f"blocks /{name}", str(root)], capture_output=True, text=True,
                             check=True).stdout.split()
        return {int(b) * 4096 // MiB for b in out}
    blocks = subprocess.run(["debugfs", "-R", "blocks /f002.bin", str(root)], capture_output=True, text=True,
                            check=True).stdout.split()
    window = int(blocks[len(blocks) // 2]) * 4096 // MiB
    hit_names = {name for name in fi.tree_hashes(tree) if window in windows_of(name)}
    assert "f002.bin" in hit_names
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo, "--format", "1")  # no parity: damage stays
    sid = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]
    damage_chunk(repo, sid, 1, window)

    target = tmp_path / "t.img"
    target.write_bytes(b"")
    os.truncate(target, 24 * MiB)
    refused = lifeboat("restore", "latest", target, "--repo", repo, "--yes", check=False)
    assert refused.returncode == 6 and "--salvage" in refused.stderr
    proc = lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--salvage", "--json", check=False)
    assert proc.returncode == 9, proc.stderr
    import json
    result = json.loads(proc.stdout)
    assert result["status"] == "partial"
    hit = result["damaged"]["1"]
    assert sorted(hit["files"]) == sorted(f"/{n}" for n in hit_names)
    assert hit["ranges"] and all(window * MiB <= o < (window + 1) * MiB for o, _ in hit["ranges"])
    # Every other file came back whole; the filesystem itself is intact.
    p = read_layout(str(target)).partitions[0]
    restored = fi.ext_tree(target, p.start, p.size)
    expected = fi.tree_hashes(tree)
    assert {k: v for k, v in restored.items() if k not in hit_names} == \
        {k: v for k, v in expected.items() if k not in hit_names}
    assert all(restored[n] != expected[n] for n in hit_names)
    assert fi.fsck_clean("ext4", target, p.start, p.size)
    human = lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--salvage", check=False)
    assert "damaged file /f002.bin" in human.stdout and human.returncode == 9


def test_a_disk_left_by_an_interrupted_restore_is_not_backed_up(tmp_path):
    """Its mark says there is nothing usable on it: a backup would store a half-written disk."""
    _, repo_dir, target = backed_up_pc(tmp_path)
    interrupted_restore(repo_dir, target)
    assert read_mark(str(target)) is not None
    proc = lifeboat("backup", target, "--repo", repo_dir, check=False)
    line = one_line_error(proc, 4)
    assert "incomplete restore of pc" in line


def test_on_a_terminal_restore_asks_for_the_targets_name_before_anything_is_written(tmp_path):
    """As a person at a terminal: the plan, then the question, with no progress bar drawn over
    it; a wrong name writes nothing (exit 130), the right one restores."""
    import pexpect

    pc, repo, target = backed_up_pc(tmp_path)
    before = sha256(target)
    cmd = [sys.executable, "-m", "recovery", "restore", "latest", str(target), "--repo", str(repo)]

    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(ROOT), encoding="utf-8", timeout=60, dimensions=(25, 80))
    child.expect(r"Steps:")
    child.expect(r"Type the target's name \(t\.img\) to erase it and restore: ")
    child.sendline("sda")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 and "does not match" in child.before
    assert sha256(target) == before

    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(ROOT), encoding="utf-8", timeout=60, dimensions=(25, 80))
    child.expect(r"Type the target's name \(t\.img\) to erase it and restore: ")
    assert "\x1b[2K" not in child.before, "a progress display drew over the question"
    child.sendline("t.img")
    child.expect(r"restored snapshot [0-9a-f]{8} onto ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert_restored(pc, target)
