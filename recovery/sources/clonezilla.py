"""Clonezilla (and Rescuezilla) image folders, as `ocs-sr savedisk` / `saveparts` write them.

A folder holds, for each saved disk DISK (see docs/FORMAT.md, "Clonezilla image folders"):

    disk, parts                  the saved disks and partitions, space-separated kernel names
    DISK-pt.sf                   `sfdisk -d`: the table with every GUID, name and attribute
    DISK-pt.parted               `parted unit s print`: gives the disk's size in sectors
    DISK-mbr                     sector 0 (boot code, signature, table)
    DISK-hidden-data-after-mbr   MBR disks: the sectors between the MBR and the first partition
    DISK-gpt-1st/-2nd, .gdisk    GPT disks: the raw GPT structures (not needed: the dump has all)
    PART.FS-ptcl-img.COMP[.aa]   partclone image of a partition, compressed, maybe in pieces
    PART.dd-img[.aa]             a partition partclone could not map: raw bytes (dd) or a
                                 partclone.dd image, compressed without saying so in the name
    swappt-PART.info             a swap partition: its UUID and LABEL (no data is saved)
    blkid.list, dev-fs.list      file systems, labels and UUIDs as blkid saw them
    MD5SUMS, SHA1SUMS, B2SUMS    `-gm`/`-gs`/`-gb`: checksums of the folder's files
    clonezilla-img               the saving log, whose first lines say when it was saved

The layout is rebuilt by letting sfdisk write the saved dump onto a sparse file the disk's
size and reading that back with recovery.probe.table.read_layout, so GUIDs, names, attributes
and numbering come out exactly as sfdisk and the rest of Lifeboat see them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator

from recovery.errors import DamageError, DiskError, ToolError, UsageError
from recovery.host import tools
from recovery.model.layout import Layout
from recovery.probe.bootarea import MBR_CODE_SIZE
from recovery.probe.table import read_layout
from recovery.sources import compressed, partclone
from recovery.sources.base import EXTENT_BYTES, Damage, Source, SourcePartition

CHECKSUM_FILES = {"MD5SUMS": "md5", "SHA1SUMS": "sha1", "B2SUMS": "blake2b", "SHA512SUMS": "sha512",
                  "SHA256SUMS": "sha256"}
SIDE_CHECKSUMS = {".md5": "md5", ".sha1": "sha1", ".b2sum": "blake2b", ".sha512": "sha512",
                  ".sha256": "sha256"}
HASH_READ = 4 * 1024 * 1024
COMPRESSION_ENDINGS = "gz|bz2|lzo|lzma|xz|lz|lrz|lz4|zst|uncomp"     # what ocs-sr names each -z
_ALGO_NAMES = {"md5": "MD5", "sha1": "SHA1", "blake2b": "BLAKE2", "sha512": "SHA512", "sha256": "SHA256"}


def is_image_folder(path: str) -> bool:
    """What ocs-sr always writes: a `parts` or `disk` list beside a saved table or image."""
    if not os.path.isdir(path):
        return False
    names = set(os.listdir(path))
    return ("disk" in names or "parts" in names) and (
        "clonezilla-img" in names or any(n.endswith("-pt.sf") or "-ptcl-img" in n or ".dd-img" in n
                                         for n in names))


def _words(folder: str, name: str) -> list[str]:
    try:
        with io.open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            return f.read().split()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DamageError(f"cannot read {name} in {folder}: {exc.strerror}") from exc


def disks(folder: str) -> list[str]:
    """The kernel names of the disks the folder holds ("sda", "nvme0n1"), in saved order."""
    saved = _words(folder, "disk")
    if saved:
        return saved
    seen: list[str] = []
    for part in _words(folder, "parts"):
        d = disk_of(part)
        if d not in seen:
            seen.append(d)
    return seen


def disk_of(part: str) -> str:
    """"sda1" -> "sda", "nvme0n1p2" -> "nvme0n1", "loop2p1" -> "loop2", "mmcblk0p1" -> "mmcblk0"."""
    match = re.fullmatch(r"(.*\d)p(\d+)", part) or re.fullmatch(r"(.*\D)(\d+)", part)
    if not match:
        raise DamageError(f"the partition name {part!r} in the image's parts list is not understood")
    return match.group(1)


def number_of(part: str) -> int:
    return int(re.search(r"(\d+)$", part).group(1))


def _partition_files(folder: str, part: str, names: list[str]) -> tuple[str, str] | None:
    """(kind, image path without piece suffix) of a saved partition: kind "partclone",
    "dd" (raw or partclone.dd inside) or "unsupported:<tool>"; None when nothing is saved."""
    prefix = part + "."
    mine = [n for n in names if n.startswith(prefix)]
    for n in mine:
        stem = n[len(prefix):]
        base = n
        # A piece: ".aa" after the compression's ending (partclone images always have one,
        # "uncomp" when none) or straight after "dd-img" (dd images never say).
        match = re.search(r"(?:-ptcl-img\.(?:" + COMPRESSION_ENDINGS + r")|\.dd-img)\.([a-z]{2,})$", n)
        if match and compressed.is_split_suffix(match.group(1)):
            base = n[:-len(match.group(1)) - 1]      # (the first piece may be the one missing)
        if "-ptcl-img" in stem and not stem.startswith("dd-"):
            return "partclone", os.path.join(folder, base)
        if stem.startswith("dd-img") or stem.startswith("dd-ptcl-img"):
            return "dd", os.path.join(folder, base)
    for n in mine:
        stem = n[len(prefix):]
        if stem.startswith("ntfs-img"):
            return "unsupported:ntfsclone", os.path.join(folder, n)
        if re.match(r"[a-z0-9]+-img|img\b", stem):
            return "unsupported:partimage", os.path.join(folder, n)
    return None


def _blkid(folder: str) -> dict[str, dict[str, str]]:
    """blkid.list as {kernel name: {TYPE, LABEL, UUID, ...}}."""
    out: dict[str, dict[str, str]] = {}
    try:
        with io.open(os.path.join(folder, "blkid.list"), encoding="utf-8", errors="replace") as f:
            for line in f:
                dev, _, rest = line.partition(":")
                out[os.path.basename(dev.strip())] = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    except FileNotFoundError:
        pass
    return out


def _info_file(path: str) -> dict[str, str]:
    try:
        with io.open(path, encoding="utf-8", errors="replace") as f:
            return dict(re.findall(r'(\w+)="?([^"\n]*)"?', f.read()))
    except FileNotFoundError:
        return {}


def _created(folder: str) -> str:
    """When it was saved: the log's first line, else the folder name's date, else its time."""
    try:
        with io.open(os.path.join(folder, "clonezilla-img"), encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        match = re.search(r"ocs-sr at (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC", head) or \
            re.search(r"saved by Clonezilla at (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC", head)
        if match:
            return f"{match.group(1)}T{match.group(2)}Z"
    except OSError:
        pass
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})-(\d{2})", os.path.basename(os.path.normpath(folder)))
    if match:
        y, m, d, h = match.groups()
        try:
            return dt.datetime(int(y), int(m), int(d), int(h)).strftime("%Y-%m-%dT%H:00:00")
        except ValueError:
            pass
    stamp = os.stat(folder).st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _disk_sectors(folder: str, disk: str) -> int | None:
    """The disk's size in sectors from parted's saved listing."""
    for name in (f"{disk}-pt.parted", f"{disk}-pt.parted.compact"):
        try:
            with io.open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                match = re.search(r"^Disk /dev/\S+: (\d+)s\s*$", f.read(), re.M)
        except FileNotFoundError:
            continue
        if match:
            return int(match.group(1))
    return None


def layout_from_dump(dump: str, disk: str, disk_size: int | None) -> Layout:
    """The Layout sfdisk's saved dump describes, on a disk of `disk_size` bytes (None: just
    large enough for the table's own end), read back the way Lifeboat reads any disk."""
    ss = int((re.search(r"^sector-size:\s*(\d+)", dump, re.M) or [0, 512])[1])
    if ss != 512:
        raise UsageError(f"this Clonezilla image was saved from a disk with {ss}-byte sectors; "
                         "only 512-byte sectors are supported")
    if disk_size is None:
        last = re.search(r"^last-lba:\s*(\d+)", dump, re.M)
        ends = [int(s) + int(n) for s, n in re.findall(r"start=\s*(\d+),\s*size=\s*(\d+)", dump)]
        disk_size = ((int(last.group(1)) + 34) if last else max(ends, default=1) + 1) * ss
    with tempfile.TemporaryDirectory(prefix="clonezilla-table-") as tmp:
        image = os.path.join(tmp, "disk")
        with io.open(image, "wb") as f:
            f.truncate(disk_size)
        lines = []
        for line in dump.splitlines():
            if line.startswith("device:"):
                continue
            # Partition lines name the saved device ("/dev/sda1 :"): rename them onto the file
            # so sfdisk keeps each partition's number (gaps included).
            m = re.match(r"^\s*(/dev/\S+)\s*:(.*)$", line)
            if m:
                line = f"{image}{number_of(m.group(1))} :{m.group(2)}"
            lines.append(line)
        result = tools.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", image],
                           stdin="\n".join(lines) + "\n", check=False)
        if result.returncode != 0:
            raise DamageError(f"the saved partition table {disk}-pt.sf is damaged: {tools.why(result)}")
        try:
            return read_layout(image)
        except DiskError as exc:
            raise DamageError(f"the saved partition table {disk}-pt.sf is damaged: {exc.message}") from None


