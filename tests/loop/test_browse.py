"""Getting files back from a snapshot without restoring it, through the real CLI: `mount`
(each partition an image, each filesystem mounted read-only beneath it), `umount`, `ls` and
`get`, on a backed-up PC holding FAT32, ext4 and a Windows profile on NTFS. Every file copied
out is compared, byte for byte, with what the filesystem held before the backup.
"""

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

from recovery.probe.mounts import current_mounts
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import Repository
from tests import browse_pc
from tests import fsimages as fi
from tests.conftest import run
from tests.integration.engine_fixtures import ROOT, lifeboat
from tests.own_mounts import views

pytestmark = pytest.mark.loop
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def pc(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    return browse_pc.build(tmp_path_factory.mktemp("browse"))


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def folded(tree: dict) -> dict:
    """FAT keeps 8.3 names in upper case with a lower-case flag that fusefat does not read."""
    return {k.casefold(): v for k, v in tree.items()}


# ----------------------------------------------------------------------------- ls


def test_ls_lists_partitions_and_folders_first(pc):
    out = lifeboat("ls", "latest", "--repo", pc.repo, "--json", json_out=True).data
    parts = {p["number"]: p for p in out["partitions"]}
    assert [parts[n]["fs"] for n in (1, 2, 3, 4)] == ["vfat", "ext4", "ntfs", "swap"]
    assert parts[3]["label"] == "Windows" and parts[3]["description"] == "Windows (C:) NTFS 64.0 MiB"
    # C: is the NTFS partition holding Windows/System32; no other letter is guessed.
    assert {n: p["drive_letter"] for n, p in parts.items()} == {1: None, 2: None, 3: "C:", 4: None, 5: None}
    listing = lifeboat("ls", "latest", "--repo", pc.repo).stdout.splitlines()
    assert [line.split()[-2:] for line in listing if line.split()[:1] == ["3"]] == [["Windows", "(C:)"]]
    assert [parts[n]["browsable"] for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert parts[5]["fs"] == "exfat" and parts[5]["browsable"]

    docs = lifeboat("ls", "latest", "3:/Users/Ann", "--repo", pc.repo, "--json", json_out=True).data
    kinds = [(e["type"], e["name"]) for e in docs["entries"]]
    assert kinds[:7] == [("dir", d) for d in ("AppData", "Desktop", "Documents", "Downloads", "Music",
                                              "Pictures")] + [("file", "NTUSER.DAT")]
    assert next(e for e in docs["entries"] if e["name"] == "NTUSER.DAT")["size"] == 262_144

    text = lifeboat("ls", "latest", f"2:/{browse_pc.DEEP}", "--repo", pc.repo).stdout
    assert text.rstrip().endswith("bottom.txt") and "18 B" in text
    assert views() == []       # ls let its private mount go


@pytest.mark.parametrize("args, code, words", [
    (["9:/"], 10, "has no partition '9'"),
    (["3:/Users/Bob"], 10, "3:/Users/Bob is not in the snapshot"),
    (["4:/"], 4, "holds swap, which Lifeboat cannot browse"),
    (["/Users"], 2, "name a partition first"),
])
def test_ls_refusals_are_one_line_each(pc, args, code, words):
    proc = lifeboat("ls", "latest", *args, "--repo", pc.repo, check=False)
    assert proc.returncode == code
    assert words in one_line(proc)


# ----------------------------------------------------------------------------- get


@pytest.mark.parametrize("number", [1, 2, 3, 5])
def test_get_copies_a_whole_filesystem_byte_for_byte(pc, tmp_path, number):
    dest = tmp_path / "out"
    proc = lifeboat("get", "latest", f"{number}:/", dest, "--repo", pc.repo, "--json", json_out=True)
    copied = dest / f"p{number}"
    got = fi.tree_hashes(copied)
    want = dict(pc.expected[number])
    renamed = {r["from"].lstrip("/"): r["to"] for r in proc.data["renamed"]}
    if number == 3:
        # The 400-byte name does not fit ext4 (255 bytes): renamed, listed, content intact.
        long_rel = f"Users/Ann/Documents/{browse_pc.LONG_NTFS_NAME}"
        assert list(renamed) == [long_rel]
        new = Path(renamed[long_rel])
        assert new.parent == copied / "Users/Ann/Documents" and len(new.name.encode()) <= 255
        assert new.name.endswith(".txt") and new.name.startswith("ééé")
        want[str(new.relative_to(copied))] = want.pop(long_rel)
    else:
        assert renamed == {}
    if number == 1:
        got, want = folded(got), folded(want)
        got = {k: v for k, v in got.items() if k != "esp"}    # fusefat shows the volume label as an entry
    assert got == want
    assert proc.data["unreadable"] == [] and proc.returncode == 0
    if number == 2:
        sparse = copied / "sparse-big.img"
        assert sparse.stat().st_size == 64 * MiB and sparse.stat().st_blocks * 512 <= 4 * MiB
    assert views() == []


def test_get_keeps_modification_times_and_hard_linked_content(pc, tmp_path):
    lifeboat("get", "latest", "2:/small", tmp_path, "--repo", pc.repo)
    src = next(p for p in (pc.images[2].parent / "linux-tree" / "small").iterdir())
    assert int((tmp_path / "small" / src.name).stat().st_mtime) == int(src.stat().st_mtime)
    # A hard link on NTFS comes out as a file of its own with the same content.
    lifeboat("get", "latest", "3:/Users/Ann/ntuser.dat.LOG1", tmp_path, "--repo", pc.repo)
    assert fi.tree_hashes(tmp_path)["ntuser.dat.LOG1"] == pc.expected[3]["Users/Ann/NTUSER.DAT"]


def test_get_onto_exfat_renames_what_it_cannot_hold(pc, tmp_path, loops):
    stick = tmp_path / "stick.img"
    with open(stick, "wb") as f:
        f.truncate(64 * MiB)
    run("mkfs.exfat", "-L", "STICK", stick)
    dev = loops.attach(stick)
    mnt = tmp_path / "stick"
    mnt.mkdir()
    run("mount.exfat-fuse", dev, mnt)
    try:
        proc = lifeboat("get", "latest", "3:/Users/Ann/Documents", mnt, "--repo", pc.repo, "--json",
                        json_out=True)
        renamed = {r["from"]: r["to"] for r in proc.data["renamed"]}
        assert renamed[f"/Users/Ann/Documents/{browse_pc.UNSAFE_NAME}"] == \
            str(mnt / "Documents" / "Taxes 2025_ final_.pdf")
        got = fi.tree_hashes(mnt / "Documents")
        assert got["Taxes 2025_ final_.pdf"] == pc.expected[3][f"Users/Ann/Documents/{browse_pc.UNSAFE_NAME}"]
        # NTFS-compressed files come out as their plain content.
        for name in ("ledger-0.csv", "ledger-4.csv"):
            assert got[f"Archive/{name}"] == pc.expected[3][f"{browse_pc.COMPRESSED_DIR}/{name}"]
        text = lifeboat("get", "latest", "3:/Users/Ann/Documents", mnt / "again", "--repo", pc.repo).stdout
        assert f"renamed: /Users/Ann/Documents/{browse_pc.UNSAFE_NAME} -> " in text
    finally:
        run("umount", mnt, check=False)


def test_get_refusals(pc, tmp_path):
    (tmp_path / "a-file").write_text("x")
    proc = lifeboat("get", "latest", "2:/readme.txt", tmp_path / "a-file", "--repo", pc.repo, check=False)
    assert proc.returncode == 4 and "is not a folder" in one_line(proc)
    proc = lifeboat("get", "latest", "2:/nothing-here", tmp_path, "--repo", pc.repo, "--json", check=False)
    assert proc.returncode == 10
    assert json.loads(proc.stdout) == {"error": "2:/nothing-here is not in the snapshot", "code": 10}
    assert views() == []


def _damage_window_under(repo_path: Path, number: int, offset: int) -> None:
    """Flip bytes in the stored chunk holding byte `offset` of partition `number`."""
    repo = Repository.open(repo_path)
    manifest = repo.load_manifest(repo.resolve("latest"))
    part = next(p for p in manifest.partitions if p.number == number)
    reader = PartitionReader(repo, part, manifest.chunk_size)
    w = offset // manifest.chunk_size
    bid = bytes(reader._table[w * 32:(w + 1) * 32])
    loc = repo.index.get(bid)
    from recovery.repo.packs import pack_path

    with open(pack_path(repo.path, loc.pack_id), "r+b") as f:
        f.seek(loc.offset + loc.stored_len // 2)
        old = f.read(16)
        f.seek(loc.offset + loc.stored_len // 2)
        f.write(bytes(b ^ 0xFF for b in old))
    # And its parity gone, so the damage stays (what verify --repair cannot fix).
    Path(f"{pack_path(repo.path, loc.pack_id)}.par").unlink(missing_ok=True)
    repo.close()


def test_damaged_chunk_under_one_file_lists_it_and_copies_the_rest(pc, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(pc.repo, repo)
    blocks = subprocess.run(["debugfs", "-c", "-R", "blocks /big.bin", str(pc.images[2])],
                            capture_output=True, text=True, check=True).stdout.split()
    _damage_window_under(repo, 2, int(blocks[len(blocks) // 2]) * 4096)
    dest = tmp_path / "out"
    proc = lifeboat("get", "latest", "2:/", dest, "--repo", repo, "--json", check=False, json_out=True)
    assert proc.returncode == 9
    assert [u["path"] for u in proc.data["unreadable"]] == ["/big.bin"]
    assert "Input/output error" in proc.data["unreadable"][0]["error"]
    got = fi.tree_hashes(dest / "p2")
    want = {k: v for k, v in pc.expected[2].items() if k != "big.bin"}
    assert got == want         # everything else, byte for byte; no half-copied big.bin
    text = lifeboat("get", "latest", "2:/", tmp_path / "again", "--repo", repo, check=False)
    assert "UNREADABLE: /big.bin: Input/output error" in text.stdout
    assert "1 file(s) could not be read; everything else was copied" in text.stdout


# ----------------------------------------------------------------------------- mount


def _start_mount(repo: Path, where: Path) -> subprocess.Popen:
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "mount", "latest", str(where), "--repo", str(repo)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("stop with"):
            proc.banner = "".join(lines)
            return proc
    raise AssertionError(f"mount ended: {''.join(lines)}")


def test_mount_shows_images_and_filesystems_until_umount(pc, tmp_path):
    where = tmp_path / "snap"
    proc = _start_mount(pc.repo, where)
    try:
        assert "p4.img: swap cannot be browsed" in proc.banner
        assert sorted(os.listdir(where)) == ["p1", "p1.img", "p2", "p2.img", "p3", "p3.img", "p4.img",
                                             "p5", "p5.img"]
        assert (where / "p3.img").stat().st_size == 64 * MiB
        assert fi.tree_hashes(where / "p2") == pc.expected[2]
        assert fi.tree_hashes(where / "p3") == pc.expected[3]
        assert fi.tree_hashes(where / "p5") == pc.expected[5]        # exFAT, imaged whole
        # The image is the saved partition: the filesystem tools read it as such.
        assert fi.ext_tree(where / "p2.img") == pc.expected[2]
        # Read-only all the way down.
        with pytest.raises(OSError):
            (where / "p2" / "new-file").write_text("no")
        with pytest.raises(OSError):
            open(where / "p2.img", "r+b")
        by_target = {m.target: m for m in current_mounts()}
        assert all(by_target[str(where / f"p{n}")].read_only for n in (1, 2, 3, 5))
        assert "norecovery" in by_target[str(where / "p2")].options or "noload" in by_target[str(where / "p2")].options

        # Refusals while it is mounted: busy, not empty, not a folder.
        busy = lifeboat("mount", "latest", where, "--repo", pc.repo, check=False)
        assert busy.returncode == 4 and "is busy" in one_line(busy)
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        full = lifeboat("mount", "latest", tmp_path / "full", "--repo", pc.repo, check=False)
        assert full.returncode == 4 and "is not empty" in one_line(full)
        notdir = lifeboat("mount", "latest", tmp_path / "full" / "x", "--repo", pc.repo, check=False)
        assert notdir.returncode == 4 and "is not a folder" in one_line(notdir)
        other = lifeboat("umount", tmp_path / "full", check=False)
        assert other.returncode == 4 and "is not a mounted Lifeboat snapshot" in one_line(other)

        lifeboat("umount", where)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert views() == [] and not any(m.target.startswith(str(where)) for m in current_mounts())
    assert not where.exists()       # the mount made the folder, and removed it again


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_mount_ctrl_c_unmounts_everything(pc, tmp_path, sig):
    where = tmp_path / "snap"
    where.mkdir()
    proc = _start_mount(pc.repo, where)
    assert os.path.ismount(where / "p2")
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 0
    assert not any(m.target.startswith(str(where)) for m in current_mounts())
    assert where.is_dir() and os.listdir(where) == []       # the person's own folder stays


def test_a_mount_left_by_a_killed_process_is_cleaned_up_by_the_next_run(pc, tmp_path):
    where = tmp_path / "snap"
    proc = _start_mount(pc.repo, where)
    proc.kill()
    proc.wait()
    assert str(where) in views()
    with pytest.raises(OSError):
        os.listdir(where)            # transport endpoint is not connected
    lifeboat("ls", "latest", "--repo", pc.repo)
    assert views() == [] and not any(m.target.startswith(str(where)) for m in current_mounts())
    # The place is usable again.
    proc = _start_mount(pc.repo, where)
    lifeboat("umount", where)
    assert proc.wait(timeout=20) == 0
