"""The CLI's basic promises: `repo init` makes one folder in a place that keeps data, errors
are one line (and JSON on stdout with --json), and Ctrl-C during a backup leaves a repository
that the same backup resumes, counting what it reused apart from what deduplication saved."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.probe.mounts import overlay_in_memory, parse_mountinfo, ram_backed
from tests import fsimages as fi
from tests.conftest import require
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat
from tests.integration.test_repository_safety import one_line_error

@pytest.fixture
def _as_root():
    require(os.geteuid() == 0, "mounting needs root")


as_root = pytest.mark.usefixtures("_as_root")


@contextlib.contextmanager
def mounted(*mount_args: str, where: Path):
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *mount_args, str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


@contextlib.contextmanager
def ram_folder(tmp_path: Path):
    """A folder on a tmpfs this test made: its own mount when root, else one in /dev/shm."""
    if os.geteuid() == 0:
        with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", where=tmp_path / "ram") as where:
            yield where
        return
    require(ram_backed("/dev/shm"), "needs root, or a tmpfs at /dev/shm")
    where = Path("/dev/shm") / f"lifeboat-test-{os.getpid()}-{tmp_path.name}"
    where.mkdir()
    try:
        yield where
    finally:
        subprocess.run(["rm", "-rf", str(where)], check=False)


# ------------------------------------------------------------------------------ repo init
def test_repo_init_never_makes_missing_parents(tmp_path):
    proc = lifeboat("repo", "init", tmp_path / "no" / "such" / "repo", check=False)
    line = one_line_error(proc, 5)
    assert str(tmp_path / "no" / "such") in line and "does not exist" in line
    assert not (tmp_path / "no").exists()


def test_repo_init_makes_exactly_one_folder(tmp_path):
    lifeboat("repo", "init", tmp_path / "repo")
    assert (tmp_path / "repo" / "lifeboat-repo.json").is_file()
    (tmp_path / "empty").mkdir()
    lifeboat("repo", "init", tmp_path / "empty")          # an existing empty folder is fine
    assert (tmp_path / "empty" / "lifeboat-repo.json").is_file()


def test_repo_init_refuses_tmpfs_unless_forced(tmp_path):
    with ram_folder(tmp_path) as ram:
        proc = lifeboat("repo", "init", ram / "repo", check=False)
        line = one_line_error(proc, 4)
        assert "tmpfs" in line and "power-off" in line and "--force" in line
        assert not (ram / "repo").exists()
        # An existing empty folder on it is refused the same way.
        (ram / "empty").mkdir()
        assert lifeboat("repo", "init", ram / "empty", check=False).returncode == 4
        assert list((ram / "empty").iterdir()) == []

        lifeboat("repo", "init", ram / "repo", "--force")
        assert (ram / "repo" / "lifeboat-repo.json").is_file()
        lifeboat("snapshots", "--repo", ram / "repo")


@as_root
def test_repo_init_refuses_read_only_filesystem(tmp_path):
    (tmp_path / "data").mkdir()
    with mounted("--bind", str(tmp_path / "data"), where=tmp_path / "ro") as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        proc = lifeboat("repo", "init", ro / "repo", check=False)
        line = one_line_error(proc, 4)
        assert "read-only" in line and "--force" in line
        assert not (tmp_path / "data" / "repo").exists()


@as_root
def test_repo_init_refuses_an_overlay_kept_in_memory(tmp_path):
    """The live system's root: an overlay whose upper layer is a tmpfs."""
    with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", where=tmp_path / "rw") as rw:
        (rw / "upper").mkdir()
        (rw / "work").mkdir()
        (tmp_path / "lower").mkdir()
        opts = f"lowerdir={tmp_path / 'lower'},upperdir={rw / 'upper'},workdir={rw / 'work'}"
        with mounted("-t", "overlay", "-o", opts, "overlay", where=tmp_path / "root") as root:
            line = one_line_error(lifeboat("repo", "init", root / "repo", check=False), 4)
            assert "overlay" in line and "tmpfs" in line and "--force" in line