class RawImage:
    """A dd image of a partition (compressed, maybe in pieces): every byte, nothing to skip."""

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size
        self.name = compressed.image_name(path)
        with compressed.Stream(path) as stream:
            self.compression = stream.compression
            self.pieces = stream.paths

    def used_ranges(self) -> list[tuple[int, int]]:
        return [(0, self.size)] if self.size else []

    @property
    def used_bytes(self) -> int:
        return self.size

    def extents(self, piece: int = EXTENT_BYTES,
                on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, bytes]]:
        offset = 0
        with compressed.Stream(self.path) as stream:
            while offset < self.size:
                data = stream.read(min(piece, self.size - offset))
                if not data:
                    raise DamageError(f"{stream.where} ends early: the image holds {offset} of the "
                                      f"partition's {self.size} bytes (cut short or a later piece is missing)")
                yield offset, data
                offset += len(data)
                if on_progress:
                    on_progress(stream.compressed_done)

    def compressed_size(self) -> int:
        return sum(os.path.getsize(p) for p in self.pieces)

    def reader(self, spool_dir: str | None = None):
        if self.compression == "none" and len(self.pieces) == 1:
            return _FileData(self.pieces[0], self.size)
        return partclone.SpooledData(self, spool_dir)


class _FileData:
    """An uncompressed dd image read in place."""

    def __init__(self, path: str, size: int):
        self.size = size
        self.name = os.path.basename(path)
        self._fd = os.open(path, os.O_RDONLY)

    def used_ranges(self) -> list[tuple[int, int]]:
        return [(0, self.size)] if self.size else []

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        data = os.pread(self._fd, length, offset) if length else b""
        if len(data) < length:
            raise DamageError(f"{self.name} ends early: the image is cut short")
        return data

    def close(self) -> None:
        os.close(self._fd)


