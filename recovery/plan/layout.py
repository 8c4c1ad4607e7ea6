"""Where a saved layout's partitions go on a target disk of another size: pure, no I/O.

How the restore uses it (the lead's recovery/restore.py)::

    from recovery.plan.layout import plan_layout, describe_plan, needs_resize

    fs = {n: info.fs for n, info in manifest_fs.items()}        # "ext4", "ntfs", "vfat", "swap", None
    min_size = {n: shrink.min_size(fs[n], reader.read, part.size, part.used_bytes)
                for ext/NTFS partitions}                          # recovery.apply.shrink
    target = plan_layout(source_layout, target_disk.size, target_disk.logical_sector,
                         mode=args.layout, fs=fs, min_size=min_size)   # may raise RefusedError
    plan.actions += describe_plan(source_layout, target, fs)      # sentences for the person
    ... write each partition's used blocks (below its new end) at target's start for that number ...
    for n, old, new in needs_resize(source_layout, target):         # partitions whose size changed
        if new.size < old.size: shrink_filesystem(...)              # recovery.apply.shrink
    write_layout(target_disk.path, target)                          # recovery.apply.table
    ... grow_filesystem(...) for the partitions that grew         # recovery.apply.resize

``min_size[n]`` is the smallest size the filesystem in partition n can shrink to (bytes from
the partition start); a partition missing from it cannot shrink, except swap, which is
re-created and may shrink to 1 MiB.

Modes:
- ``keep``: every partition where it was (the target must reach the last partition's end).
- ``grow``: the OS partition, i.e. the largest resizable data partition (ties: the later
  one), grows (or shrinks, down to its ``min_size``) so the layout fills the disk; every
  partition after it, whatever its type (a recovery partition, swap, a small ext4 tools
  partition), keeps its size and moves to the end of the disk. "Resizable data partition"
  here means ext2/3/4 or NTFS (FAT too when ``fat_resizable``) that is not an ESP, MSR,
  BIOS boot or recovery partition.
- ``proportional``: every resizable partition (swap included, which is re-created) takes its
  share of the difference in proportion to its size, as Clonezilla's ``-k1``; ESP, MSR,
  BIOS boot, recovery and partitions without a resizable filesystem keep their size.
- Smaller targets: ext2/3/4, NTFS and swap shrink, never below ``min_size`` (the restore
  then relocates what lay beyond the new end, recovery/apply/shrink.py); FAT and unknown
  filesystems keep their size. The refusal lists every partition's need in one line.

Rules: sizes change in whole MiB, so 1 MiB-aligned starts stay aligned; the gap before each
partition is kept (an MBR logical partition's EBR lives there); GUIDs, types, names and
attributes never change; GPT first/last usable LBA are set for the target (backup header at
its end); an MBR table uses at most 2^32 sectors (2 TiB with 512-byte sectors: the rest stays
unused); a layout moves to a disk with other logical sectors only when every boundary is a
multiple of the new sector size.
"""

from __future__ import annotations

from dataclasses import replace

from recovery.errors import RefusedError
from recovery.model.layout import Layout, PartitionEntry
from recovery.units import human_size

MiB = 1024 * 1024
MODES = ("keep", "grow", "proportional")
GPT_ENTRIES_BYTES = 128 * 128
MBR_MAX_SECTORS = 2 ** 32

