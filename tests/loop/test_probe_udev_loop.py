"""The with-udev path: properties, settle and partition nodes while a real udev daemon runs.

Starts systemd-udevd in the foreground (so it is stopped by its own pid) unless one already
runs; only the loop device this test made is triggered. When the test started the daemon, it
stops it and removes only the database entries and links that appeared while it ran (what was
there before is kept), so the machine is back to how the test found it.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from recovery.apply.table import partition_path, write_layout
from recovery.probe import classify
from recovery.probe.disks import describe, read_record, udev_running
from recovery.probe.table import read_layout
from tests.conftest import require
from tests.diskimages import ESP, LINUX_FS, MiB, PartSpec, make_disk, windows_gpt_parts

pytestmark = pytest.mark.loop

UDEVD = "/lib/systemd/systemd-udevd"


@pytest.fixture
def udev():
    if udev_running():
        yield                                   # someone else's daemon: use it, leave it alone
        return
    require(os.path.exists(UDEVD), "systemd-udevd is not installed")
    before = _entries(UDEV_TREES)
    daemon = subprocess.Popen([UDEVD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not udev_running():
            assert daemon.poll() is None, "systemd-udevd exited at start"
            assert time.monotonic() < deadline, "systemd-udevd did not open its control socket"
            time.sleep(0.05)
        yield
    finally:
        subprocess.run(["udevadm", "settle", "--timeout=10"], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=10)
        _remove_new(UDEV_TREES, before)
        assert daemon.returncode is not None and not udev_running(), "the udev daemon this test started still runs"


UDEV_TREES = ("/run/udev", "/dev/disk")


def _entries(tops) -> set[str]:
    """Every path under `tops` (the tops included) as it is now."""
    found = set()
    for top in tops:
        if not os.path.lexists(top):
            continue
        found.add(top)
        for where, dirs, files in os.walk(top):
            found.update(os.path.join(where, n) for n in dirs + files)
    return found


def _remove_new(tops, before: set[str]) -> None:
    """Delete what appeared since `before`, deepest first; a folder only once it is empty."""
    for path in sorted(_entries(tops) - before, key=lambda p: p.count("/"), reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.rmdir(path)
            except OSError:
                pass                          # something not ours is still inside
        else:
            os.unlink(path)


def trigger(dev: str) -> None:
    name = os.path.basename(dev)
    paths = [f"/sys/class/block/{name}"] + [f"/sys/class/block/{name}/{e}" for e in os.listdir(f"/sys/class/block/{name}")
                                            if e.startswith(name)]
    subprocess.run(["udevadm", "trigger", "--action=add", *paths], check=True, capture_output=True)
    subprocess.run(["udevadm", "settle", "--timeout=10"], check=True, capture_output=True)


def test_describe_and_write_with_udev(tmp_path, loops, udev):
    fs = tmp_path / "ext.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "udevroot", str(fs), "8M"], check=True, capture_output=True)
    img = tmp_path / "disk.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(4 * MiB, ESP), PartSpec(8 * MiB, LINUX_FS, content=str(fs))])
    dev = loops.attach(img)
    trigger(dev)

    record = read_record(os.path.basename(dev))
    assert record["udev"].get("ID_PART_TABLE_TYPE") == "gpt"
    assert "blkid" not in record, "with udev data there is no need to probe"
    root = next(p for p in record["partitions"] if p["name"].endswith("p2"))
    assert root["udev"].get("ID_FS_TYPE") == "ext4" and "blkid" not in root
    info = describe(dev)
    assert info.table == "gpt" and info.partitions[1].label == "udevroot"
    assert info.partitions[1].type == LINUX_FS and classify.transport_of(record) == "loop"

    src = tmp_path / "src.img"
    layout = make_disk(src, 32 * MiB, "gpt", windows_gpt_parts(data_size=4 * MiB))
    write_layout(dev, layout, [])               # re-read + udevadm settle + wait for nodes
    assert read_layout(dev).partitions == layout.partitions
    assert all(os.path.exists(partition_path(dev, p.number)) for p in layout.partitions)