class _EmptyData:
    """A partition whose contents were not saved (swap, an unformatted partition): no used bytes."""

    def __init__(self, size: int):
        self.size = size

    def used_ranges(self) -> list[tuple[int, int]]:
        return []

    def read(self, offset: int, length: int) -> bytes:
        return bytes(max(0, min(length, self.size - offset)))

    def close(self) -> None:
        pass


class _SwapHeader:
    """A swap partition, of which Clonezilla saved only the UUID and label (swappt-*.info): its
    header page as Debian's mkswap writes it with that UUID and label over the partition's
    size, so a restore puts back the signature fstab's swap entry names (as Clonezilla's own
    restore runs mkswap). The rest of the partition is free."""

    def __init__(self, size: int, uuid: str | None, label: str | None, spool_dir: str | None):
        self.size = size
        self.page = min(os.sysconf("SC_PAGE_SIZE"), size)     # mkswap writes the running kernel's page
        self._uuid, self._label, self._spool_dir = uuid, label, spool_dir
        self._header: bytes | None = None
        self._lock = threading.Lock()

    def header(self) -> bytes:
        with self._lock:
            if self._header is None:
                with tempfile.TemporaryDirectory(prefix="lifeboat-swap-", dir=self._spool_dir) as work:
                    path = os.path.join(work, "swap")
                    with io.open(path, "wb") as f:
                        f.truncate(self.size)
                    args = ["mkswap"] + (["-U", self._uuid] if self._uuid else []) \
                        + (["-L", self._label] if self._label else []) + [path]
                    res = tools.run(args, check=False)
                    if res.returncode != 0:
                        raise ToolError(f"mkswap could not make the swap header: {tools.last_line(res.stderr)}")
                    with io.open(path, "rb") as f:
                        self._header = f.read(self.page)
            return self._header

    def used_ranges(self) -> list[tuple[int, int]]:
        return [(0, self.page)]

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        head = self.header()[offset:offset + length] if offset < self.page else b""
        return head + bytes(length - len(head))

    def extents(self) -> Iterator[tuple[int, bytes]]:
        yield 0, self.header()

    def close(self) -> None:
        pass


