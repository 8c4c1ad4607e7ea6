"""write-usb on loop devices standing in for sticks: the write and its read-back, the data
partition with its repository, and every refusal asserted on its message (the stick left
untouched). A loop device is not USB, so writing needs --force and the second typed
confirmation, fed on stdin as a person would type it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from recovery import discover, usbstick
from recovery.errors import RefusedError
from recovery.probe.disks import describe
from recovery.probe.mounts import loops_backed_by
from recovery.repo.repository import Repository
from recovery.units import human_size
from tests.conftest import ROOT, run

pytestmark = pytest.mark.loop
MIB = 1024 * 1024


def make_hybrid_iso(where: Path) -> Path:
    """A small ISO built like build/lifeboat.iso (xorriso, GRUB hybrid MBR, appended EFI
    partition as GPT), with 6 MiB of random data so the read-back has something to check."""
    stage = where / "stage"
    (stage / "boot" / "grub").mkdir(parents=True)
    (stage / "data").mkdir()
    (stage / "data" / "blob").write_bytes(os.urandom(6 * MIB))
    run("grub-mkimage", "-O", "i386-pc-eltorito", "-p", "/boot/grub", "-o", stage / "boot/grub/bios.img",
        "biosdisk", "iso9660")
    efi = where / "efi.img"
    run("mkfs.vfat", "-C", "-n", "TESTEFI", efi, "2048")
    iso = where / "small.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-r", "-V", "LBTEST", "-o", iso,
        "--grub2-mbr", "/usr/lib/grub/i386-pc/boot_hybrid.img", "-partition_offset", "16",
        "-appended_part_as_gpt", "-append_partition", "2", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", efi,
        "-iso_mbr_part_type", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "-c", "boot/boot.cat",
        "-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "--grub2-boot-info", stage)
    return iso


@pytest.fixture(scope="module")
def hybrid_iso(tmp_path_factory) -> Path:
    return make_hybrid_iso(tmp_path_factory.mktemp("iso"))


def old_stick(path: Path, size: int) -> Path:
    """A used stick: random bytes everywhere (an old backup GPT included, in effect)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n
    return path


def partitioned_stick(path: Path, size: int, loops) -> tuple[str, str]:
    """A stick with a GPT and one ext4 partition; returns (device, partition node)."""
    with open(path, "wb") as f:
        f.truncate(size)
    run("sfdisk", "--quiet", path, input="label: gpt\nstart=2048, type=linux, name=OLD\n")
    dev = loops.attach(path)
    part = f"{dev}p1"
    run("mkfs.ext4", "-q", "-L", "OLDSTICK", part)
    return dev, part


