"""write-usb's rules on recorded disk records: which disks are sticks, which are refused and why,
what the plan says will be destroyed. Nothing here opens a disk. The stick is a USB-storage
disk of the live system under QEMU (tests/vm/record_probe_data.py), mounted where a desktop
mounts one."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from recovery import usbstick
from recovery.errors import RefusedError, UsageError
from recovery.probe import classify

DATA = Path(__file__).resolve().parent.parent / "data"
MIB = 1024 * 1024


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def stick_record(**attrs) -> dict:
    live = recorded("probe_qemu_live_udev.json")["records"]
    record = copy.deepcopy(next(r for r in live if r["name"] == "sdb"))
    record["attrs"].update(attrs)
    return record


def unmounted(info):
    return replace(info, partitions=tuple(replace(p, mountpoints=()) for p in info.partitions))


@pytest.fixture
def stick():
    return unmounted(classify.disk_info(stick_record()))


@pytest.fixture
def fake_iso(tmp_path) -> Path:
    """Enough of an ISO for the checks: the ISO 9660 magic where it belongs, 3 MiB long."""
    iso = tmp_path / "lifeboat.iso"
    data = bytearray(3 * MIB)
    data[usbstick.ISO_MAGIC_AT:usbstick.ISO_MAGIC_AT + 5] = b"CD001"
    iso.write_bytes(data)
    return iso


def test_usb_stick_is_listed_with_what_is_on_it():
    info = classify.disk_info(stick_record())
    assert usbstick.is_usb_stick(info) and usbstick.override_reason(info) is None
    line = usbstick.describe_line(info)
    assert line == ("/dev/sdb  128.0 MiB  usb  removable  QEMU QEMU HARDDISK  serial REC-USB-0003"
                    ' — #1 127.0 MiB vfat "BACKUPS" mounted on /media/anna/BACKUPS')


def test_only_removable_usb_disks_are_candidates():
    stick = classify.disk_info(stick_record())
    virtio = classify.disk_info(recorded("probe_virtio_vda.json"))
    loop = classify.disk_info(recorded("probe_loop_gpt_udev.json"))
    usb_ssd = classify.disk_info(stick_record(removable="0"))
    assert usbstick.candidates([virtio, stick, loop, usb_ssd]) == [stick]
    # The stick the live system runs from is never offered.
    assert usbstick.candidates([replace(stick, is_system=True)]) == []


def test_override_reasons_say_what_the_disk_is():
    virtio = classify.disk_info(recorded("probe_virtio_vda.json"))
    loop = classify.disk_info(recorded("probe_loop_gpt_udev.json"))
    usb_ssd = classify.disk_info(stick_record(removable="0"))
    assert usbstick.override_reason(virtio) == "/dev/vda is not a USB disk (it is on virtio)"
    assert usbstick.override_reason(loop) == "/dev/loop0 is not a USB disk (it is on loop)"
    assert usbstick.override_reason(usb_ssd) == (
        "/dev/sdb is on USB but does not say it is removable (a USB hard disk or SSD?)")


def test_system_disk_refused_before_anything_else(fake_iso):
    virtio = classify.disk_info(recorded("probe_virtio_vda.json"))
    assert virtio.is_system
    for force in (False, True):
        with pytest.raises(RefusedError) as exc:
            usbstick.plan_stick(str(fake_iso), virtio.path, force=force, disk=virtio)
        assert exc.value.message == (
            "/dev/vda holds the running system (or the medium it started from); it is never written")


def test_hard_refusals(stick):
    assert usbstick.hard_refusal(stick, 3 * MIB) is None
    assert usbstick.hard_refusal(replace(stick, read_only=True), 3 * MIB) == (
        "/dev/sdb is read-only (is the stick's write-protect switch on?)")
    assert usbstick.hard_refusal(stick, 3 * MIB, image_disk="/dev/sdb") == (
        "/dev/sdb holds the image file being written; copy the image elsewhere first")
    assert usbstick.hard_refusal(replace(stick, size=2 * MIB), 3 * MIB) == (
        "/dev/sdb is too small: 2.0 MiB, but the image (3.0 MiB) needs 3.0 MiB")
    # exactly enough: the image, the smallest data partition, the backup GPT's MiB
    plan_ok = replace(stick, size=68 * MIB)
    assert usbstick.hard_refusal(plan_ok, 3 * MIB, data="exfat") is None
    assert usbstick.hard_refusal(replace(stick, size=40 * MIB), 3 * MIB, data="exfat") == (
        "/dev/sdb is too small: 40.0 MiB, but the image (3.0 MiB) and a data partition of at least "
        "64.0 MiB need 68.0 MiB")


def test_smallest_stick_still_gets_the_smallest_data_partition(stick, fake_iso):
    smallest = replace(stick, size=usbstick.needed_size(3 * MIB, "ext4"))
    plan = usbstick.plan_stick(str(fake_iso), smallest.path, data="ext4", disk=smallest)
    assert plan.data_size >= usbstick.MIN_DATA
    for odd in (40, 62, 63, 64, 100, 2047):          # sizes that are not whole MiB
        uneven = replace(stick, size=80 * MIB + odd * 512)
        plan = usbstick.plan_stick(str(fake_iso), uneven.path, data="ext4", disk=uneven)
        assert plan.data_offset + plan.data_size <= uneven.size - 63 * 512


def test_4kn_stick_gets_no_data_partition(stick, fake_iso):
    four_k = replace(stick, logical_sector=4096)
    with pytest.raises(RefusedError, match="4096-byte sectors"):
        usbstick.plan_stick(str(fake_iso), four_k.path, data="exfat", disk=four_k)
    assert usbstick.plan_stick(str(fake_iso), four_k.path, disk=four_k).data_fs is None


def test_mounted_stick_refused_with_the_command_to_unmount(fake_iso):
    mounted = classify.disk_info(stick_record())
    with pytest.raises(RefusedError) as exc:
        usbstick.plan_stick(str(fake_iso), mounted.path, disk=mounted)
    assert exc.value.message == ("/dev/sdb is in use: /dev/sdb1 on /media/anna/BACKUPS; "
                                 "unmount it first: umount /media/anna/BACKUPS")


def test_non_usb_needs_force(fake_iso):
    loop = classify.disk_info(recorded("probe_loop_gpt_udev.json"))
    with pytest.raises(RefusedError, match=r"is not a USB disk \(it is on loop\); only removable USB sticks "
                                           r"are written\. If you are sure, add --force"):
        usbstick.plan_stick(str(fake_iso), loop.path, disk=loop)
    plan = usbstick.plan_stick(str(fake_iso), loop.path, force=True, disk=loop)
    assert plan.override == "/dev/loop0 is not a USB disk (it is on loop)"
    assert plan.override_phrase == "erase loop0"
    assert plan.lines()[1] == "WARNING: /dev/loop0 is not a USB disk (it is on loop)."
    with pytest.raises(RefusedError, match="needs a second confirmation"):
        usbstick.write_stick(plan)          # refused before the disk is even looked at again


def test_plan_lists_what_will_be_destroyed_and_the_data_partition(stick, fake_iso):
    plan = usbstick.plan_stick(str(fake_iso), stick.path, data="exfat", disk=stick)
    assert plan.override is None and plan.name == "sdb"
    assert plan.data_offset == 3 * MIB                           # the next MiB after the image
    assert plan.data_offset + plan.data_size <= stick.size - 63 * 512
    assert plan.data_size % MIB == 0 and stick.size - (plan.data_offset + plan.data_size) < 2 * MIB
    assert plan.lines() == [
        "Target: /dev/sdb  128.0 MiB  usb  QEMU QEMU HARDDISK  serial REC-USB-0003",
        "Everything on it will be destroyed:",
        '  #1 127.0 MiB vfat "BACKUPS"',
        "Write lifeboat.iso (3.0 MiB), then read it back to check it.",
        f"Then add an exfat partition LIFEBOATDAT of {usbstick.human_size(plan.data_size)} holding an empty "
        "Lifeboat repository in lifeboat/.",
    ]
    json.dumps(plan.to_json())


def test_data_labels_fit_their_filesystems():
    assert len(usbstick.DATA_LABELS["exfat"]) <= 11          # exFAT's limit
    assert len(usbstick.DATA_LABELS["ext4"]) <= 16
    assert usbstick.DATA_PARTLABEL == usbstick.DATA_LABELS["ext4"] == "LIFEBOAT-DATA"
    from recovery.discover import NEW_REPO_FOLDER, STICK_DATA_LABELS
    assert usbstick.REPO_FOLDER == NEW_REPO_FOLDER
    assert set(usbstick.DATA_LABELS.values()) == STICK_DATA_LABELS


def test_image_checks(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        usbstick.check_image(str(tmp_path / "missing.iso"))
    odd = tmp_path / "odd.iso"
    data = bytearray(40000)
    data[usbstick.ISO_MAGIC_AT:usbstick.ISO_MAGIC_AT + 5] = b"CD001"
    odd.write_bytes(data)
    with pytest.raises(UsageError, match="not a whole number of 512-byte sectors"):
        usbstick.check_image(str(odd))
    with pytest.raises(UsageError, match="is not an image file"):
        usbstick.check_image(str(tmp_path))


def test_plan_warns_when_lifeboat_backups_would_be_lost(stick, fake_iso):
    part = replace(stick.partitions[0], number=4, fs="exfat", label="LIFEBOATDAT")
    old_lifeboat = replace(stick, partitions=(part,))
    lines = usbstick.plan_stick(str(fake_iso), stick.path, disk=old_lifeboat).lines()
    assert ("WARNING: partition 4 (LIFEBOATDAT) is a Lifeboat data partition: the backups on it will be lost. "
            "Copy them elsewhere first.") in lines
