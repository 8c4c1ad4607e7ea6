"""Restoring Clonezilla images through the real CLI: `lifeboat restore FOLDER TARGET --yes` for
folders Clonezilla's own `ocs-sr savedisk` wrote (tests/clonezilla_images.py) of a GPT UEFI
Linux disk (ESP, ext4, NTFS, swap) and a Windows-shaped GPT disk (ESP, MSR, NTFS, recovery),
onto a larger and a smaller target: every file compared with the original disk's, each
filesystem's checker clean, disk and partition GUIDs, types, names and attributes kept, and
the swap partition's signature back with its saved UUID and label. A split xz folder, a bare
partclone image restored as a whole-disk filesystem, and a folder with a piece missing
(refused, naming it, the target untouched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from recovery.probe.table import read_layout
from tests import clonezilla_images as cz
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat, read_tree, sfdisk_json

pytestmark = pytest.mark.loop

# The partitions holding files, by disk (the MSR and swap hold none).
FILESYSTEMS = {"linux": {1: "vfat", 2: "ext4", 3: "ntfs"}, "windows": {1: "vfat", 3: "ntfs", 4: "ntfs"}}
# How much smaller a target each disk fits on: its partitions are nearly full, so only a little.
SMALLER = {"linux": 6 * MiB, "windows": 4 * MiB}


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def guids(path) -> tuple:
    table = sfdisk_json(path)
    return table["label"], table["id"], tuple((p.get("type"), p.get("uuid"), p.get("name"), p.get("attrs"))
                                              for p in table["partitions"])


def blkid(path: Path, offset: int) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", "--offset", str(offset), str(path)],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_restored(kind: str, disk: Path, target: Path) -> None:
    before = {p.number: p for p in read_layout(str(disk)).partitions}
    after = {p.number: p for p in read_layout(str(target)).partitions}
    assert sorted(after) == sorted(before)
    for number, fs in FILESYSTEMS[kind].items():
        old, new = before[number], after[number]
        assert fi.fsck_clean(fs, target, new.start, new.size), f"partition {number} ({fs}) is not clean"
        assert read_tree(fs, target, new.start, new.size) == read_tree(fs, disk, old.start, old.size), \
            f"partition {number} ({fs}) differs"
    assert guids(target) == guids(disk)
    for number, p in before.items():
        was = blkid(disk, p.start)
        if was.get("TYPE") == "swap":
            now = blkid(target, after[number].start)
            assert (now.get("TYPE"), now.get("UUID"), now.get("LABEL")) == ("swap", was["UUID"], was["LABEL"])


@pytest.fixture(autouse=True)
def scratch(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


SAVED_AS = {"linux": "zstd-split", "windows": "bzip2"}      # the saves test_clonezilla_source.py reads


@pytest.mark.parametrize("kind", ["linux", "windows"])
def test_folder_restores_onto_a_larger_and_a_smaller_disk(kind, loops, tmp_path):
    disk, folder = cz.clonezilla_image(kind, SAVED_AS[kind], loops, tmp_path)
    size = disk.stat().st_size
    larger = blank(tmp_path / "larger.img", size + 64 * MiB)
    done = lifeboat("restore", folder, larger, "--yes", "--json", json_out=True).data
    assert done["status"] == "ok"
    assert_restored(kind, disk, larger)
    assert read_layout(str(larger)).partitions[-1].end > read_layout(str(disk)).partitions[-1].end

    smaller = blank(tmp_path / "smaller.img", size - SMALLER[kind])
    lifeboat("restore", folder, smaller, "--yes")
    assert_restored(kind, disk, smaller)


def test_split_xz_folder_restores(loops, tmp_path):
    disk, folder = cz.clonezilla_image("linux", "xz-split", loops, tmp_path)
    assert any(n.endswith(".xz.ab") for n in os.listdir(folder))
    target = blank(tmp_path / "target.img", disk.stat().st_size + 16 * MiB)
    lifeboat("restore", folder, target, "--yes")
    assert_restored("linux", disk, target)


def test_bare_partclone_image_restores_as_a_whole_disk_filesystem(tmp_path):
    tree = fi.make_tree(tmp_path / "tree", seed=5)
    fs = fi.make_ext4(tmp_path / "fs.img", 24 * MiB, tree, label="bare")
    image = tmp_path / "fs.ext4-ptcl-img.zst"
    with open(image, "wb") as out:
        clone = subprocess.Popen(["partclone.ext4", "-q", "-c", "-L", str(tmp_path / "partclone.log"), "-s", str(fs),
                                  "-O", "-"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        subprocess.run(["zstd", "-q", "-c"], stdin=clone.stdout, stdout=out, check=True)
        assert clone.wait() == 0
    target = blank(tmp_path / "target.img", 40 * MiB)
    lifeboat("restore", image, target, "--yes")
    assert blkid(target, 0)["LABEL"] == "bare"
    assert fi.fsck_clean("ext4", target)
    assert read_tree("ext4", target, 0, 40 * MiB) == read_tree("ext4", fs, 0, 24 * MiB)


def test_missing_piece_is_refused_naming_it_and_the_target_is_untouched(loops, tmp_path):
    disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    piece = sorted(n for n in os.listdir(copy) if ".ext4-ptcl-img.zst." in n)[-1]
    (copy / piece).unlink()
    target = blank(tmp_path / "target.img", disk.stat().st_size)
    with open(target, "r+b") as f:
        f.write(os.urandom(4 * MiB))
    before = target.read_bytes()
    done = lifeboat("restore", copy, target, "--yes", check=False)
    assert done.returncode == 6, done.stderr
    assert piece in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert target.read_bytes() == before


def test_import_then_restore_gives_the_bytes_of_a_direct_restore(loops, tmp_path):
    disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    first = lifeboat("import", folder, "--repo", repo, "--name", "linux-pc", "--json", json_out=True).data
    assert first["bytes_stored_new"] > 0
    direct = blank(tmp_path / "direct.img", disk.stat().st_size)
    via = blank(tmp_path / "via.img", disk.stat().st_size)
    lifeboat("restore", folder, direct, "--layout", "keep", "--yes")
    lifeboat("restore", first["snapshot"], via, "--repo", repo, "--layout", "keep", "--yes")
    assert subprocess.run(["cmp", str(direct), str(via)]).returncode == 0
    assert_restored("linux", disk, via)

    from recovery.repo.repository import Repository

    record = Repository.open(repo).load_manifest(first["snapshot"]).source["imported"]
    assert record["kind"] == "Clonezilla image" and record["location"] == str(folder)
    assert record["created"].startswith("20")


def test_a_second_import_of_a_later_image_stores_only_what_changed(loops, tmp_path):
    _disk, monday = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    later, tuesday = cz.clonezilla_image("linux-later", "lzop", loops, tmp_path)
    cz.assert_compressed(tuesday, "lzop")
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    first = lifeboat("import", monday, "--repo", repo, "--name", "pc", "--json", json_out=True).data
    second = lifeboat("import", tuesday, "--repo", repo, "--name", "pc", "--json", json_out=True).data
    assert second["bytes_used"] > first["bytes_used"]
    # The new file (random-looking, so it does not compress) and the metadata blocks it touched.
    assert 2 * MiB <= second["bytes_stored_new"] < 2 * MiB + 3 * MiB
    assert second["bytes_stored_new"] < first["bytes_stored_new"] / 3
    target = blank(tmp_path / "target.img", later.stat().st_size)
    lifeboat("restore", second["snapshot"], target, "--repo", repo, "--layout", "keep", "--yes")
    assert_restored("linux", later, target)


def test_a_clonezilla_folder_on_a_drive_is_listed_with_its_origin(loops, tmp_path):
    """The scan the TUI runs finds a Clonezilla folder at a drive's root (where Clonezilla's
    /home/partimag is) and says what it is: "Clonezilla image, DATE, N partitions"."""
    from recovery import discover
    from recovery.probe.disks import describe
    _disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    content = tmp_path / "content"
    shutil.copytree(folder, content / folder.name)
    part = tmp_path / "part.img"
    blank(part, 40 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "CZ-IMAGES", "-d", str(content), str(part)], check=True)
    drive = blank(tmp_path / "drive.img", 42 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(drive)], input="label: gpt\nstart=2048, size=81920, type=L\n",
                   text=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={drive}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
                   check=True)
    dev = loops.attach(drive)
    places = discover.scan([describe(dev)])
    images = [p for p in places if p.is_image]
    assert [(p.partition, p.subpath) for p in images] == [(f"{dev}p1", folder.name)]
    # The date ocs-sr's log gives for the saving, and the saved disk's partitions (ESP, root, data, swap).
    kind, date, count = images[0].image.split(", ")
    assert (kind, count) == ("Clonezilla image", f"{len(sfdisk_json(_disk)['partitions'])} partitions")
    assert count == "4 partitions" and date in (folder / "clonezilla-img").read_text()
    assert f"{dev}p1 " not in Path("/proc/mounts").read_text()      # unmounted after the search


def test_a_target_inside_the_image_folder_is_refused(loops, tmp_path):
    disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    target = blank(copy / "target.img", disk.stat().st_size)
    done = lifeboat("restore", copy, target, "--yes", check=False)
    assert done.returncode == 4, done.stderr
    assert done.stderr == (f"lifeboat: cannot restore onto {target}: it lies inside the backup being "
                           "restored from; choose another disk\n")
    assert target.read_bytes() == bytes(disk.stat().st_size)