def lifeboat(*args, stdin: str | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LIFEBOAT_LOG_DIR=str(tmp_path / "logs"))
    return subprocess.run([sys.executable, "-m", "recovery", "write-usb", *map(str, args)],
                          input=stdin if stdin is not None else "", capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def file_hash(path, length: int | None = None) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        left = length if length is not None else os.fstat(f.fileno()).st_size
        while left:
            block = f.read(min(left, 4 * MIB))
            assert block, f"{path} ended early"
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def read(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def name(dev: str) -> str:
    return dev.rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- writing


def test_write_then_whole_image_reads_back(loops, hybrid_iso, tmp_path):
    dev = loops.attach(old_stick(tmp_path / "stick.img", 64 * MIB))
    out = lifeboat(hybrid_iso, dev, "--force", stdin=f"{name(dev)}\nerase {name(dev)}\n", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Everything on it will be destroyed" in out.stderr
    assert f"Done: {dev} is written, checked and flushed. It is safe to pull the stick out now." in out.stdout
    size = hybrid_iso.stat().st_size
    # The whole written region, read back here independently, is the image byte for byte.
    assert file_hash(dev, size) == file_hash(hybrid_iso)
    assert read(dev, 64 * MIB - MIB, MIB) == bytes(MIB)        # the old backup GPT is gone
    table = json.loads(run("sfdisk", "--json", dev).stdout)["partitiontable"]
    assert [p["name"] for p in table["partitions"]] == ["ISO9660", "Appended2", "Gap1"]


def test_progress_and_hashes_through_the_api(loops, hybrid_iso, tmp_path):
    dev = loops.attach(old_stick(tmp_path / "stick.img", 32 * MIB))
    plan = usbstick.plan_stick(str(hybrid_iso), dev, force=True)
    assert plan.override and "not a USB disk (it is on loop)" in plan.override
    before = file_hash(dev)
    with pytest.raises(RefusedError, match="needs a second confirmation"):
        usbstick.write_stick(plan)
    assert file_hash(dev) == before
    events = []
    result = usbstick.write_stick(plan, on_event=events.append, override_confirmed=True)
    size = hybrid_iso.stat().st_size
    assert result.image_hash == result.readback_hash == file_hash(hybrid_iso)
    for phase in ("write", "verify"):
        last = [e for e in events if e.phase == phase][-1]
        assert (last.done, last.total) == (size, size)
        assert last.rate > 0
    assert file_hash(dev, size) == file_hash(hybrid_iso)


@pytest.mark.parametrize("fs", ["exfat", "ext4"])
def test_data_partition_holds_a_repository(loops, hybrid_iso, tmp_path, fs):
    size = 160 * MIB + 40 * 512     # not a whole number of MiB, as real sticks are not
    dev = loops.attach(old_stick(tmp_path / "stick.img", size))
    out = lifeboat(hybrid_iso, dev, "--data", fs, "--force", "--yes", "--json",
                   stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"] and result["image_hash"] == file_hash(hybrid_iso)

    iso_table = json.loads(run("sfdisk", "--json", hybrid_iso).stdout)["partitiontable"]
    table = json.loads(run("sfdisk", "--json", dev).stdout)["partitiontable"]
    keep = ("start", "size", "type", "uuid", "name", "attrs")
    # The ISO's partitions and the disk GUID are as xorriso made them; the backup GPT is at the end.
    assert table["id"] == iso_table["id"]
    assert [{k: p.get(k) for k in keep} for p in table["partitions"][:3]] == \
           [{k: p.get(k) for k in keep} for p in iso_table["partitions"]]
    assert table["lastlba"] >= size // 512 - 34 - 2048
    data = table["partitions"][3]
    assert data["name"] == "LIFEBOAT-DATA" and data["type"] == usbstick.DATA_TYPES[fs]
    assert data["start"] * 512 % MIB == 0 and data["start"] * 512 >= hybrid_iso.stat().st_size
    assert (data["start"] + data["size"]) * 512 > size - 2 * MIB
    # BIOS boot code and everything the ISO's partitions hold are untouched.
    assert read(dev, 0, 440) == read(hybrid_iso, 0, 440)
    iso_end = (iso_table["partitions"][2]["start"] + iso_table["partitions"][2]["size"]) * 512
    assert read(dev, 64 * 512, iso_end - 64 * 512) == read(hybrid_iso, 64 * 512, iso_end - 64 * 512)

    node = f"{dev}p4"
    assert os.path.exists(node), "the kernel was not told about the new partition"
    found = run("blkid", "-p", "-o", "export", node).stdout
    assert f"TYPE={fs}" in found and f"LABEL={usbstick.DATA_LABELS[fs]}" in found
    if fs == "ext4":
        run("e2fsck", "-fn", node)
    else:
        run("fsck.exfat", "-n", node)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if fs == "exfat":
        run("mount.exfat-fuse", node, mnt)     # this kernel has no exFAT driver
    else:
        run("mount", "-o", "ro", node, mnt)
    try:
        repo = Repository.open(mnt / usbstick.REPO_FOLDER)
        assert repo.snapshots() == []
        # recovery.discover finds it where it looks (the root and one folder down).
        assert discover.search_filesystem(mnt) == [("lifeboat", 0, ())]
    finally:
        run("umount", mnt)


# ----------------------------------------------------------------------------- refusals


def test_non_usb_disk_refused_without_force(loops, hybrid_iso, tmp_path):
    dev = loops.attach(old_stick(tmp_path / "stick.img", 32 * MIB))
    before = file_hash(dev)
    out = lifeboat(hybrid_iso, dev, "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
    assert out.returncode == 4
    assert out.stderr.strip().splitlines()[-1] == (
        f"lifeboat: {dev} is not a USB disk (it is on loop); only removable USB sticks are written. "
        "If you are sure, add --force (you will be asked to confirm again)")
    assert "Traceback" not in out.stderr
    assert file_hash(dev) == before


@pytest.mark.parametrize("answers,expected", [
    ("{n}\nyes\n", "the confirmation typed does not match"),     # the second question answered wrong
    ("sdz\n", "the name typed does not match the device"),        # the first one
    ("", "no answer was typed"),                                   # nobody there
])
def test_force_needs_both_typed_confirmations(loops, hybrid_iso, tmp_path, answers, expected):
    dev = loops.attach(old_stick(tmp_path / "stick.img", 32 * MIB))
    before = file_hash(dev)
    out = lifeboat(hybrid_iso, dev, "--force", stdin=answers.format(n=name(dev)), tmp_path=tmp_path)
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"lifeboat: nothing was written: {expected}"
    assert file_hash(dev) == before


def test_force_with_yes_still_asks_the_second_confirmation(loops, hybrid_iso, tmp_path):
    dev = loops.attach(old_stick(tmp_path / "stick.img", 32 * MIB))
    before = file_hash(dev)
    out = lifeboat(hybrid_iso, dev, "--force", "--yes", tmp_path=tmp_path)
    assert out.returncode == 130 and "no answer was typed" in out.stderr
    assert file_hash(dev) == before


def test_mounted_stick_refused_with_the_umount_command(loops, hybrid_iso, tmp_path):
    dev, part = partitioned_stick(tmp_path / "stick.img", 32 * MIB, loops)
    mnt = tmp_path / "mounted here"
    mnt.mkdir()
    run("mount", part, mnt)
    try:
        before = file_hash(dev)
        out = lifeboat(hybrid_iso, dev, "--force", "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
        assert out.returncode == 4
        assert out.stderr.strip().splitlines()[-1] == (
            f"lifeboat: {dev} is in use: {part} on {mnt}; unmount it first: umount '{mnt}'")
        assert file_hash(dev) == before
        # The CLI's offer on a terminal does this: unmount, then the plan goes through.
        usbstick.unmount(describe(dev))
        assert not os.path.ismount(mnt)
        plan = usbstick.plan_stick(str(hybrid_iso), dev, force=True)
        assert [p.label for p in plan.target.partitions] == ["OLDSTICK"]
        lines = plan.lines()
        assert lines[lines.index("Everything on it will be destroyed:") + 1] == \
            f'  #1 {human_size(plan.target.partitions[0].size)} ext4 "OLDSTICK"'
    finally:
        if os.path.ismount(mnt):
            run("umount", mnt)


def test_too_small_refused(loops, hybrid_iso, tmp_path):
    iso_size = hybrid_iso.stat().st_size
    dev = loops.attach(old_stick(tmp_path / "small.img", 8 * MIB))
    assert iso_size > 8 * MIB
    out = lifeboat(hybrid_iso, dev, "--force", "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
    assert out.returncode == 4
    assert f"lifeboat: {dev} is too small: 8.0 MiB, but the image (" in out.stderr
    # Room for the image but not for a data partition after it.
    dev2 = loops.attach(old_stick(tmp_path / "medium.img", 40 * MIB))
    before = file_hash(dev2)
    out = lifeboat(hybrid_iso, dev2, "--data", "exfat", "--force", "--yes", stdin=f"erase {name(dev2)}\n",
                   tmp_path=tmp_path)
    assert out.returncode == 4
    assert f"{dev2} is too small: 40.0 MiB, but the image" in out.stderr
    assert "and a data partition of at least 64.0 MiB need 74.0 MiB" in out.stderr
    assert file_hash(dev2) == before


def test_system_disk_refused_even_with_force(loops, hybrid_iso, tmp_path):
    """A disk mounted where the live system keeps its boot medium is the system's: never written."""
    medium = Path("/run/lifeboat/medium")
    if medium.exists() and (os.path.ismount(medium) or any(medium.iterdir())):
        pytest.skip("/run/lifeboat/medium is in use on this machine")
    made = [p for p in (medium.parent, medium) if not p.exists()]
    medium.mkdir(parents=True, exist_ok=True)
    dev, part = partitioned_stick(tmp_path / "stick.img", 32 * MIB, loops)
    run("mount", "-o", "ro", part, medium)
    try:
        before = file_hash(dev)
        out = lifeboat(hybrid_iso, dev, "--force", "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
        assert out.returncode == 4
        assert out.stderr.strip().splitlines()[-1] == (
            f"lifeboat: {dev} holds the running system (or the medium it started from); it is never written")
        assert file_hash(dev) == before
        assert dev not in [d.path for d in usbstick.candidates([describe(dev)])]
    finally:
        run("umount", medium)
        for p in reversed(made):
            p.rmdir()


def test_disk_holding_the_image_refused(loops, hybrid_iso, tmp_path):
    dev, part = partitioned_stick(tmp_path / "stick.img", 32 * MIB, loops)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", part, mnt)
    try:
        copy = mnt / "lifeboat.iso"
        copy.write_bytes(hybrid_iso.read_bytes())
        out = lifeboat(copy, dev, "--force", "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
        assert out.returncode == 4
        assert f"lifeboat: {dev} holds the image file being written; copy the image elsewhere first" in out.stderr
    finally:
        run("umount", mnt)


def test_not_an_iso_refused(tmp_path):
    bogus = tmp_path / "bogus.iso"
    bogus.write_bytes(bytes(64 * 1024))
    out = lifeboat(bogus, "/dev/null", tmp_path=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"lifeboat: {bogus} is not an ISO image (no ISO 9660 volume in it)"


def test_discovery_lists_the_sticks_repository_first(loops, hybrid_iso, tmp_path):
    """Another disk with a repository and more free space is plugged in too: the stick's
    LIFEBOAT-DATA repository still comes first."""
    dev = loops.attach(old_stick(tmp_path / "stick.img", 96 * MIB))
    out = lifeboat(hybrid_iso, dev, "--data", "ext4", "--force", "--yes", stdin=f"erase {name(dev)}\n",
                   tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    other, part = partitioned_stick(tmp_path / "other.img", 256 * MIB, loops)
    mnt = tmp_path / "other"
    mnt.mkdir()
    run("mount", part, mnt)
    try:
        Repository.init(mnt / "backups")
    finally:
        run("umount", mnt)
    places = [p for p in discover.scan([describe(other), describe(dev)]) if p.is_repository]
    assert [(p.partition, p.label, p.subpath) for p in places] == [
        (f"{dev}p4", "LIFEBOAT-DATA", "lifeboat"), (part, "OLDSTICK", "backups")]
    assert places[0].free < places[1].free


def test_partition_of_a_mounted_whole_disk_is_found(loops, tmp_path):
    """The live medium is the stick mounted whole (ISO 9660 at offset 0), and then the kernel
    refuses to mount any partition of it. Stand-in: an ext4 filesystem on the whole disk
    (mounted) and an MBR partition beyond its end holding the data partition's filesystem."""
    image = tmp_path / "stick.img"
    with open(image, "wb") as f:
        f.truncate(128 * MIB)
    run("mkfs.ext4", "-q", "-L", "WHOLE", image, "32M")
    data = tmp_path / "data.img"
    with open(data, "wb") as f:
        f.truncate(64 * MIB)
    run("mkfs.ext4", "-q", "-L", "LIFEBOAT-DATA", data)
    run("dd", f"if={data}", f"of={image}", "bs=1M", "seek=64", "conv=notrunc", "status=none")
    run("sfdisk", "--quiet", "--wipe", "never", image, input="label: dos\nstart=131072, size=131072, type=83\n")
    dev = loops.attach(image)
    whole = tmp_path / "whole"
    whole.mkdir()
    run("mount", "-o", "ro", dev, whole)
    try:
        busy = subprocess.run(["mount", "-o", "ro", f"{dev}p1", str(tmp_path)], capture_output=True, text=True)
        assert busy.returncode != 0          # what the kernel does: the reason for the fallback
        where = discover.mount(f"{dev}p1", "ext4")
        try:
            assert (where / "lost+found").is_dir()
            found = run("findmnt", "-n", "-o", "SOURCE", where).stdout.strip()
            assert found.startswith("/dev/loop") and found != dev
        finally:
            discover.unmount(where)
        assert not where.exists()
        # The loop device goes away with the mount: the kernel clears it once its last user
        # lets go, which a mount namespace another lane's test is just making (its copy of every
        # mount lives until it drops them, within milliseconds) can delay: waited for, not read once.
        deadline = time.monotonic() + 10
        while loops_backed_by(dev) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loops_backed_by(dev) == []
    finally:
        run("umount", whole)


# ----------------------------------------------------------------------------- a stick that lies, a stick swapped


def test_a_stick_that_reads_back_other_data_is_named_failing(hybrid_iso, tmp_path):
    """The read-back is what catches a failing or fake stick: one byte read back differently
    (a FUSE disk that flips it on reads) is exit 3, one line, the stick called unusable."""
    from tests.integration.faulty_disk import faulty_disk

    backing = old_stick(tmp_path / "stick.img", 32 * MIB)
    flip = hybrid_iso.stat().st_size // 2
    with faulty_disk(backing, tmp_path / "mnt", "--flip-read", str(flip)) as stick:
        out = lifeboat(hybrid_iso, stick, "--yes", tmp_path=tmp_path)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert lines[-1] == (f"lifeboat: the stick {stick} reads back different data than was written: the stick "
                         "may be failing or fake (smaller than it claims); do not use it")
    assert "Done:" not in out.stdout
    # What reached the disk is the image: only the read-back lied.
    assert file_hash(backing, hybrid_iso.stat().st_size) == file_hash(hybrid_iso)


def test_a_stick_swapped_after_it_was_chosen_is_not_written(loops, hybrid_iso, tmp_path):
    """Between the typed name and the write, another stick appears at the same node (here the
    loop device grows to another size, as a different stick would): refused, exit 4, nothing
    written."""
    import pexpect

    image = old_stick(tmp_path / "stick.img", 32 * MIB)
    dev = loops.attach(image)
    before = file_hash(image)
    env = dict(os.environ, LIFEBOAT_LOG_DIR=str(tmp_path / "logs"))
    child = pexpect.spawn(sys.executable, ["-m", "recovery", "write-usb", str(hybrid_iso), dev, "--force"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(25, 100))
    child.expect(rf"Type the device's name \({name(dev)}\) to erase it: ")
    child.sendline(name(dev))
    child.expect(r"Type 'erase [^']+' to write it anyway: ")
    with open(image, "r+b") as f:
        f.truncate(48 * MIB)
    run("losetup", "--set-capacity", dev)
    child.sendline(f"erase {name(dev)}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4, child.before
    assert "Traceback" not in child.before
    assert f"lifeboat: {dev} changed since it was chosen (another stick?); start again" in child.before
    assert file_hash(image, 32 * MIB) == before and read(image, 32 * MIB, 16 * MIB) == bytes(16 * MIB)


def test_a_failing_mkfs_for_the_data_partition_is_exit_8(loops, hybrid_iso, tmp_path, monkeypatch):
    """The tool that makes the data partition's filesystem fails (a mkfs.ext4 that exits 1,
    found first on PATH; the stick is a real loop device): exit 8, one line naming the step and
    the tool's words, no traceback."""
    tools = tmp_path / "broken-tools"
    tools.mkdir()
    (tools / "mkfs.ext4").write_text("#!/bin/sh\necho 'mkfs.ext4: Device size reported to be zero' >&2\nexit 1\n")
    (tools / "mkfs.ext4").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    dev = loops.attach(old_stick(tmp_path / "stick.img", 96 * MIB))
    out = lifeboat(hybrid_iso, dev, "--data", "ext4", "--force", "--yes", stdin=f"erase {name(dev)}\n",
                   tmp_path=tmp_path)
    assert out.returncode == 8, out.stderr
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lifeboat: ") and "making the ext4 filesystem failed" in last \
        and "Device size reported to be zero" in last, last


def test_a_stick_that_runs_out_of_space_while_written_is_exit_7(hybrid_iso, tmp_path):
    """A fake-capacity stick: it claims 32 MiB but refuses writes past its real size with
    ENOSPC. Exit 7 (destination full), one line that says the stick is unusable as written."""
    from tests.integration.faulty_disk import faulty_disk

    backing = old_stick(tmp_path / "stick.img", 32 * MIB)
    real = hybrid_iso.stat().st_size // 2
    with faulty_disk(backing, tmp_path / "mnt", "--fail-writes-after", str(real), "--errno", "ENOSPC") as stick:
        out = lifeboat(hybrid_iso, stick, "--yes", tmp_path=tmp_path)
    assert out.returncode == 7, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    m = re.fullmatch(rf"lifeboat: no space left writing {re.escape(str(stick))} at byte (\d+) \(writing the image\); "
                     r"the stick is incomplete and will not boot; write it again, and if it fails at the same "
                     r"place the stick may be fake \(smaller than it claims\)", lines[-1])
    assert m, lines[-1]
    assert real - 4 * MIB <= int(m[1]) <= real      # where the write the stick refused began
    assert "Done:" not in out.stdout
