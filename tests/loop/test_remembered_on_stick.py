"""Remembered network locations on the live system are kept on the stick's data partition, so
they survive a reboot: a real stick image written by write-usb (ISO + data partition) on a loop
device stands in for the stick the live system booted from. Read-only, absent, and already
mounted data partitions are each tried; the file never holds a secret."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from recovery import remembered
from tests.conftest import run
from tests.loop.test_usbstick import MIB, hybrid_iso, lifeboat, name, old_stick  # noqa: F401 - fixture
from tui import netlocations

pytestmark = pytest.mark.loop


@pytest.fixture
def live(monkeypatch, tmp_path):
    """The live system's setting: LIFEBOAT_LIVE=1, the data folder in "RAM" (a folder of the
    test's), the medium named in a file of the test's own."""
    monkeypatch.setenv("LIFEBOAT_LIVE", "1")
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(tmp_path / "ram"))
    medium = tmp_path / "medium-device"
    monkeypatch.setattr(remembered, "MEDIUM_FILE", medium)
    return medium


def write_stick(loops, iso, tmp_path, fs: str | None) -> str:
    """A stick made by write-usb (with a data partition of `fs`, or none); its loop device."""
    image = old_stick(tmp_path / f"stick-{fs}.img", 160 * MIB)
    dev = loops.attach(image)
    args = ["--data", fs] if fs else []
    out = lifeboat(iso, dev, *args, "--force", "--yes", stdin=f"erase {name(dev)}\n", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    subprocess.run(["partx", "-a", dev], capture_output=True)        # the new table, as at boot
    return dev


def on_stick(dev: str, tmp_path: Path) -> dict | None:
    """The locations file as it is on the stick's partition 4 (mounted read-only here)."""
    where = tmp_path / "look"
    where.mkdir(exist_ok=True)
    fs = run("blkid", "-p", "-o", "value", "-s", "TYPE", f"{dev}p4").stdout.strip()
    run("mount.exfat-fuse" if fs == "exfat" else "mount", "-o", "ro", f"{dev}p4", where)
    try:
        path = where / remembered.FOLDER / netlocations.FILE_NAME
        return json.loads(path.read_text()) if path.exists() else None
    finally:
        run("umount", where)


def mounted(dev: str) -> bool:
    return f"{dev}p4 " in Path("/proc/mounts").read_text()


@pytest.mark.parametrize("fs", ["ext4", "exfat"])
def test_locations_are_kept_on_the_sticks_data_partition(loops, hybrid_iso, tmp_path, live, fs):
    dev = write_stick(loops, hybrid_iso, tmp_path, fs)
    live.write_text(dev + "\n")
    assert remembered.stick_data_partition().path == f"{dev}p4"
    assert netlocations.remember("sftp://backup@nas.example/srv/pcs") is None
    assert netlocations.remember("s3://office/pcs", "http://10.0.0.5:9000") is None
    assert not mounted(dev)                                    # mounted only for the write
    assert not (tmp_path / "ram" / netlocations.FILE_NAME).exists()
    saved = on_stick(dev, tmp_path)
    assert [e["url"] for e in saved["locations"]] == ["s3://office/pcs", "sftp://backup@nas.example:22/srv/pcs"]
    assert saved["locations"][0]["endpoint"] == "http://10.0.0.5:9000"
    # The next boot: RAM is empty again; the list comes back from the stick.
    assert [r.url for r in netlocations.load()] == ["s3://office/pcs", "sftp://backup@nas.example:22/srv/pcs"]
    assert not mounted(dev)
    # Mounted read-write already (a backup into the stick's repository): written where it is.
    where = tmp_path / "in-use"
    where.mkdir()
    if fs == "ext4":
        run("mount", f"{dev}p4", where)
    else:
        run("mount.exfat-fuse", f"{dev}p4", where)                 # this kernel has no exFAT driver
    try:
        assert netlocations.remember("nfs://filer.example/exports/pcs") is None
        kept = json.loads((where / remembered.FOLDER / netlocations.FILE_NAME).read_text())
        assert kept["locations"][0]["url"] == "nfs://filer.example/exports/pcs"
    finally:
        run("umount", where)


def test_a_read_only_stick_keeps_them_in_ram_with_a_note(loops, hybrid_iso, tmp_path, live):
    dev = write_stick(loops, hybrid_iso, tmp_path, "ext4")
    live.write_text(dev)
    assert netlocations.remember("sftp://backup@nas.example/srv/pcs") is None     # on the stick
    dev = write_stick_read_only(loops, dev, tmp_path)
    live.write_text(dev)
    note = netlocations.remember("smb://office;anna@nas.example/backups/pcs")
    assert note and note.startswith("kept until the next reboot only: the stick's data partition cannot be written")
    assert "\n" not in note
    ram = json.loads((tmp_path / "ram" / netlocations.FILE_NAME).read_text())
    assert ram["locations"][0]["url"] == "smb://office;anna@nas.example/backups/pcs"
    # Both are listed: the one in RAM (newer) and the one on the stick.
    assert [r.url for r in netlocations.load()] == ["smb://office;anna@nas.example/backups/pcs",
                                                    "sftp://backup@nas.example:22/srv/pcs"]
    assert on_stick(dev, tmp_path)["locations"][0]["url"] == "sftp://backup@nas.example:22/srv/pcs"   # unchanged
    assert not mounted(dev)


def write_stick_read_only(loops, dev: str, tmp_path: Path) -> str:
    """The same stick attached again read-only (its write-protect switch)."""
    image = Path(run("losetup", "-n", "-O", "BACK-FILE", dev).stdout.strip())
    subprocess.run(["partx", "-d", dev], capture_output=True)
    run("losetup", "-d", dev)
    loops.attached.remove(dev)
    ro = loops.attach(image, read_only=True)
    return ro


def test_without_a_data_partition_or_medium_ram_with_a_note(loops, hybrid_iso, tmp_path, live, monkeypatch):
    dev = write_stick(loops, hybrid_iso, tmp_path, None)
    live.write_text(dev)
    note = netlocations.remember("nfs://filer.example/exports/pcs")
    assert note == "kept until the next reboot only: the stick Lifeboat started from has no data partition"
    assert [r.url for r in netlocations.load()] == ["nfs://filer.example/exports/pcs"]
    live.unlink()                                            # no medium known (booted some other way)
    assert netlocations.remember("nfs://filer.example/exports/other").startswith("kept until the next reboot")
    # Off the live system the data folder is the place: no note.
    monkeypatch.delenv("LIFEBOAT_LIVE")
    assert netlocations.remember("nfs://filer.example/exports/third") is None
    assert [r.url for r in netlocations.load()][0] == "nfs://filer.example/exports/third"
