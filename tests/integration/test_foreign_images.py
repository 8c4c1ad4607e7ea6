"""Restoring, inspecting and importing images other tools made: raw disk images (plain, gzip,
zstd, xz) and virtual disks (VHD fixed and dynamic, VHDX, qcow2, VMDK sparse and flat), all made
from real disks by the real tools (gzip, zstd, xz, qemu-img convert), through the real CLI.

Two disks: a GPT UEFI Linux PC (ESP, ext4 root, swap) and a Windows-shaped GPT disk (ESP, MSR,
NTFS). Each restored onto a larger and a smaller target: every file compared, fsck clean,
table and partition GUIDs, types, names and attributes kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import PC, MiB, lifeboat, read_tree, sfdisk_json
from tests.own_mounts import mounts_containing

FORMATS = ["raw", "img.gz", "img.zst", "img.xz", "img.bz2", "img.lz4", "img.zst.aa", "qcow2", "vhd", "vhd-fixed", "vhdx", "vmdk", "vmdk-flat"]
QEMU = {  # file suffix, qemu-img -O format and options
    "qcow2": ("qcow2", "qcow2", []),
    "vhd": ("vhd", "vpc", ["-o", "subformat=dynamic"]),
    "vhd-fixed": ("vhd", "vpc", ["-o", "subformat=fixed"]),
    "vhdx": ("vhdx", "vhdx", []),
    "vmdk": ("vmdk", "vmdk", ["-o", "subformat=monolithicSparse"]),
    "vmdk-flat": ("vmdk", "vmdk", ["-o", "subformat=monolithicFlat"]),
}
COMPRESS = {"img.gz": ["gzip", "-c", "-1"], "img.zst": ["zstd", "-q", "-c"], "img.xz": ["xz", "-c", "-T0", "-0"],
            "img.bz2": ["bzip2", "-c", "-1"], "img.lz4": ["lz4", "-q", "-c"]}


def make_image(disk: Path, fmt: str, where: Path) -> Path:
    """`disk` as an image of format `fmt`, made by the format's own tool."""
    where.mkdir(parents=True, exist_ok=True)
    if fmt == "raw":
        return disk
    if fmt == "img.zst.aa":
        # zstd output split into 4 MiB pieces by split(1): pc.img.zst.aa, .ab, ...
        whole = make_image(disk, "img.zst", where / "whole")
        subprocess.run(["split", "-b", "4M", str(whole), str(where / "pc.img.zst.")], check=True)
        shutil.rmtree(where / "whole")
        return where / "pc.img.zst.aa"
    if fmt in COMPRESS:
        # Made once per disk and copied: xz or bzip2 of a whole disk costs up to 17 CPU s, and
        # the restore and the damage tests read the same images (the damage ones cut their copy).
        out = where / f"pc.{fmt}"
        kept = disk.parent / f"{disk.name}.compressed" / out.name
        if not kept.exists():
            kept.parent.mkdir(exist_ok=True)
            with open(f"{kept}.part", "wb") as f:
                subprocess.run([*COMPRESS[fmt], str(disk)], stdout=f, check=True)
            os.rename(f"{kept}.part", kept)
        shutil.copyfile(kept, out)
        return out
    suffix, qfmt, opts = QEMU[fmt]
    out = where / f"pc.{suffix}"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", qfmt, *opts, str(disk), str(out)], check=True)
    return out


def sparse_copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