def test_overlay_whose_tmpfs_was_moved_is_still_seen_in_memory(tmp_path):
    """After switch_root the overlay's options still name its upper layer /rw/upper, while
    that tmpfs now sits at /run/lifeboat/rw (mountinfo of the live system)."""
    text = (
        "30 1 0:30 / / rw,relatime - overlay overlay rw,lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work\n"
        "31 30 0:31 / /run rw,nosuid,nodev - tmpfs run rw,mode=755\n"
        "32 31 0:29 / /run/lifeboat/rw rw,relatime - tmpfs rw rw,mode=755\n"
    )
    mounts = parse_mountinfo(text)
    root = next(m for m in mounts if m.target == "/")
    assert "upperdir=/rw/upper" in root.options
    assert overlay_in_memory(root, mounts) == "an overlay at / kept on tmpfs at /run/lifeboat/rw"


# ------------------------------------------------------------------------------ --json errors
def test_json_errors_go_to_stdout_too(tmp_path):
    cases = [
        (("snapshots", "--repo", tmp_path / "missing", "--json"), 5),
        (("verify", "--repo", tmp_path / "missing", "--json"), 5),
        (("repo", "init", tmp_path / "a" / "b", "--json"), 5),
    ]
    lifeboat("repo", "init", tmp_path / "repo")
    cases.append((("backup", tmp_path / "no-such.img", "--repo", tmp_path / "repo", "--json"), 3))
    for args, code in cases:
        proc = lifeboat(*args, check=False)
        line = one_line_error(proc, code)
        data = json.loads(proc.stdout)
        assert data == {"error": line.removeprefix("lifeboat: "), "code": code}


def test_without_json_stdout_stays_empty_on_error(tmp_path):
    proc = lifeboat("snapshots", "--repo", tmp_path / "missing", check=False)
    assert proc.returncode == 5 and proc.stdout == ""


# ------------------------------------------------------------------------------ Ctrl-C
def slow_disk(tmp_path: Path) -> Path:
    """An ext4 disk whose data is unique and compressible text: at zstd level 17 on one thread
    a backup takes about five seconds (some 45 packs of 1 MiB), so Ctrl-C lands in the middle of it."""
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(11)
    (tree / "letters.txt").write_bytes(base64.b64encode(rng.randbytes(64 * MiB)))
    return fi.make_ext4(tmp_path / "pc.img", 112 * MiB, tree, garbage=False)


def pack_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "packs").glob("*/*.pack"))


def test_ctrl_c_during_backup_then_the_same_backup_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(MiB))
    disk = slow_disk(tmp_path)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    args = ["backup", str(disk), "--repo", str(repo), "--threads", "1", "--zstd-level", "17"]
    proc = subprocess.Popen([sys.executable, "-m", "recovery", *args, "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((repo / "packs").glob("*/*.pack"))) < 24 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the backup ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "intact" in lines[0] and "run the same backup again" in lines[0], lines[0]
    assert json.loads(out)["code"] == 130
    assert not (repo / "lock").exists()
    assert lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"] == []
    interrupted = pack_bytes(repo)
    assert interrupted >= 24 * MiB

    again = lifeboat(*args, "--json", json_out=True).data
    # Everything the interrupted run had sealed is reused, and counted as reused.
    assert interrupted * 0.95 <= again["bytes_resumed"] <= interrupted
    assert again["bytes_stored_new"] + again["bytes_resumed"] <= pack_bytes(repo)
    assert again["bytes_stored_new"] < pack_bytes(repo) - interrupted + MiB
    assert again["bytes_stored_new"] < again["bytes_resumed"]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]

    # Once a snapshot exists, nothing is "resumed" any more: an unchanged disk deduplicates.
    third = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data
    assert third["bytes_resumed"] == 0 and third["bytes_stored_new"] < MiB
    human = lifeboat("backup", disk, "--repo", repo).stdout
    assert "saved by compression and deduplication" in human and "reused from" not in human


def test_resumed_backup_says_what_it_reused(tmp_path, monkeypatch):
    """The human summary of a resumed backup names the reused part, and the saving excludes it."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(MiB))
    disk = slow_disk(tmp_path)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    args = ["backup", str(disk), "--repo", str(repo), "--threads", "1", "--zstd-level", "17"]
    proc = subprocess.Popen([sys.executable, "-m", "recovery", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((repo / "packs").glob("*/*.pack"))) < 8 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the backup ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    human = lifeboat(*args).stdout
    assert "reused from the interrupted backup" in human, human
