"""The README's command-line promises that no other test holds: usage errors exit 2 for every
verb, restore's refusals of a target inside its repository, LIFEBOAT_REPO, snapshots --name,
backup --no-verify and --zstd-level, --layout proportional, and Ctrl-C during a restore on a
terminal — each through the real CLI, as a person would type it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from recovery.probe.restore_mark import read_mark
from recovery.probe.table import read_layout
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_repository_safety import data_tree, one_line_error, one_partition_disk


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def blank(path: Path, size: int) -> Path:
    path.write_bytes(b"")
    os.truncate(path, size)
    return path


def text_tree(root: Path, seed: int) -> Path:
    """Compressible but not trivially so: zstd's levels give clearly different sizes."""
    import random

    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(3000)]
    root.mkdir(parents=True)
    for i in range(6):
        (root / f"doc{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(180_000)))
    return root


@pytest.fixture(scope="module")
def saved_pc(tmp_path_factory):
    """The GPT test PC (ESP, ext4, NTFS, swap) backed up once as "pc"; tests only read it."""
    work = tmp_path_factory.mktemp("saved-pc")
    tree = work / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "letter.txt").write_text("Dear Ann,\n" * 300)
    (tree / "photo.jpg").write_bytes(os.urandom(200_000))
    pc = build_gpt_pc(work, tree)
    repo = work / "repo"
    lifeboat("repo", "init", repo)
    sid = lifeboat("backup", pc.disk, "--repo", repo, "--name", "pc", "--json", json_out=True).data["snapshot"]
    return pc, repo, sid


# ------------------------------------------------------------------------------ exit 2
@pytest.mark.parametrize("args", [
    ("backup", "{disk}"),                                               # no --repo, no LIFEBOAT_REPO
    ("restore", "latest", "{target}", "--repo", "{repo}", "--layout", "sideways"),
    ("restore", "latest", "{target}", "--repo", "{repo}", "--zstd-level", "3"),   # a backup option
    ("verify", "--repo"),
    ("snapshots", "--repo", "{repo}", "--bogus"),
    ("repo", "list"),
    ("repo", "init"),
    ("write-usb", "{target}", "--data", "btrfs"),
], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2_and_write_nothing(saved_pc, tmp_path, args):
    pc, repo, _ = saved_pc
    target = blank(tmp_path / "t.img", 8 * MiB)
    before_repo = sorted(p.name for p in repo.rglob("*"))
    argv = [a.format(disk=pc.disk, target=target, repo=repo) for a in args]
    proc = lifeboat(*argv, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("lifeboat"), proc.stderr
    assert "error:" in proc.stderr
    assert target.read_bytes() == bytes(8 * MiB)
    assert sorted(p.name for p in repo.rglob("*")) == before_repo


def test_repo_without_action_is_one_usage_line(tmp_path):
    assert one_line_error(lifeboat("repo", check=False), 2) == \
           "lifeboat: usage: lifeboat repo init PATH | lifeboat repo upgrade --repo R"


def test_write_usb_bad_images_exit_2_one_line(tmp_path):
    stick = blank(tmp_path / "stick.img", 64 * MiB)
    line = one_line_error(lifeboat("write-usb", tmp_path / "none.iso", stick, "--yes", check=False), 2)
    assert "does not exist" in line
    not_iso = tmp_path / "notes.iso"
    not_iso.write_text("hello\n" * 1000)
    line = one_line_error(lifeboat("write-usb", not_iso, stick, "--yes", check=False), 2)
    assert "not an ISO image" in line
    assert stick.read_bytes() == bytes(64 * MiB)            # nothing written


# ------------------------------------------------------------------------------ restore refusals (exit 4)
def test_restore_refuses_a_target_image_inside_its_repository(saved_pc, tmp_path):
    pc, repo, _ = saved_pc
    inside = repo / "t.img"
    shutil.copyfile(pc.disk, inside)
    try:
        before = sha256(inside)
        line = one_line_error(lifeboat("restore", "latest", inside, "--repo", repo, "--yes", check=False), 4)
        assert "inside the backup being restored from" in line and "choose another disk" in line
        assert sha256(inside) == before
    finally:
        inside.unlink()


# ------------------------------------------------------------------------------ LIFEBOAT_REPO, --name
def test_lifeboat_repo_stands_in_for_repo_and_repo_wins(saved_pc, tmp_path, monkeypatch):
    pc, repo, sid = saved_pc
    monkeypatch.setenv("LIFEBOAT_REPO", str(repo))
    assert [s["id"] for s in lifeboat("snapshots", "--json", json_out=True).data["snapshots"]] == [sid]
    assert lifeboat("verify", "--json", json_out=True).data["ok"]
    target = blank(tmp_path / "t.img", pc.disk.stat().st_size)
    plan = lifeboat("restore", "latest", target, "--dry-run", "--json", json_out=True).data
    assert plan["dry_run"] and plan["plan"]
    assert target.read_bytes() == bytes(pc.disk.stat().st_size)
    # --repo given on the command line wins over the variable.
    monkeypatch.setenv("LIFEBOAT_REPO", str(tmp_path / "elsewhere"))
    assert [s["id"] for s in lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]] == [sid]
    line = one_line_error(lifeboat("snapshots", check=False), 5)
    assert str(tmp_path / "elsewhere") in line


def test_snapshots_name_lists_only_that_machine(tmp_path):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    ids = {}
    for name, seed in (("alpha", 1), ("beta", 2)):
        tree = data_tree(tmp_path / f"tree-{name}", 2, MiB, seed=seed)
        disk, _ = one_partition_disk(tmp_path, name, fi.make_ext4(tmp_path / f"{name}.ext4", 16 * MiB, tree), 24 * MiB)
        ids[name] = [lifeboat("backup", disk, "--repo", repo, "--name", name, "--json", json_out=True).data["snapshot"]
                     for _ in range(2 if name == "alpha" else 1)]
    alpha = lifeboat("snapshots", "--repo", repo, "--name", "alpha", "--json", json_out=True).data["snapshots"]
    assert sorted(s["id"] for s in alpha) == sorted(ids["alpha"]) and {s["name"] for s in alpha} == {"alpha"}
    beta = lifeboat("snapshots", "--repo", repo, "--name", "beta").stdout.splitlines()
    assert len(beta) == 1 and ids["beta"][0][:8] in beta[0] and "beta" in beta[0]
    assert lifeboat("snapshots", "--repo", repo, "--name", "gamma").stdout.strip() == "no snapshots"
    assert len(lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]) == 3