class ClonezillaSource(Source):
    """One disk of a Clonezilla image folder."""

    def __init__(self, folder: str, disk: str | None = None, spool_dir: str | None = None):
        self.folder = os.path.abspath(folder)
        self.location = self.folder        # a restore must not write where it is read from
        self.spool_dir = spool_dir
        names = sorted(os.listdir(self.folder))
        saved_disks = disks(self.folder)
        if not saved_disks:
            raise DamageError(f"{folder}: the Clonezilla image lists no disk or partition")
        if disk is None:
            if len(saved_disks) > 1:
                raise UsageError(f"{folder} holds {len(saved_disks)} disks ({', '.join(saved_disks)}); "
                                 "say which one")
            disk = saved_disks[0]
        elif disk not in saved_disks:
            raise UsageError(f"{folder} holds no disk {disk} (it holds {', '.join(saved_disks)})")
        self.disk = disk
        self.kind = "Rescuezilla image" if "rescuezilla.description.txt" in names else "Clonezilla image"
        self.name = os.path.basename(os.path.normpath(self.folder))
        self.created = _created(self.folder)
        self.id = "clonezilla:" + self._identity(names)

        dump_name = f"{disk}-pt.sf"
        if dump_name not in names:
            raise DamageError(f"{folder}: the saved partition table {dump_name} is missing")
        with io.open(os.path.join(self.folder, dump_name), encoding="utf-8", errors="replace") as f:
            dump = f.read()
        sectors = _disk_sectors(self.folder, disk)
        self.layout = layout_from_dump(dump, disk, sectors * 512 if sectors else None)

        saved_parts = [p for p in _words(self.folder, "parts") if disk_of(p) == disk]
        # savedisk lists the disk; saveparts only some partitions, the rest were not saved.
        self.whole_disk = disk in _words(self.folder, "disk")
        blkid = _blkid(self.folder)
        self._images: dict[int, object] = {}
        self._swaps: dict[int, _SwapHeader] = {}     # swap partitions: their header, remade
        self.partitions = []
        for entry in self.layout.data_partitions():
            part = next((p for p in saved_parts if number_of(p) == entry.number), None) \
                or _kernel_name(disk, entry.number)
            found = _partition_files(self.folder, part, names) if part in saved_parts else None
            ids = blkid.get(part, {})
            swap = _info_file(os.path.join(self.folder, f"swappt-{part}.info"))
            if found and found[0].startswith("unsupported:"):
                raise UsageError(f"{os.path.basename(found[1])} was saved by "
                                 f"{found[0].split(':', 1)[1]}, which Lifeboat cannot read "
                                 "(only partclone and dd images)")
            if found and found[0] == "partclone":
                image = partclone.PartcloneImage(found[1])
                if image.size > entry.size:
                    raise DamageError(f"{image.name} holds {image.size} bytes, more than partition "
                                      f"{entry.number}'s {entry.size}")
                self._images[entry.number] = image
                fs = ids.get("TYPE") or image.fs
                whole = image.header.bitmap_mode == partclone.BM_NONE
            elif found and found[0] == "dd":
                image = self._dd_image(found[1], entry.size)
                self._images[entry.number] = image
                fs, whole = ids.get("TYPE", ""), True
            elif swap or ids.get("TYPE") == "swap":
                image, fs, whole = None, "swap", False
                ids = {**ids, **{k: v for k, v in swap.items() if k in ("UUID", "LABEL")}}
                self._swaps[entry.number] = _SwapHeader(entry.size, ids.get("UUID") or None,
                                                        ids.get("LABEL") or None, spool_dir)
            else:
                image, fs, whole = None, ids.get("TYPE", ""), False
            used = image.used_bytes if image else (self._swaps[entry.number].page
                                                   if entry.number in self._swaps else 0)
            self.partitions.append(SourcePartition(
                number=entry.number, start=entry.start, size=entry.size, fs=fs,
                label=ids.get("LABEL") or None, uuid=ids.get("UUID") or None,
                used_bytes=used, whole=whole))
        self.saved = frozenset(self._images)     # partitions whose contents the folder holds
        self._readers: list = []

    def _dd_image(self, path: str, size: int):
        """A `.dd-img` is raw bytes or, from newer Clonezilla, a partclone.dd image."""
        with compressed.Stream(path) as stream:
            head = stream.read(len(partclone.MAGIC))
        if head == partclone.MAGIC:
            return partclone.PartcloneImage(path)
        return RawImage(path, size)

    def _identity(self, names: list[str]) -> str:
        h = hashlib.sha256()
        h.update(self.disk.encode() if hasattr(self, "disk") else b"")
        try:
            with io.open(os.path.join(self.folder, "Info-img-id.txt"), encoding="utf-8") as f:
                h.update(f.read().encode())
        except OSError:
            for n in names:
                h.update(f"{n}:{os.path.getsize(os.path.join(self.folder, n))}\n".encode())
        return h.hexdigest()[:16]

    # -- Source ------------------------------------------------------------------------------

    def boot_areas(self) -> list[tuple[int, bytes]]:
        areas = []
        mbr = self._file_bytes(f"{self.disk}-mbr")
        if mbr is not None:
            areas.append((0, mbr[:MBR_CODE_SIZE]))
        hidden = self._file_bytes(f"{self.disk}-hidden-data-after-mbr")
        if hidden:
            first = min((p.start for p in self.layout.partitions), default=self.layout.disk_size)
            room = max(0, first - self.layout.sector_size)
            data = hidden[:room]
            kept = len(data.rstrip(b"\0"))
            data = data[:-(-kept // 512) * 512] if kept else b""
            if data:
                areas.append((self.layout.sector_size, data))
        return areas

    def _file_bytes(self, name: str) -> bytes | None:
        try:
            with io.open(os.path.join(self.folder, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DamageError(f"cannot read {name}: {exc.strerror}") from exc

    def reader(self, number: int):
        size = self.partition(number).size
        image = self._images.get(number)
        if number in self._swaps:
            return self._swaps[number]
        data = image.reader(self.spool_dir) if image else _EmptyData(size)
        if image is not None and image.size < size:
            data = _Padded(data, size)
        self._readers.append(data)
        return data

    def extents(self, number: int) -> Iterator[tuple[int, bytes]]:
        self.partition(number)
        image = self._images.get(number) or self._swaps.get(number)
        return image.extents() if image else iter(())

    def image_files(self) -> list[str]:
        return [p for image in self._images.values() for p in image.pieces]

    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        """The folder's checksum lists (when saved), then every partition image decoded and
        partclone's own checksums checked."""
        damage: list[Damage] = []
        sums = [entry for entry in self._checksum_lists() if self._concerns_me(entry[1])]
        to_hash = sum(_size(os.path.join(self.folder, n)) for _, n, _ in sums)
        to_decode = sum(image.compressed_size() for image in self._images.values())
        total, done = to_hash + to_decode, 0

        def report(n: int) -> None:
            if on_progress:
                on_progress(done + n, total)

        bad: set[str] = set()       # one line per damaged file, however many lists name it
        for algo, name, expected in sums:
            path = os.path.join(self.folder, name)
            size = _size(path)
            if name in bad:
                done += size
                continue
            try:
                got = _hash_file(path, algo, report)
            except FileNotFoundError:
                bad.add(name)
                damage.append(Damage(self._number_of_file(name), 0, 0, f"{name} is missing"))
                continue
            except OSError as exc:
                bad.add(name)
                damage.append(Damage(self._number_of_file(name), 0, 0, f"cannot read {name}: {exc.strerror}"))
                continue
            done += size
            if got != expected:
                bad.add(name)
                damage.append(Damage(self._number_of_file(name), 0, 0,
                                     f"{name} fails its {_ALGO_NAMES[algo]} checksum (the image is damaged)"))
        for number, image in self._images.items():
            if any(os.path.basename(p) in bad for p in image.pieces):
                done += image.compressed_size()
                continue            # already named; decoding it would only say it again
            try:
                for _ in image.extents(on_progress=report):
                    pass
                if isinstance(image, partclone.PartcloneImage):
                    damage += image.map_damage(number)
            except DamageError as exc:
                damage.append(Damage(number, 0, self.partition(number).size, exc.message))
            done += image.compressed_size()
            report(0)
        return damage

    def _checksum_lists(self) -> list[tuple[str, str, str]]:
        """(algorithm, file name, hex digest) for each file the folder's checksum lists name."""
        out = []
        for list_name, algo in CHECKSUM_FILES.items():
            path = os.path.join(self.folder, list_name)
            if not os.path.exists(path):
                continue
            with io.open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = re.match(r"^([0-9a-fA-F]{32,128})\s+\*?(.+?)\s*$", line)
                    if m and "/" not in m.group(2):
                        out.append((algo, m.group(2), m.group(1).lower()))
        for name in sorted(os.listdir(self.folder)):
            for ext, algo in SIDE_CHECKSUMS.items():
                if name.endswith(ext):
                    target = name[:-len(ext)]
                    with io.open(os.path.join(self.folder, name), encoding="utf-8", errors="replace") as f:
                        m = re.match(r"^([0-9a-fA-F]{32,128})", f.read().strip())
                    if m:
                        out.append((algo, target, m.group(1).lower()))
        return out

    def _concerns_me(self, name: str) -> bool:
        """False for a file of another disk saved in the same folder (its checks are its own)."""
        others = set(disks(self.folder)) - {self.disk}
        match = re.match(r"(?:swappt-)?([A-Za-z0-9_]+?)(?:-pt|-mbr|-gpt|-chs|-hidden|-ebr|\.)", name)
        if not others or not match:
            return True
        device = match.group(1)
        try:
            owner = device if device in others or device == self.disk else disk_of(device)
        except DamageError:
            return True
        return owner not in others

    def _number_of_file(self, name: str) -> int | None:
        for number, image in self._images.items():
            if any(os.path.basename(p) == name for p in image.pieces):
                return number
        return None

    def describe(self) -> list[str]:
        date = self.created[:10]
        saved = [p for p in self.partitions if p.number in self._images]
        lines = [f"{self.kind}, {date}, {len(saved)} partition{'s' if len(saved) != 1 else ''}"
                 + ("" if self.whole_disk else " (saved partition by partition)"),
                 f"folder {self.folder}, disk {self.disk}: {self.layout.table.upper()} table, "
                 f"{self.layout.disk_size} bytes"]
        for p in self.partitions:
            image = self._images.get(p.number)
            if image is None:
                how = "not saved (swap: recreated)" if p.fs == "swap" else "not saved"
            elif isinstance(image, RawImage):
                how = f"dd image, {image.compression}"
            else:
                how = f"partclone {image.header.version:04d}, {image.compression}"
            if image is not None and len(image.pieces) > 1:
                how += f", {len(image.pieces)} pieces"
            label = f" {p.label!r}" if p.label else ""
            lines.append(f"  {p.number}: {p.fs or 'no filesystem'}{label}, {p.size} bytes, "
                         f"{p.used_bytes} used ({how})")
        return lines

    def close(self) -> None:
        for data in self._readers:
            data.close()
        self._readers.clear()


class _Padded:
    """An image smaller than its partition (a file system that did not fill it): zeros after."""

    def __init__(self, inner, size: int):
        self.inner = inner
        self.size = size

    def used_ranges(self) -> list[tuple[int, int]]:
        return self.inner.used_ranges()

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        data = self.inner.read(offset, length) if offset < self.inner.size else b""
        return data + bytes(length - len(data))

    def close(self) -> None:
        self.inner.close()


def _kernel_name(disk: str, number: int) -> str:
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _hash_file(path: str, algo: str, report: Callable[[int], None]) -> str:
    h = hashlib.new(algo)
    done = 0
    with io.open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(HASH_READ)
            if not data:
                break
            h.update(data)
            done += len(data)
            report(done)
    return h.hexdigest()


def open(path: str, disk: str | None = None, spool_dir: str | None = None) -> ClonezillaSource | None:  # noqa: A001
    """The Clonezilla/Rescuezilla image folder at `path` (one disk of it) as a Source; None when
    `path` is not such a folder; DamageError/UsageError when it is but cannot be used."""
    if not is_image_folder(path):
        return None
    try:
        return ClonezillaSource(path, disk, spool_dir)
    except ToolError:
        raise
    except OSError as exc:
        raise DamageError(f"cannot read the Clonezilla image {path}: {exc.strerror}") from exc