@pytest.fixture(autouse=True)
def scratch(tmp_path):
    """Each test's images and targets are deleted when it ends: hundreds of MiB each."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fi.make_tree(tmp_path_factory.mktemp("tree") / "t")


def build_linux_pc(work: Path, tree: Path) -> PC:
    """A GPT UEFI Linux PC: FAT32 ESP (garbage in its free space), a roomy ext4 root holding the
    tree (roomy enough to shrink by the margin Lifeboat keeps, so left sparse), swap."""
    esp = fi.make_vfat(work / "esp.img", 34 * MiB, tree, fat=32, label="ESP")
    root = fi.make_ext4(work / "root.img", 256 * MiB, tree, label="rootfs", garbage=False)
    swap = fi.make_swap(work / "swap.img", 4 * MiB)
    parts = [
        di.PartSpec(34 * MiB, di.ESP, name="EFI system partition", content=str(esp), attrs="GUID:63"),
        di.PartSpec(256 * MiB, di.LINUX_FS, name="root", content=str(root)),
        di.PartSpec(4 * MiB, di.LINUX_SWAP, name="swap", content=str(swap)),
    ]
    disk = work / "linux.img"
    layout = di.make_disk(disk, 300 * MiB, "gpt", parts)
    return PC(disk, {1: ("vfat", fi.vfat_tree(esp)), 2: ("ext4", fi.ext_tree(root))}, layout)


def build_windows_pc(work: Path, tree: Path) -> PC:
    """The layout Windows Setup makes on a UEFI disk, scaled down: FAT32 ESP, MSR (no
    filesystem), NTFS "C:" holding the tree (roomy enough to shrink, so left sparse)."""
    esp = fi.make_vfat(work / "esp.img", 34 * MiB, tree, fat=32, label="SYSTEM")
    ntfs = fi.make_ntfs(work / "c.img", 512 * MiB, tree, label="Windows", garbage=False)
    parts = [
        di.PartSpec(34 * MiB, di.ESP, name="EFI system partition", content=str(esp), attrs="GUID:63"),
        di.PartSpec(16 * MiB, di.MSR, name="Microsoft reserved partition", attrs="GUID:63"),
        di.PartSpec(512 * MiB, di.BASIC_DATA, name="Basic data partition", content=str(ntfs)),
    ]
    disk = work / "windows.img"
    layout = di.make_disk(disk, 570 * MiB, "gpt", parts)
    return PC(disk, {1: ("vfat", fi.vfat_tree(esp)), 3: ("ntfs", fi.ntfs_tree(ntfs))}, layout)


@pytest.fixture(scope="module")
def pcs(tmp_path_factory, tree) -> dict[str, PC]:
    return {"linux": build_linux_pc(tmp_path_factory.mktemp("linux"), tree),
            "windows": build_windows_pc(tmp_path_factory.mktemp("windows"), tree)}


def guids(path) -> tuple:
    """The identities a boot depends on, whatever moved: disk id and each partition's type,
    GUID, name and attributes."""
    table = sfdisk_json(path)
    return table["label"], table["id"], tuple((p.get("type"), p.get("uuid"), p.get("name"), p.get("attrs"))
                                              for p in table["partitions"])


def assert_restored(pc: PC, target: Path) -> None:
    from recovery.probe.table import read_layout

    layout = {p.number: p for p in read_layout(str(target)).partitions}
    for number, (fs, expected) in pc.trees.items():
        p = layout[number]
        assert fi.fsck_clean(fs, target, p.start, p.size), f"partition {number} ({fs}) is not clean"
        assert read_tree(fs, target, p.start, p.size) == expected, f"partition {number} ({fs}) differs"
    assert guids(target) == guids(pc.disk)


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def directions(which: str, fmt: str) -> list[str]:
    """Which sizes of target a format's image is restored onto for one PC: both for raw; for
    the others one each, the Linux PC's and the Windows PC's alternating from format to
    format, so every format is restored onto a larger and onto a smaller disk across the two
    PCs at half the restores."""
    if fmt == "raw":
        return ["larger", "smaller"]
    flip = (FORMATS.index(fmt) + (which == "windows")) % 2
    return ["larger" if flip else "smaller"]


def test_every_format_meets_both_directions():
    for fmt in FORMATS:
        assert {d for which in ("linux", "windows") for d in directions(which, fmt)} == {"larger", "smaller"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["linux", "windows"])
def test_image_restores_onto_a_larger_or_a_smaller_disk(tmp_path, pcs, which, fmt):
    pc = pcs[which]
    image = make_image(pc.disk, fmt, tmp_path / "image")
    size = pc.disk.stat().st_size
    for direction in directions(which, fmt):
        if direction == "larger":
            larger = blank(tmp_path / "larger.img", size + 64 * MiB)
            done = lifeboat("restore", image, larger, "--yes", "--json", json_out=True).data
            assert done["status"] == "ok"
            assert_restored(pc, larger)
            last = {p.number: p for p in di.read_layout(str(larger)).partitions}
            assert max(p.end for p in last.values()) > pc.layout.partitions[-1].end     # it grew into the room
        else:
            smaller = blank(tmp_path / "smaller.img", size - (200 if which == "windows" else 128) * MiB)
            lifeboat("restore", image, smaller, "--yes")
            assert_restored(pc, smaller)
    assert not exports_left()


def exports_left() -> list[str]:
    """Mounts of virtual-disk exports still there (each restore must end its own)."""
    return mounts_containing("lifeboat-vdisk-")


def test_inspect_names_the_format_partitions_and_says_intact(tmp_path, pcs):
    pc = pcs["windows"]
    image = make_image(pc.disk, "vhdx", tmp_path)
    shown = lifeboat("inspect", image).stdout
    assert shown.startswith(f"VHDX image {image}")
    assert "partition 1: vfat, “SYSTEM”" in shown and "partition 3: ntfs, “Windows”" in shown
    assert "complete and intact" in shown
    data = lifeboat("inspect", image, "--json", json_out=True).data
    assert data["kind"] == "VHDX image" and data["intact"] is True
    assert [p["fs"] for p in data["partitions"]] == ["vfat", "unknown", "ntfs"]
    assert data["layout"]["table"] == "gpt"


def test_import_then_restore_gives_the_bytes_of_a_direct_restore(tmp_path, pcs):
    pc = pcs["linux"]
    image = make_image(pc.disk, "qcow2", tmp_path / "image")
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    first = lifeboat("import", image, "--repo", repo, "--name", "linux-pc", "--json", json_out=True).data
    assert first["bytes_stored_new"] > 0

    direct = blank(tmp_path / "direct.img", pc.disk.stat().st_size)
    via = blank(tmp_path / "via.img", pc.disk.stat().st_size)
    lifeboat("restore", image, direct, "--layout", "keep", "--yes")
    lifeboat("restore", first["snapshot"], via, "--repo", repo, "--layout", "keep", "--yes")
    assert subprocess.run(["cmp", str(direct), str(via)]).returncode == 0
    assert_restored(pc, via)

    listed = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["name"] for s in listed] == ["linux-pc"]
    from recovery.repo.repository import Repository

    record = Repository.open(repo).load_manifest(first["snapshot"]).source["imported"]
    assert record["kind"] == "qcow2 image" and record["location"] == str(image)
    assert record["created"].startswith(str(image.stat().st_mtime_ns)[:0] + "20")   # an ISO date


def test_a_second_import_of_a_later_image_stores_only_what_changed(tmp_path, pcs):
    pc = pcs["linux"]
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    first = lifeboat("import", make_image(pc.disk, "vhdx", tmp_path / "monday"), "--repo", repo, "--name", "pc",
                     "--json", json_out=True).data

    # The same PC a day later: one new 2 MiB file in its root filesystem.
    later = sparse_copy(pc.disk, tmp_path / "later.img")
    root = next(p for p in pc.layout.partitions if p.number == 2)
    part = tmp_path / "root.img"
    subprocess.run(["dd", f"if={later}", f"of={part}", "bs=1M", f"skip={root.start // MiB}",
                    f"count={root.size // MiB}", "conv=sparse", "status=none"], check=True)
    new_file = tmp_path / "report.bin"
    new_file.write_bytes(di.pattern(b"tuesday", 2 * MiB))
    subprocess.run(["debugfs", "-w", "-R", f"write {new_file} report.bin", str(part)], check=True,
                   capture_output=True)
    subprocess.run(["dd", f"if={part}", f"of={later}", "bs=1M", f"seek={root.start // MiB}", "conv=notrunc,sparse",
                    "status=none"], check=True)
    second = lifeboat("import", make_image(later, "vhdx", tmp_path / "tuesday"), "--repo", repo, "--name", "pc",
                      "--json", json_out=True).data
    assert second["bytes_used"] > first["bytes_used"]
    # The new file (random-looking, so it does not compress) and the metadata blocks it touched.
    assert 2 * MiB <= second["bytes_stored_new"] < 2 * MiB + 3 * MiB
    assert second["bytes_stored_new"] < first["bytes_stored_new"] / 3


def _untouched(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated qcow2", "truncated raw", "truncated zst", "truncated gz",
                                    "truncated bz2", "truncated lz4", "missing piece", "corrupt qcow2"])
def test_damaged_images_are_refused_before_anything_is_written(tmp_path, pcs, damage):
    pc = pcs["windows"]
    fmt = {"truncated qcow2": "qcow2", "corrupt qcow2": "qcow2", "truncated raw": "raw",
           "truncated zst": "img.zst", "truncated gz": "img.gz", "truncated bz2": "img.bz2",
           "truncated lz4": "img.lz4", "missing piece": "img.zst.aa"}[damage]
    image = make_image(pc.disk, fmt, tmp_path / "image")
    if fmt == "raw":
        image = sparse_copy(pc.disk, tmp_path / "image" / "cut.img")
    size = image.stat().st_size
    named = image                       # what the refusal names
    if damage == "missing piece":
        named = image.parent / "pc.img.zst.ab"
        named.unlink()
    elif damage.startswith("truncated"):
        with open(image, "r+b") as f:
            f.truncate(size * 2 // 3)
    else:
        # A qcow2's L1 table pointer aimed past the end of the file: its clusters cannot be found.
        with open(image, "r+b") as f:
            f.seek(40)
            f.write((size * 16).to_bytes(8, "big"))
    target = blank(tmp_path / "target.img", pc.disk.stat().st_size)
    with open(target, "r+b") as f:
        f.write(di.pattern(b"old disk", 4 * MiB))
    before = _untouched(target)

    done = lifeboat("restore", image, target, "--yes", check=False)
    assert done.returncode in (3, 6), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert named.name in done.stderr
    assert _untouched(target) == before
    seen = lifeboat("inspect", image, check=False)
    assert seen.returncode in (3, 6) and "Traceback" not in seen.stderr


def test_not_an_image_and_missing_path_are_plain_usage_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path in (text, tmp_path / "nothing.vhdx"):
        done = lifeboat("inspect", path, check=False)
        assert done.returncode == 2 and done.stderr.count("\n") == 1
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    done = lifeboat("inspect", repo, check=False)
    assert done.returncode == 2 and "is a Lifeboat repository" in done.stderr


# ------------------------------------------------------------------ Windows Backup system image

SHADOW_SET = "cd113385-65ff-4ea2-8ced-5630f6feca8f"
DISK_GUID = "9b9cfbc4-369e-11e9-a17c-806e6f6e6963"


def make_windows_image_backup(drive: Path, disk: Path, pc: str = "DESKTOP-LB1",
                              when: str = "2025-03-02 101500") -> Path:
    """A Windows Backup system image folder around `disk`, as Windows lays it out.

    Real: the folder and file names (WindowsImageBackup/<PC>/Backup <date>/<disk GUID>.vhdx,
    BackupSpecs.xml, <GUID>_Components.xml, <GUID>_AdditionalFiles<GUID>.xml, MediaId,
    Catalog/GlobalCatalog, Catalog/BackupGlobalCatalog, SPPMetadataCache/), as listed from real
    backups; the VHDX, made by qemu-img from a real Windows-shaped GPT disk.
    Hand-made: the contents of the XML catalogues (minimal, well-formed, UTF-16 as Windows
    writes them, but not copied from a real backup), MediaId and the two catalogue files
    (placeholder bytes: Lifeboat does not read them)."""
    pc_dir = drive / "WindowsImageBackup" / pc
    backup = pc_dir / f"Backup {when}"
    (pc_dir / "Catalog").mkdir(parents=True)
    (pc_dir / "SPPMetadataCache").mkdir()
    backup.mkdir()
    (pc_dir / "MediaId").write_bytes(bytes(range(16)))
    (pc_dir / "Catalog" / "GlobalCatalog").write_bytes(b"\x00" * 1024)
    (pc_dir / "Catalog" / "BackupGlobalCatalog").write_bytes(b"\x00" * 1024)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", str(disk),
                    str(backup / f"{DISK_GUID}.vhdx")], check=True)
    xml = {
        "BackupSpecs.xml": '<BackupSpecs Version="1.0"><FileSpecs><Volume Name="\\\\?\\Volume{0}\\" '
                           'AccessPath="C:" OriginalAccessPath="C:"/></FileSpecs><SystemState>true</SystemState>'
                           '</BackupSpecs>',
        f"{SHADOW_SET}_Components.xml": f'<Components><Disk Guid="{DISK_GUID}" File="{DISK_GUID}.vhdx"/>'
                                        '</Components>',
        f"{SHADOW_SET}_AdditionalFilesc3b9f3c7-5e52-4d5e-8b20-19adc95a34c7.xml": "<AdditionalFiles/>",
    }
    for name, text in xml.items():
        (backup / name).write_text('<?xml version="1.0" encoding="UTF-16"?>' + text, encoding="utf-16")
    return drive / "WindowsImageBackup"


def test_windows_system_image_folder_restores_the_pcs_disk(tmp_path, pcs):
    pc = pcs["windows"]
    root = make_windows_image_backup(tmp_path / "usb", pc.disk)
    shown = lifeboat("inspect", root).stdout
    assert shown.startswith("Windows system image of DESKTOP-LB1, saved 2025-03-02T10:15:00")
    assert "partition 3: ntfs, “Windows”" in shown and "complete and intact" in shown
    target = blank(tmp_path / "new-ssd.img", pc.disk.stat().st_size + 64 * MiB)
    # The computer's folder and the image folder name the same disk.
    lifeboat("restore", root / "DESKTOP-LB1", target, "--yes")
    assert_restored(pc, target)


def test_windows_system_image_with_two_disks_asks_which(tmp_path, pcs):
    root = make_windows_image_backup(tmp_path / "usb", pcs["windows"].disk)
    backup = next((root / "DESKTOP-LB1").glob("Backup *"))
    second = backup / "9b9cfbc3-369e-11e9-a17c-806e6f6e6963.vhdx"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", str(pcs["linux"].disk), str(second)],
                   check=True)
    done = lifeboat("inspect", root, check=False)
    assert done.returncode == 2 and "holds 2 disks" in done.stderr and second.name in done.stderr
    named = lifeboat("inspect", second, "--json", json_out=True).data
    assert named["kind"] == "Windows system image" and named["name"] == "DESKTOP-LB1"
    assert [p["fs"] for p in named["partitions"]] == ["vfat", "ext4", "swap"]


def test_windows_system_image_with_a_cut_catalogue_is_refused(tmp_path, pcs):
    root = make_windows_image_backup(tmp_path / "usb", pcs["windows"].disk)
    specs = next((root / "DESKTOP-LB1").glob("Backup *")) / "BackupSpecs.xml"
    specs.write_bytes(specs.read_bytes()[:60])
    target = blank(tmp_path / "t.img", pcs["windows"].disk.stat().st_size)
    done = lifeboat("restore", root, target, "--yes", check=False)
    assert done.returncode == 6 and "BackupSpecs.xml is damaged" in done.stderr
    with open(target, "rb") as f:
        assert f.read(MiB) == bytes(MiB)          # nothing was written
