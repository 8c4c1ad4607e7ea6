"""A raw disk image (a `dd` of a whole disk, or of one partition) as a source.

A plain raw image *is* a disk, so it is read the way a backup reads a disk: the partition
table through recovery.probe.table, the boot areas through recovery.probe.bootarea, and each
partition's used-block map through recovery.fs (what a filesystem does not use is neither
proven nor written). An image of a single partition has no table: it is a whole-disk
filesystem (partition 0), restored as such.

Virtual disks (recovery.sources.virtual) and compressed raw images (recovery.sources.
compressed) become a raw file first and are then this source.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from datetime import datetime, timezone

from recovery.errors import DamageError, DiskError, LifeboatError
from recovery.fs import probe_partition
from recovery.model.layout import PartitionEntry
from recovery.probe.bootarea import read_boot_areas
from recovery.probe.table import read_layout
from recovery.repo.format import blob_id
from recovery.sources.base import Damage, Source, SourcePartition, used_steps
from recovery.units import human_size

RAW_SUFFIXES = (".img", ".dd", ".raw", ".bin")


class FileSlice:
    """One partition of a raw image file: pread at its offset, unused bytes read as zeros."""

    def __init__(self, fd: int, path: str, start: int, size: int, used: list[tuple[int, int]]):
        self._fd, self._path, self.start, self.size = fd, path, start, size
        self._used = used
        self._starts = [o for o, _ in used]

    def used_ranges(self) -> list[tuple[int, int]]:
        return self._used

    def read_raw(self, offset: int, length: int) -> bytes:
        """The bytes as they are in the image, free space included."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        pos = offset
        while pos < end:
            try:
                data = os.pread(self._fd, end - pos, self.start + pos)
            except OSError as exc:
                raise DamageError(f"{self._path} cannot be read at byte {self.start + pos}: {exc.strerror}") from exc
            if not data:
                raise DamageError(f"{self._path} ends at byte {self.start + pos}, inside the disk it holds "
                                  "(the image is truncated)")
            out += data
            pos += len(data)
        return bytes(out)

    def read(self, offset: int, length: int) -> bytes:
        raw = self.read_raw(offset, length)
        end = offset + len(raw)
        out = bytearray(len(raw))           # free space reads as zeros: copy the used ranges in
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while i < len(self._used) and self._used[i][0] < end:
            u_off, u_len = self._used[i]
            a, b = max(u_off, offset), min(u_off + u_len, end)
            if b > a:
                out[a - offset : b - offset] = raw[a - offset : b - offset]
            i += 1
        return bytes(out)


class RawDiskSource(Source):
    """A raw disk or partition image file. `kind`, `created` and `id` may be given by the
    source that exposed the file (a VHDX is "VHDX image", dated by its own file)."""

    kind = "raw disk image"

    def __init__(self, path: str, *, kind: str | None = None, shown: str | None = None,
                 created: str | None = None, ident: str | None = None):
        self.path = path                     # the raw bytes (maybe an exported or decompressed copy)
        self.location = shown or path        # what the person named
        if kind:
            self.kind = kind
        st = os.stat(self.location)
        self.name = _name_of(self.location)
        self.created = created or datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.id = ident or blob_id(f"{os.path.realpath(self.location)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hex()
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DiskError(f"{path} cannot be opened: {exc.strerror}") from exc
        self.size = os.fstat(self._fd).st_size
        try:
            self._probe()
        except LifeboatError as exc:
            self.close()
            if self.path != self.location:     # name the person's file, not the exported copy
                exc.message = exc.message.replace(self.path, self.location)
                exc.args = (exc.message,)
            raise

    def _probe(self) -> None:
        path = self.path
        self.layout = read_layout(path)
        if self.layout.table == "none":
            entries = (PartitionEntry(number=0, start=0, size=self.size, type=""),)
        else:
            entries = self.layout.data_partitions()
        self.warnings: list[str] = []
        self._slices: dict[int, FileSlice] = {}
        self.partitions = []
        for e in entries:
            if e.start + e.size > self.size:
                raise DamageError(f"{self.location} is truncated: partition {e.number} ends at byte "
                                  f"{e.start + e.size}, the image at {self.size}")
            whole = FileSlice(self._fd, self.location, e.start, e.size, [(0, e.size)])
            info = probe_partition(whole.read_raw, e.size)
            self.warnings += [f"partition {e.number}: {w}" if e.number else w for w in info.warnings]
            used = [tuple(r) for r in info.used]
            self._slices[e.number] = FileSlice(self._fd, self.location, e.start, e.size, used)
            self.partitions.append(SourcePartition(e.number, e.start, e.size, info.fs, info.label, info.uuid,
                                                   info.used_bytes, info.whole))

    def boot_areas(self) -> list[tuple[int, bytes]]:
        return read_boot_areas(self.path, self.layout)

    def reader(self, number: int) -> FileSlice:
        return self._slices[number]

    def extents(self, number: int):
        piece = self._slices[number]
        for offset, n in used_steps(piece):
            yield offset, piece.read_raw(offset, n)

    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        """Every used byte read once: a truncated or unreadable image is named before a target
        is touched. A raw image carries no checksums; a virtual disk's own checks run first
        (recovery.sources.virtual)."""
        total = sum(p.used_bytes for p in self.partitions)
        done = 0
        for part in self.partitions:
            piece = self._slices[part.number]
            for offset, n in used_steps(piece):
                try:
                    piece.read_raw(offset, n)
                except DamageError as exc:
                    return [Damage(part.number, offset, n, exc.message)]
                done += n
                if on_progress:
                    on_progress(done, total)
        return []

    def heading(self) -> str:
        return f"{self.kind} {self.location}, saved {self.created}"

    def describe(self) -> list[str]:
        lines = [f"{self.heading()}, {human_size(self.size)} disk, {_table_words(self.layout.table)}"]
        for p in self.partitions:
            where = "whole-disk filesystem" if p.number == 0 else f"partition {p.number}"
            bits = [p.fs or "unknown filesystem", f"“{p.label}”" if p.label else None,
                    human_size(p.size), f"{human_size(p.used_bytes)} used" + (" (copied whole)" if p.whole else "")]
            lines.append(f"  {where}: " + ", ".join(b for b in bits if b))
        lines += [f"  note: {w}" for w in self.warnings]
        return lines

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1


def _table_words(table: str) -> str:
    return {"gpt": "GPT partition table", "dos": "MBR partition table"}.get(table, "no partition table")


def _name_of(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".gz", ".zst", ".xz"):
        base = base.removesuffix(suffix)
    root, ext = os.path.splitext(base)
    return root if ext else base


def open_raw(path: str) -> RawDiskSource | None:
    """A raw image file named .img/.dd/.raw (anything not a known container), else None."""
    if os.path.isfile(path) and path.lower().endswith(RAW_SUFFIXES):
        return RawDiskSource(path)
    return None