ESP_TYPES = {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EF"}
MSR_TYPES = {"E3C9E316-0B5C-4DB8-817D-F92DF00215AE"}
BIOS_BOOT_TYPES = {"21686148-6449-6E6F-744E-656564454649"}
RECOVERY_TYPES = {"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "27"}
SWAP_TYPES = {"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "82"}


# ----------------------------------------------------------------------------- roles


def role(part: PartitionEntry) -> str | None:
    """"EFI system", "Microsoft reserved", "BIOS boot", "recovery", "extended" or None."""
    t = (part.type or "").upper()
    if part.kind == "extended":
        return "extended"
    if t in ESP_TYPES:
        return "EFI system"
    if t in MSR_TYPES:
        return "Microsoft reserved"
    if t in BIOS_BOOT_TYPES:
        return "BIOS boot"
    if t in RECOVERY_TYPES:
        return "recovery"
    return None


def fs_family(fs: str | None) -> str | None:
    """"ext", "ntfs", "fat", "swap" or None for a filesystem name as the fs maps give it."""
    if not fs:
        return None
    f = fs.lower()
    if f.startswith("ext"):
        return "ext"
    if f == "ntfs":
        return "ntfs"
    if f in ("vfat", "fat", "fat12", "fat16", "fat32", "msdos"):
        return "fat"
    if f == "swap":
        return "swap"
    return None


def resizable(part: PartitionEntry, fs: str | None, fat_resizable: bool = False) -> bool:
    """Whether the filesystem in this partition can follow a change of the partition's size."""
    fam = fs_family(fs)
    if part.kind == "extended" or role(part) is not None:
        return False
    return fam in ("ext", "ntfs", "swap") or (fam == "fat" and fat_resizable)


def _grow_target(parts: list[PartitionEntry], fs: dict, fat_resizable: bool) -> PartitionEntry | None:
    cands = [p for p in parts if resizable(p, fs.get(p.number), fat_resizable)
             and fs_family(fs.get(p.number)) != "swap"]
    if not cands:
        return None
    # The OS partition is the largest; a tools or data partition after it, however big
    # relative to it, keeps its size and moves to the end.
    return max(cands, key=lambda p: (p.size, p.start))


# ----------------------------------------------------------------------------- planning


def usable_area(table: str, disk_size: int, sector: int) -> tuple[int, int | None, int | None]:
    """(end of the usable area in bytes, GPT first_lba minimum, GPT last_lba) for a target."""
    sectors = disk_size // sector
    if table == "gpt":
        entries = -(-GPT_ENTRIES_BYTES // sector)
        last_lba = sectors - 2 - entries
        return (last_lba + 1) * sector, 2 + entries, last_lba
    if table == "dos":
        return min(sectors, MBR_MAX_SECTORS) * sector, None, None
    return sectors * sector, None, None


def plan_layout(source: Layout, target_size: int, target_sector: int, mode: str,
                fs: dict[int, str | None], min_size: dict[int, int],
                fat_resizable: bool = False) -> Layout:
    """The layout to write on a target disk of `target_size` bytes with `target_sector`-byte
    logical sectors. Raises RefusedError (one plain line) when it cannot hold the layout."""
    if mode not in MODES:
        raise RefusedError(f"unknown layout mode {mode!r}: use keep, grow or proportional")
    if target_sector not in (512, 1024, 2048, 4096):
        raise RefusedError(f"the target reports {target_sector}-byte sectors, which Lifeboat does not support")
    usable_end, first_min, last_lba = usable_area(source.table, target_size, target_sector)
    if source.table == "none":
        return _plan_whole(source, target_size, target_sector, mode, fs, min_size, fat_resizable)

    parts = sorted(source.data_partitions(), key=lambda p: p.start)
    containers = [p for p in source.partitions if p.kind == "extended"]
    old_last_end = max([p.end for p in source.partitions], default=0)

    if mode == "keep":
        grow: list[PartitionEntry] = []
    elif mode == "grow":
        g = _grow_target(parts, fs, fat_resizable)
        grow = [g] if g else []
    else:
        grow = [p for p in parts if resizable(p, fs.get(p.number), fat_resizable)]

    budget = ((usable_end - old_last_end) // MiB) * MiB if grow else 0
    deltas = _share(budget, grow, min_size, parts, fs, source, target_size, usable_end)

    new_parts: dict[int, PartitionEntry] = {}
    shift = 0
    shifts: dict[int, int] = {}
    for p in parts:
        shifts[p.number] = shift
        d = deltas.get(p.number, 0)
        new_parts[p.number] = replace(p, start=p.start + shift, size=p.size + d)
        shift += d
    for c in containers:
        inside = sorted((p for p in parts if p.kind == "logical"), key=lambda p: p.start)
        if inside:
            first, last = inside[0], inside[-1]
            start = c.start + shifts[first.number]
            slack = max(c.end - last.end, 0)
            end = min(new_parts[last.number].end + slack, usable_end)
            new_parts[c.number] = replace(c, start=start, size=end - start)
        else:
            new_parts[c.number] = c

    result = [new_parts[p.number] for p in source.partitions]
    _check_fits(source, result, usable_end, target_size, mode, fs, min_size, grow)
    _check_sectors(source, result, target_sector)

    first_lba = last = None
    if source.table == "gpt":
        want = -(-(source.first_lba or first_min) * source.sector_size // target_sector)
        first_start = min((p.start for p in result), default=usable_end) // target_sector
        first_lba = min(max(want, first_min), first_start) if result else max(want, first_min)
        last = last_lba
    return replace(source, sector_size=target_sector, disk_size=target_size,
                   first_lba=first_lba, last_lba=last, partitions=tuple(result))


def _plan_whole(source, target_size, target_sector, mode, fs, min_size, fat_resizable) -> Layout:
    """A disk without a partition table: one filesystem on the whole disk (entry number 0)."""
    if source.disk_size % target_sector:
        raise RefusedError(f"the saved disk's size is not a multiple of the target's {target_sector}-byte sectors")
    parts = []
    for p in source.partitions:
        size = p.size
        if mode != "keep" and resizable(p, fs.get(p.number), fat_resizable):
            size = target_size - p.start
        need = min_size.get(p.number, p.size)
        if p.start + size > target_size or p.start + need > target_size:
            can_shrink = mode != "keep" and resizable(p, fs.get(p.number), fat_resizable)
            if can_shrink and p.start + need <= target_size:
                size = target_size - p.start
            else:
                # Kept as it is (keep mode, or a filesystem that cannot resize), it needs its whole size.
                required = p.start + (need if can_shrink else max(need, p.size))
                raise RefusedError(f"the target disk ({human_size(target_size)}) is too small: the saved disk "
                                   f"needs {human_size(required)}")
        parts.append(replace(p, size=size))
    return replace(source, sector_size=target_sector, disk_size=target_size, partitions=tuple(parts))


def _floor(n: int) -> int:
    return (n // MiB) * MiB


# The restore shrinks these (recovery/apply/shrink.py relocates ext and NTFS data; swap is
# re-created); FAT has no maintained tool that shrinks it.
SHRINKABLE = ("ext", "ntfs", "swap")


def _need(p: PartitionEntry, min_size: dict[int, int], fs: dict | None = None) -> int:
    """The smallest size a resizable partition may take: its size less whole MiB, no smaller
    than what its filesystem can shrink to (and 1 MiB); its own size when its filesystem
    cannot shrink or nobody said how far it can."""
    family = fs_family(fs.get(p.number)) if fs is not None else None
    if fs is not None and family not in SHRINKABLE:
        return p.size
    default = MiB if family == "swap" else p.size
    used = max(min(min_size.get(p.number, default), p.size), MiB)
    if used >= p.size:
        return p.size
    return p.size - _floor(p.size - used)


def _share(budget: int, grow: list[PartitionEntry], min_size: dict, parts, fs, source, target_size,
           usable_end) -> dict[int, int]:
    """Split `budget` bytes (whole MiB, may be negative) among the resizable partitions in
    proportion to their sizes; none goes below what its filesystem can shrink to."""
    if not grow:
        return {}
    active = list(grow)
    fixed: dict[int, int] = {}
    remaining = budget
    while True:
        total = sum(p.size for p in active)
        deltas = {}
        given = 0
        for p in active[:-1]:
            d = _floor(remaining * p.size // total) if remaining >= 0 else -_floor(-remaining * p.size // total)
            deltas[p.number] = d
            given += d
        deltas[active[-1].number] = remaining - given
        short = [p for p in active if p.size + deltas[p.number] < _need(p, min_size, fs)]
        if not short:
            deltas.update(fixed)
            return deltas
        for p in short:
            fixed[p.number] = _need(p, min_size, fs) - p.size
            remaining -= fixed[p.number]
            active.remove(p)
        if not active:
            if remaining >= 0:
                return fixed
            _refuse_too_small(source, parts, fs, min_size, grow, target_size, usable_end)


def _refuse_too_small(source, parts, fs, min_size, grow, target_size, usable_end):
    grow_numbers = {p.number for p in grow}
    needs = []
    total = 0
    prev_end = 0
    for p in parts:
        gap = max(p.start - prev_end, 0)
        size = _need(p, min_size, fs) if p.number in grow_numbers else p.size
        total += gap + size
        prev_end = p.end
        what = fs.get(p.number) or role(p) or "no filesystem"
        if p.number not in grow_numbers:
            qual = "keeps its size:"
        else:
            qual = "cannot shrink below"
        needs.append(f"partition {p.number} ({what}) {qual} {human_size(size)}")
    overhead = target_size - usable_end
    raise RefusedError(f"the target disk ({human_size(target_size)}) is too small: "
                       + "; ".join(needs)
                       + f"; with gaps and table that is at least {human_size(total + overhead)}")


def _check_fits(source, result, usable_end, target_size, mode, fs, min_size, grow) -> None:
    over = [p for p in result if p.end > usable_end]
    if not over:
        return
    if mode == "keep" or not grow:
        worst = max(over, key=lambda p: p.end)
        hint = " (try --layout grow)" if mode == "keep" else ""
        table = "GPT " if source.table == "gpt" else ""
        raise RefusedError(f"the target disk ({human_size(target_size)}) is too small: partition {worst.number} "
                           f"ends at {human_size(worst.end)} but the disk's {table}usable space ends at "
                           f"{human_size(usable_end)}{hint}")
    parts = sorted(source.data_partitions(), key=lambda p: p.start)
    _refuse_too_small(source, parts, fs, min_size, grow, target_size, usable_end)


def _check_sectors(source: Layout, result: list[PartitionEntry], sector: int) -> None:
    if sector == source.sector_size:
        return
    for p in result:
        for what, value in (("starts at", p.start), ("has a size of", p.size)):
            if value % sector:
                raise RefusedError(
                    f"cannot convert the table from {source.sector_size}-byte to {sector}-byte sectors: "
                    f"partition {p.number} {what} byte {value}, not a multiple of {sector}")


def needs_resize(before: Layout, after: Layout) -> list[tuple[int, PartitionEntry, PartitionEntry]]:
    """(number, old entry, new entry) of every data partition whose size changed."""
    old = {p.number: p for p in before.data_partitions()}
    return [(p.number, old[p.number], p) for p in after.data_partitions()
            if p.number in old and old[p.number].size != p.size]


# ----------------------------------------------------------------------------- sentences


def _label(p: PartitionEntry, fs: dict) -> str:
    bits = [b for b in (fs.get(p.number), role(p)) if b]
    return f"Partition {p.number}" + (f" ({', '.join(bits)})" if bits else "")


def describe_plan(before: Layout | None, after: Layout, fs: dict[int, str | None]) -> list[str]:
    """Sentences for a person: the table, then what happens to each partition."""
    lines: list[str] = []
    table = {"gpt": "GPT", "dos": "MBR"}.get(after.table)
    if table:
        extra = " (its backup copy at the end of the disk)" if after.table == "gpt" else ""
        article = "an" if table == "MBR" else "a"
        lines.append(f"Write {article} {table} partition table for the {human_size(after.disk_size)} disk{extra}, "
                     "keeping the original disk and partition IDs.")
    if before is not None and before.sector_size != after.sector_size:
        lines.append(f"The table is converted from {before.sector_size}-byte to {after.sector_size}-byte sectors.")
        ntfs = [str(p.number) for p in after.data_partitions() if fs_family(fs.get(p.number)) == "ntfs"]
        if ntfs:
            lines.append(f"Warning: the NTFS in partition {', '.join(ntfs)} keeps its {before.sector_size}-byte "
                         f"sector geometry; Linux reads it, but Windows may not start from this disk.")
    old = {p.number: p for p in before.partitions} if before else {}
    usable_end, _, _ = usable_area(after.table, after.disk_size, after.sector_size)
    parts = sorted(after.partitions, key=lambda p: p.start)
    last_end = max((p.end for p in parts), default=0)
    for p in parts:
        name = _label(p, fs)
        swap = fs_family(fs.get(p.number)) == "swap"
        o = old.get(p.number)
        if o is None:
            lines.append(f"{name}: {human_size(p.size)} at {human_size(p.start)}.")
            continue
        moved = p.start != o.start
        if p.size != o.size:
            shrinks = p.size < o.size
            s = f"{name} {'shrinks' if shrinks else 'grows'} from {human_size(o.size)} to {human_size(p.size)}"
            if shrinks:
                s += f" ({human_size(o.size - p.size)} less)"
            if moved:
                s += f" and moves from {human_size(o.start)} to {human_size(p.start)}"
            fam = fs_family(fs.get(p.number))
            if swap:
                s += " (re-created with the same UUID and label)"
            elif p.kind != "extended" and shrinks and fam in ("ext", "ntfs"):
                s += "; its filesystem is resized to match, moving data that lay beyond the new end"
            elif p.kind != "extended" and fam in ("ext", "ntfs", "fat"):
                s += "; its filesystem is resized to match"
            lines.append(s + ".")
        elif moved:
            at_end = usable_end - last_end < MiB and all(
                q.start - old[q.number].start == p.start - o.start for q in parts
                if q.start >= p.start and q.number in old)
            where = "to the end of the disk " if at_end else ""
            lines.append(f"{name} moves {where}(from {human_size(o.start)} to {human_size(p.start)}).")
        else:
            lines.append(f"{name} stays as it is ({human_size(p.size)} at {human_size(p.start)}).")
    free = usable_end - last_end
    if free >= MiB:
        lines.append(f"{human_size(free)} at the end of the disk stays unallocated.")
    if after.table == "dos" and after.disk_size // after.sector_size > MBR_MAX_SECTORS:
        limit = MBR_MAX_SECTORS * after.sector_size
        lines.append(f"Space beyond {human_size(limit)} stays unused: an MBR partition table cannot address it.")
    return lines
