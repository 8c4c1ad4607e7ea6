"""Many PCs, one repository: backups at once into one folder, deduplicating across machines;
the exclusive lock only for deleting operations; expired and stale locks removed and
reported, a live holder's never."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.errors import RepositoryError
from recovery.repo.lock import Lock
from recovery.repo.repository import Repository
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat
from tests.integration.test_repository_safety import data_tree, one_partition_disk


def office(tmp_path, count=3, shared_mib=12):
    """`count` PCs installed from one image: `shared_mib` MiB in common, 2 MiB each of their own."""
    shared = data_tree(tmp_path / "shared", shared_mib, MiB, seed=11)
    disks = []
    for i in range(count):
        tree = tmp_path / f"tree{i}"
        subprocess.run(["cp", "-a", str(shared), str(tree)], check=True)
        (tree / "own.bin").write_bytes(os.urandom(2 * MiB))
        ext = fi.make_ext4(tmp_path / f"p{i}.img", (shared_mib + 20) * MiB, tree, garbage=False)
        disks.append(one_partition_disk(tmp_path, f"pc{i}", ext, (shared_mib + 28) * MiB)[0])
    return disks


def backups_at_once(disks, repo, env=None) -> tuple[list[dict], int]:
    """Back the PCs up at the same time, the first at normal priority and the others niced (so
    the first is ahead, as one machine always is); returns their results and how many shared
    locks were seen at once. Each learns the packs the others seal every 0.1 s. In a folder,
    the others start once the first has sealed a few packs (a test run itself niced to the
    bottom, nice 19, leaves no priority to give, and the first would not be ahead), and the first
    is paused until they hold their shared locks, so all three hold the repository at once."""
    env = {**os.environ, "LIFEBOAT_INDEX_REFRESH": "0.1", "LIFEBOAT_PACK_SIZE": str(MiB), **(env or {})}

    def start(i, d):
        return subprocess.Popen([*([] if i == 0 else ["nice", "-n", "15"]), sys.executable, "-m", "recovery",
                                 "backup", str(d), "--repo", str(repo), "--name", f"pc{i}", "--json"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    procs = [start(0, disks[0])]
    packs = Path(str(repo)) / "packs"
    where = Path(str(repo)) / "lock"

    def locks() -> int:
        try:
            return len(list(where.glob("*.json")))
        except FileNotFoundError:
            return 0        # no lock held now (the folder goes with the last one), or not a folder repository

    deadline = time.monotonic() + 60
    while packs.is_dir() and procs[0].poll() is None and time.monotonic() < deadline \
            and len(list(packs.glob("*/*.pack"))) < 3:
        time.sleep(0.01)
    seen = 0
    if packs.is_dir() and procs[0].poll() is None:
        # On a loaded machine the niced others took their locks after the first had ended (seen
        # in CI): the first waits, lock held, until they hold theirs, then goes on ahead of them.
        procs[0].send_signal(signal.SIGSTOP)
        try:
            procs += [start(i, d) for i, d in enumerate(disks) if i]
            deadline = time.monotonic() + 120
            while (seen := locks()) < len(procs) and time.monotonic() < deadline \
                    and all(p.poll() is None for p in procs[1:]):
                time.sleep(0.01)
        finally:
            procs[0].send_signal(signal.SIGCONT)
    else:
        procs += [start(i, d) for i, d in enumerate(disks) if i]
    while any(p.poll() is None for p in procs):
        seen = max(seen, locks())
        time.sleep(0.01)
    results = []
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results, seen


def test_three_backups_into_one_folder_at_once_deduplicate(tmp_path):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    disks = office(tmp_path, shared_mib=24)
    results, seen_shared = backups_at_once(disks, repo)
    assert seen_shared == 3                     # they really held the repository at the same time
    stored = sum(r["bytes_stored_new"] for r in results)
    assert sum(r["bytes_used"] for r in results) > 3 * 26 * MiB
    # The 24 MiB they share is not stored three times: a running backup picks up the packs the
    # others have sealed (every LIFEBOAT_INDEX_REFRESH s), so only what they wrote in the same
    # moments is stored twice. How much that is depends on the machine's load (seen: under 2 x,
    # and 2.1 x on a machine running other test suites beside it).
    assert stored < 2.5 * 24 * MiB, stored
    assert not (repo / "lock").exists()         # every shared lock released
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    for i, disk in enumerate(disks):
        target = tmp_path / f"t{i}.img"
        target.write_bytes(b"")
        os.truncate(target, 52 * MiB)
        lifeboat("restore", "latest", target, "--repo", repo, "--name", f"pc{i}", "--yes")
        r = Repository.open(repo)
        start = r.load_manifest(r.resolve("latest", name=f"pc{i}")).partitions[0].start
        assert fi.ext_tree(target, start, 44 * MiB) == fi.ext_tree(tmp_path / f"p{i}.img")


def hold(repo, exclusive: bool, seconds: float, ttl: float = 600) -> subprocess.Popen:
    """Another process holding a lock on `repo` until killed or `seconds` pass."""
    code = (f"import time, sys; from recovery.repo.lock import Lock; from recovery.storage.local import LocalStorage\n"
            f"lock = Lock(LocalStorage({str(repo)!r}), exclusive={exclusive}, ttl={ttl}); lock.acquire()\n"
            f"print('held', flush=True); time.sleep({seconds}); lock.release()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_only_deleting_operations_are_exclusive(tmp_path):
    repo = Repository.init(tmp_path / "r")
    backup = hold(repo.path, exclusive=False, seconds=30)
    try:
        with Lock(repo.storage):                 # a second backup: fine
            pass
        with pytest.raises(RepositoryError, match=r"backups or restores are running \(backup by process"):
            Lock(repo.storage, exclusive=True).acquire()
        assert not (repo.path / "lock").is_file()         # the refused one left nothing behind
    finally:
        backup.kill()
        backup.wait()
    # The killed backup's lock names a process of this host that is gone: stale.
    deleting = Lock(repo.storage, exclusive=True)
    deleting.acquire()
    try:
        assert any("no longer running" in line for line in deleting.broken)
        with pytest.raises(RepositoryError, match="busy"):
            Lock(repo.storage).acquire()
    finally:
        deleting.release()
    assert not (repo.path / "lock").exists()


def test_a_lock_expires_unless_its_holder_lives(tmp_path, monkeypatch):
    repo = Repository.init(tmp_path / "r")
    # A writer on another machine that crashed (or lost the network) an hour ago.
    (repo.path / "lock").write_text(json.dumps({"host": "pc-in-room-2", "pid": 4242, "mode": "exclusive",
                                                "since": time.time() - 7200, "expires": time.time() - 3600}))
    lock = Lock(repo.storage)
    lock.acquire()
    assert lock.broken and "pc-in-room-2" in lock.broken[0] and "expired" in lock.broken[0]
    lock.release()
    # A live holder elsewhere whose lock has not expired is never broken.
    (repo.path / "lock").write_text(json.dumps({"host": "pc-in-room-3", "pid": 4242, "mode": "exclusive",
                                                "since": time.time(), "expires": time.time() + 600}))
    with pytest.raises(RepositoryError, match="pc-in-room-3"):
        Lock(repo.storage).acquire()
    (repo.path / "lock").unlink()
    # A holder that lives keeps refreshing its lock: never stale, even well past its lifetime.
    holder = hold(repo.path, exclusive=True, seconds=30, ttl=1.5)
    try:
        time.sleep(4)
        content = json.loads((repo.path / "lock").read_text())
        assert content["expires"] > time.time()
        with pytest.raises(RepositoryError, match="busy"):
            Lock(repo.storage).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_backup_reports_the_stale_lock_it_removed(tmp_path):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    (repo / "lock").mkdir()
    (repo / "lock" / "gone.json").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7,
                                                         "mode": "shared", "since": 0, "expires": 0}))
    disk = office(tmp_path, 1)[0]
    out = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data
    assert any("removed a stale repository lock" in w for w in out["warnings"])
    assert not (repo / "lock").exists()
