"""Disk-image makers for everyone's tests (no root needed): real partition tables in files.

`make_disk` lays partitions out one after another from 1 MiB, 1 MiB-aligned, writes the table
with sfdisk (a 4Kn GPT, which sfdisk 2.38 cannot put in a file, with recovery.probe.gpt),
fills the MBR boot code and the post-table gap with recognisable bytes, copies filesystem
images in, and returns what read_layout sees.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from recovery.model.layout import Layout, PartitionEntry
from recovery.probe import gpt
from recovery.probe.table import read_layout

MiB = 1024 * 1024

# GPT type GUIDs
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
WIN_RECOVERY = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LINUX_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"

BOOT_CODE_SEED = b"lifeboat boot code"
GAP_SEED = b"lifeboat core.img"
GAP_FILL = 48 * 1024     # like a GRUB core.img: tens of KiB, then zeros up to the first partition


@dataclass(frozen=True)
class PartSpec:
    size: int | None            # bytes; None = the rest of the disk
    type: str                   # GPT type GUID or MBR id ("83", "7", "c", "ef")
    name: str | None = None     # GPT only
    content: str | None = None  # a filesystem image file copied in (dd conv=notrunc)
    bootable: bool = False      # MBR active flag
    logical: bool = False       # MBR: inside the extended partition
    attrs: str | None = None    # GPT attribute bits, sfdisk syntax


def windows_gpt_parts(data_size: int = 24 * MiB) -> list[PartSpec]:
    """The layout Windows Setup makes on a UEFI disk (scaled down)."""
    return [
        PartSpec(8 * MiB, ESP, name="EFI system partition", attrs="GUID:63"),
        PartSpec(2 * MiB, MSR, name="Microsoft reserved partition", attrs="GUID:63"),
        PartSpec(data_size, BASIC_DATA, name="Basic data partition"),
        PartSpec(4 * MiB, WIN_RECOVERY, attrs="RequiredPartition GUID:63"),
    ]


def mbr_logical_parts() -> list[PartSpec]:
    """A BIOS-era MBR: an active primary, then an extended partition holding three logicals."""
    return [
        PartSpec(8 * MiB, "83", bootable=True),
        PartSpec(4 * MiB, "7"),
        PartSpec(6 * MiB, "83", logical=True),
        PartSpec(4 * MiB, "82", logical=True),
        PartSpec(5 * MiB, "c", logical=True),
    ]


def pattern(seed: bytes, size: int) -> bytes:
    """Deterministic non-zero-looking bytes, different for every seed (so areas are recognisable)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


def plan_entries(size: int, table: str, parts: list[PartSpec]) -> list[PartitionEntry]:
    """Where each spec goes: 1 MiB-aligned, in order; logicals inside one extended container."""
    end_limit = size - (1 * MiB if table == "gpt" else 0)   # leave room for the backup GPT
    entries: list[PartitionEntry] = []
    cursor = 1 * MiB
    number = 0
    logical_number = 4
    extended_start = None
    for spec in parts:
        if spec.logical:
            if table != "dos":
                raise ValueError("logical partitions exist only on MBR")
            if extended_start is None:
                extended_start = cursor
            cursor += 1 * MiB                      # room for the EBR, keeping 1 MiB alignment
            logical_number += 1
            num, kind = logical_number, "logical"
        else:
            if extended_start is not None:
                raise ValueError("put the logical partitions last")
            number += 1
            num, kind = number, "primary"
        length = spec.size if spec.size is not None else end_limit - cursor
        entries.append(PartitionEntry(number=num, start=cursor, size=length, type=spec.type, name=spec.name,
                                      attrs=spec.attrs, bootable=spec.bootable, kind=kind))
        cursor = -(-(cursor + length) // MiB) * MiB
    if extended_start is not None:
        last_end = max(e.end for e in entries if e.kind == "logical")
        entries.append(PartitionEntry(number=number + 1, start=extended_start, size=last_end - extended_start,
                                      type="5", kind="extended"))
    if any(e.end > end_limit for e in entries):
        raise ValueError("the partitions do not fit on the disk")
    return entries


def _sfdisk_script(table: str, entries: list[PartitionEntry], ss: int) -> str:
    lines = [f"label: {table}", "unit: sectors", ""]
    for e in sorted(entries, key=lambda e: (e.kind == "logical", e.number)):
        fields = [f"start={e.start // ss}", f"size={e.size // ss}", f"type={e.type}"]
        if e.name:
            fields.append(f'name="{e.name}"')
        if e.attrs:
            fields.append(f'attrs="{e.attrs}"')
        if e.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def make_disk(path, size: int, table: str, parts: list[PartSpec], sector_size: int = 512,
              boot_code: bool = True) -> Layout:
    """Create a disk image at `path` with a real partition table ("gpt", "dos" or "none")."""
    path = Path(path)
    with open(path, "wb") as f:
        f.truncate(size)
    entries = plan_entries(size, table, parts) if table != "none" else []
    if table == "gpt" and sector_size != 512:
        # First usable LBA at 1 MiB, as sfdisk and parted choose on a real 4Kn disk.
        layout = Layout(table="gpt", sector_size=sector_size, disk_size=size, first_lba=MiB // sector_size,
                        partitions=tuple(entries))
        _pwrite(path, gpt.build_gpt(layout))
    elif table in ("gpt", "dos"):
        if sector_size != 512:
            raise ValueError("only GPT can be made with 4096-byte sectors in a file")
        subprocess.run(["sfdisk", "--quiet", str(path)], input=_sfdisk_script(table, entries, sector_size),
                       text=True, capture_output=True, check=True)
    elif table != "none":
        raise ValueError(f"unknown table {table!r}")
    if boot_code and table != "none":
        gap_start = sector_size if table == "dos" else 2 * sector_size + 128 * 128
        gap_start = -(-gap_start // sector_size) * sector_size
        first = min((e.start for e in entries), default=1 * MiB)
        _pwrite(path, [(0, pattern(BOOT_CODE_SEED, 440)),
                       (gap_start, pattern(GAP_SEED, min(GAP_FILL, first - gap_start)))])
    for spec, entry in zip(parts, [e for e in entries if e.kind != "extended"]):
        if spec.content:
            subprocess.run(["dd", f"if={spec.content}", f"of={path}", "bs=1M", "conv=notrunc,sparse",
                            f"seek={entry.start}", "oflag=seek_bytes", "status=none"], check=True)
    return read_layout(str(path))


def _pwrite(path: Path, regions) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in regions:
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
