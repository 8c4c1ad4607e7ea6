"""A drive that drops out mid-write. When an NVMe or USB drive stops answering, the kernel
resets or detaches it and gives the block device a smaller size (often 0); writes inside the
size the restore opened then fail with ENOSPC. That is a vanished target, not a full one, and
the error must say so. A loop device whose capacity is re-read after its file shrank is the
same event on a real block device."""

from __future__ import annotations

import subprocess

import pytest

from recovery.diskio import Disk
from recovery.errors import DiskError, NoSpaceError

pytestmark = pytest.mark.loop

MiB = 1 << 20


def test_a_drive_that_shrinks_under_a_write_is_reported_as_stopped_not_full(tmp_path, loops):
    image = tmp_path / "drive.img"
    image.write_bytes(b"\0" * (64 * MiB))
    dev = loops.attach(image)
    with Disk(dev, writable=True) as disk:
        assert disk.size == 64 * MiB
        disk.write(b"x" * MiB, 40 * MiB, "partition 2")
        disk.sync()
        with open(image, "r+b") as f:
            f.truncate(16 * MiB)
        subprocess.run(["losetup", "--set-capacity", dev], check=True)
        with pytest.raises(DiskError) as caught:
            disk.write(b"y" * MiB, 40 * MiB, "partition 2")
    message = str(caught.value)
    assert not isinstance(caught.value, NoSpaceError)
    assert message.startswith(f"the target {dev} stopped answering while writing (partition 2)")
    assert f"reports {16 * MiB} bytes instead of {64 * MiB}" in message
    assert "\n" not in message


def test_a_write_past_the_end_of_a_drive_that_kept_its_size_is_still_no_space(tmp_path, loops):
    image = tmp_path / "drive.img"
    image.write_bytes(b"\0" * (8 * MiB))
    dev = loops.attach(image)
    with Disk(dev, writable=True) as disk:
        with pytest.raises(NoSpaceError) as caught:
            disk.write(b"z" * MiB, 8 * MiB, "partition 1")
    assert str(caught.value).startswith(f"no space left writing {dev} at byte {8 * MiB} (partition 1)")