# ------------------------------------------------------------------------------ backup options
def test_no_verify_leaves_the_snapshot_unverified_and_verify_then_marks_it(tmp_path):
    tree = data_tree(tmp_path / "tree", 3, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.ext4", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    checked = lifeboat("backup", disk, "--repo", repo, "--name", "checked", "--json", json_out=True).data["snapshot"]
    quick = lifeboat("backup", disk, "--repo", repo, "--name", "quick", "--no-verify", "--json",
                     json_out=True).data["snapshot"]
    marks = {s["id"]: s["verified"] for s in lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]}
    assert marks[checked] and not marks[quick], marks
    assert lifeboat("verify", "--repo", repo, quick, "--json", json_out=True).data["ok"]
    marks = {s["id"]: s["verified"] for s in lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]}
    assert marks[quick], marks


def test_zstd_level_changes_the_stored_size_not_the_data(tmp_path):
    tree = text_tree(tmp_path / "tree", seed=4)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.ext4", 32 * MiB, tree, garbage=False),
                                 40 * MiB)
    stored = {}
    for level in ("1", "19"):
        repo = tmp_path / f"repo{level}"
        lifeboat("repo", "init", repo)
        data = lifeboat("backup", disk, "--repo", repo, "--zstd-level", level, "--json", json_out=True).data
        stored[level] = sum(p.stat().st_size for p in (repo / "packs").glob("*/*.pack"))
        assert data["bytes_stored_new"] > 0
        target = blank(tmp_path / f"t{level}.img", 40 * MiB)
        lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes")
        p = read_layout(str(target)).partitions[0]
        assert fi.ext_tree(target, p.start, p.size) == fi.tree_hashes(tree)
    # Level 19 packs this text clearly tighter than level 1.
    assert stored["19"] < stored["1"] * 0.9, stored
    # Same data in, same disk out: the two restores are byte for byte the same.
    assert sha256(tmp_path / "t1.img") == sha256(tmp_path / "t19.img")


