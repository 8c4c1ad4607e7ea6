"""The raw bytes booting needs that a partition-table writer does not recreate.

Two regions: the MBR boot code (bytes 0..440, before the disk signature and the partition
entries) and the gap between the end of the table structures and the first partition, where
GRUB's core.img lives on BIOS disks (and some vendors' tools hide data). The gap is capped and
its all-zero tail dropped, so a typical disk costs a few hundred KiB at most.
"""

from __future__ import annotations

import os

from recovery.errors import DiskError
from recovery.model.layout import Layout
from recovery.probe import gpt

MBR_CODE_SIZE = 440          # bytes 440..446 are the disk signature, 446..512 the table
GAP_CAP = 32 * 1024 * 1024


def table_end(layout: Layout, primary_entries_end: int | None = None) -> int:
    """Byte offset where the table's own structures at the start of the disk end.

    MBR: after sector 0. GPT: after the primary entry array (from the header when known,
    else the standard 128 entries of 128 bytes at LBA 2).
    """
    ss = layout.sector_size
    if layout.table == "dos":
        return ss
    if primary_entries_end is not None:
        return -(-primary_entries_end // ss) * ss
    return 2 * ss + -(-gpt.ENTRY_COUNT * gpt.ENTRY_SIZE // ss) * ss


def gap_range(layout: Layout, primary_entries_end: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the post-table gap, capped at GAP_CAP; None when there is no gap or table."""
    if layout.table not in ("gpt", "dos"):
        return None
    start = table_end(layout, primary_entries_end)
    if layout.partitions:
        end = min(p.start for p in layout.partitions)
    elif layout.table == "gpt" and layout.first_lba:
        end = layout.first_lba * layout.sector_size
    else:
        end = start
    end = min(end, start + GAP_CAP, layout.disk_size)
    return (start, end) if end > start else None


def _strip_zero_tail(data: bytes, granule: int) -> bytes:
    """Drop trailing zero bytes, keeping whole `granule`s so what is kept stays sector-aligned."""
    kept = len(data.rstrip(b"\0"))
    return data[: -(-kept // granule) * granule] if kept else b""


def read_boot_areas(path: str, layout: Layout) -> list[tuple[int, bytes]]:
    """[(offset, bytes)] to store with the layout: MBR boot code and the non-zero part of the gap.

    The boot-code region is always returned for a table (even all zeros) so a restore also
    clears foreign boot code on the target; the gap only when it holds something.
    """
    if layout.table not in ("gpt", "dos"):
        return []
    try:
        with open(path, "rb") as f:
            read = lambda off, n: os.pread(f.fileno(), n, off)  # noqa: E731
            entries_end = None
            if layout.table == "gpt":
                header = gpt.primary_header(read, layout.sector_size)
                entries_end = header.entries_end(layout.sector_size) if header else None
            areas = [(0, read(0, MBR_CODE_SIZE))]
            span = gap_range(layout, entries_end)
            if span:
                data = _strip_zero_tail(read(span[0], span[1] - span[0]), layout.sector_size)
                if data:
                    areas.append((span[0], data))
    except OSError as exc:
        raise DiskError(f"cannot read the boot areas of {path}: {exc.strerror}") from exc
    return areas