# ------------------------------------------------------------------------------ --layout proportional
@pytest.mark.loop          # growing the filesystems goes through loop devices
def test_layout_proportional_scales_the_partitions_through_the_cli(saved_pc, tmp_path):
    pc, repo, _ = saved_pc
    size = pc.disk.stat().st_size
    target = blank(tmp_path / "big.img", 2 * size)
    lifeboat("restore", "latest", target, "--repo", repo, "--layout", "proportional", "--yes")
    old = {p.number: p for p in pc.layout.partitions}
    new = {p.number: p for p in read_layout(str(target)).partitions}
    assert sorted(new) == sorted(old)
    assert new[1].size == old[1].size                       # the ESP keeps its size
    for n in (2, 3, 4):                                      # ext4, NTFS and swap grow with the disk
        assert new[n].size > 1.6 * old[n].size, (n, old[n].size, new[n].size)
    assert_restored(pc, target)
    # proportional differs from grow, which gives all the room to the largest data partition.
    grown = blank(tmp_path / "grow.img", 2 * size)
    lifeboat("restore", "latest", grown, "--repo", repo, "--layout", "grow", "--yes")
    assert [p.size for p in read_layout(str(grown)).partitions] != [new[n].size for n in sorted(new)]


# ------------------------------------------------------------------------------ Ctrl-C on a terminal
def _restore_on_a_terminal(repo: Path, target: Path):
    import pexpect

    cmd = [sys.executable, "-m", "recovery", "restore", "latest", str(target), "--repo", str(repo), "--layout", "keep"]
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(ROOT), encoding="utf-8", timeout=120, dimensions=(25, 80),
                          env=dict(os.environ))
    child.expect(rf"Type the target's name \({re.escape(target.name)}\) to erase it and restore: ")
    return child


def _waiting_for_the_answer(child, seconds: float = 60) -> None:
    """Until the CLI's main thread sits in read(2) on the terminal. The prompt is written just
    before that read; a Ctrl-C landing in between runs Python's C-level handler at once, but its
    KeyboardInterrupt only at the next check, which a blocked read never reaches. A person does
    not press keys within microseconds of a prompt; on a loaded machine this test did, once: the
    restore logged "cancelled" only half an hour later, when pexpect closed it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/syscall") as f:
            if f.read().split(" ", 1)[0] in ("0", "7", "23", "270", "271"):   # x86-64: read, poll,
                return                                                         # select, pselect6, ppoll
        time.sleep(0.01)
    raise AssertionError("the restore never waited for its answer")


def _ended(child) -> str:
    import pexpect

    child.expect(pexpect.EOF)
    child.close()
    out = child.before
    assert child.exitstatus == 130, out
    assert "Traceback" not in out
    return out


def test_ctrl_c_at_the_question_writes_nothing_and_says_so(saved_pc, tmp_path):
    pc, repo, _ = saved_pc
    target = blank(tmp_path / "t.img", pc.disk.stat().st_size)
    child = _restore_on_a_terminal(repo, target)
    _waiting_for_the_answer(child)
    child.sendintr()
    assert "lifeboat: cancelled: nothing was written" in _ended(child)
    assert target.read_bytes() == bytes(pc.disk.stat().st_size)


def test_ctrl_c_while_a_restore_writes_leaves_the_mark_and_the_rerun_finishes(saved_pc, tmp_path):
    """Typed confirmation, then Ctrl-C once partition data is being written (onto a slow disk,
    as a cheap USB stick is): exit 130 with the one line saying the target is marked, `disks`
    sees the mark, and the same restore run again completes it."""
    from tests.integration.faulty_disk import faulty_disk

    pc, repo, _ = saved_pc
    image = blank(tmp_path / "backing.img", pc.disk.stat().st_size)
    with faulty_disk(image, tmp_path / "mnt", "--write-mibps", "8") as target:
        child = _restore_on_a_terminal(repo, target)
        child.sendline(target.name)
        child.expect(r"restore part \d")
        child.sendintr()
        out = _ended(child)
        assert "lifeboat: cancelled: the target is marked as an incomplete restore" in out, out
        assert "restored snapshot" not in out
    mark = read_mark(str(image))
    assert mark is not None and mark.name == "pc"
    lifeboat("restore", "latest", image, "--repo", repo, "--layout", "keep", "--yes")
    assert read_mark(str(image)) is None
    assert_restored(pc, image)
