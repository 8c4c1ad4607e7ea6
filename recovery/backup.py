"""Backup: a disk (block device or image file) becomes a snapshot in a repository."""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from recovery import __version__
from recovery.chunking import split, used_windows, window_count, window_length
from recovery.diskio import Disk
from recovery.errors import DamageError, NoSpaceError, RefusedError, UsageError
from recovery.events import CancelToken, EventSink, Meter, Warning_, ignore
from recovery.fs import FsInfo, probe_partition
from recovery.model.layout import Layout, PartitionEntry
from recovery.probe.bootarea import read_boot_areas
from recovery.probe.disks import describe
from recovery.probe.mounts import is_on_disk, mounts_on_disk
from recovery.probe.table import read_layout
from recovery.repo.format import ID_SIZE, KIND_DATA
from recovery.repo.locations import record_locations
from recovery.repo.manifest import BootArea, Manifest, PartitionImage, encode_ranges
from recovery.repo.repository import Repository, now_iso
from recovery.stages import StageClock
from recovery.units import human_size
from recovery.windowread import WindowReader
from recovery.workers import ordered_map, worker_count

log = logging.getLogger(__name__)
META_PIECE = 1024 * 1024


@dataclass
class BackupResult:
    snapshot: str
    name: str
    bytes_used: int
    bytes_stored_new: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # Stored bytes this run found in packs an interrupted run of a backup had written (a
    # resumed backup): neither newly stored now nor saved by deduplication.
    bytes_resumed: int = 0
    # Where the time went: CPU and wall seconds per stage (see recovery/stages.py).
    profile: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def default_name(disk) -> str:
    """A stable machine name: model and serial of a real disk, the file name of an image."""
    if disk.is_image:
        base = os.path.basename(disk.path)
        base = re.sub(r"\.(img|raw|bin|dd)$", "", base)
    else:
        base = "-".join(x for x in (disk.model, disk.serial) if x) or disk.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "disk"


def check_source(disk, repo: Repository) -> None:
    writable = [m for m in mounts_on_disk(disk.path) if not m.read_only]
    if writable:
        m = writable[0]
        raise RefusedError(
            f"{m.source} is mounted read-write at {m.target}; unmount it first "
            f"(umount {m.target}) or remount it read-only, so the image is consistent"
        )
    if repo.local_path is not None and is_on_disk(str(repo.local_path), disk.path):
        raise RefusedError(
            f"the repository {repo.path} is on {disk.path}, the disk being backed up; "
            "keep backups on another drive"
        )
    if disk.incomplete_restore:
        raise RefusedError(f"{disk.path} holds an {disk.incomplete_restore}: there is nothing usable to back "
                           "up; finish that restore first (run it again to resume it)")


def _partitions_to_image(layout: Layout, disk_size: int) -> tuple[PartitionEntry, ...]:
    if layout.table == "none":
        return (PartitionEntry(number=0, start=0, size=disk_size, type=""),)
    return layout.data_partitions()


def backup(
    source: str,
    repo: Repository,
    name: str | None = None,
    *,
    verify: bool = True,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
    zstd_level: int = 3,
    threads: int | None = None,
) -> BackupResult:
    try:
        return _backup(source, repo, name, verify=verify, on_event=on_event, cancel=cancel,
                       zstd_level=zstd_level, threads=threads)
    except NoSpaceError as exc:
        raise NoSpaceError(exc.message + room_hint(repo)) from exc


def room_hint(repo: Repository) -> str:
    """What forgetting by the default policy, then pruning, would free: '' when it cannot be
    worked out (a damaged snapshot), so the error itself is never lost."""
    from recovery.errors import LifeboatError
    from recovery.repo.prune import freed_by_forgetting
    from recovery.repo.retention import DEFAULT_POLICY as P

    try:
        count, freed = freed_by_forgetting(repo, P)
    except (LifeboatError, OSError):
        return ""
    policy = P.describe()
    if not count:
        return f"; the default retention policy ({policy}) would remove no snapshot"
    return (f"; forgetting {count} snapshot(s) by the default retention policy ({policy}) and pruning "
            f"would free {human_size(freed)}: lifeboat forget --keep-last {P.last} --keep-daily {P.daily} "
            f"--keep-weekly {P.weekly} --keep-monthly {P.monthly} --prune --repo {repo.location}")


def _backup(source: str, repo: Repository, name: str | None, *, verify: bool, on_event: EventSink | None,
            cancel: CancelToken | None, zstd_level: int, threads: int | None) -> BackupResult:
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be 1 or more, not {threads}")
    started = time.monotonic()
    clock = StageClock()
    info = describe(source)
    check_source(info, repo)
    layout = read_layout(source)
    clock.mark("layout_read")
    name = name or default_name(info)
    warnings: list[str] = []

    with Disk(source) as disk:
        parts = _partitions_to_image(layout, disk.size)
        maps: list[tuple[PartitionEntry, FsInfo]] = []
        for part in parts:
            fsinfo = probe_partition(lambda off, n, base=part.start: disk.read(base + off, n), part.size)
            for w in fsinfo.warnings:
                text = f"partition {part.number}: {w}" if part.number else w
                warnings.append(text)
                sink(Warning_(text))
            maps.append((part, fsinfo))
        bytes_used = sum(f.used_bytes for _, f in maps)
        clock.mark("used_maps_read")
        _check_room(repo, name, bytes_used)
        clock.mark("room_checked")

        meter = Meter("backup", bytes_used, sink)
        from recovery.verify import ReadBack

        repo.wait_unlocked()     # an unlock begun in the background: a wrong passphrase stops here, nothing written
        clock.mark("unlocked")

        # The read-back check starts on each pack as it is sealed; closed after the session.
        with ReadBack(repo, clock) if verify else nullcontext() as early, repo.writer(zstd_level, threads) as session:
            session.clock = clock
            clock.mark("repository_open")
            if early is not None:
                session.on_sealed = early.start
            for line in session.lock.broken:         # a stale lock of a writer that is gone
                warnings.append(line)
                sink(Warning_(line))
            boot = [
                BootArea(off, len(data), session.add_meta(data))
                for off, data in read_boot_areas(source, layout)
            ]
            images = []
            for part, fsinfo in maps:
                meter.partition = part.number
                images.append(_image_partition(disk, part, fsinfo, repo, session, meter, cancel, threads, clock))
            with clock.stage("flush"):
                locations = record_locations(repo, session, boot, images, session.chunk_tables)
            meter.finish()
            if verify:
                from recovery.verify import check_new_packs

                with clock.stage("check"):
                    check_new_packs(repo, session.new_packs, images, sink, cancel, early)
                if session.resumed_ids:
                    # What the interrupted run stored was never read back: prove it now.
                    from recovery.verify import prove_blobs

                    bad = prove_blobs(repo, session.resumed_ids, on_event=sink, cancel=cancel, phase="check")
                    if bad:
                        raise DamageError(f"{len(bad)} chunk(s) stored by the interrupted backup do not read "
                                          "back correctly: the destination drive may be failing — the snapshot "
                                          "was not saved")
            result = seal_snapshot(repo, session, name=name, layout=layout, boot=boot, images=images,
                                 locations=locations, bytes_used=bytes_used, warnings=warnings, started=started, verify=verify,
                                 source={
                                     "path": info.path,
                                     "model": info.model,
                                     "serial": info.serial,
                                     "size": disk.size,
                                     "logical_sector": info.logical_sector,
                                     "physical_sector": info.physical_sector,
                                     "transport": info.transport,
                                 })
            clock.add("compress starved", 0.0, session.compressor.starved_s)
            result.profile = clock.to_json()
            return result


def seal_snapshot(repo: Repository, session, *, name: str, source: dict, layout, boot, images,
                  locations: dict | None, bytes_used: int, warnings: list[str], started: float, verify: bool) -> BackupResult:
    """The manifest written last, once every chunk it names is stored (and read back when
    `verify`): only then does the snapshot exist. Backups and imports end here."""
    seconds = time.monotonic() - started
    manifest = Manifest(
        name=name, created=now_iso(), tool=f"lifeboat {__version__}", chunk_size=repo.chunk_size,
        source=source, layout=layout, boot_areas=boot, partitions=images,
        stats={"bytes_used": bytes_used, "bytes_stored_new": session.bytes_stored_new,
               "bytes_resumed": session.bytes_resumed, "seconds": round(seconds, 3), "warnings": warnings},
        locations=locations,
    )
    sid = repo.write_manifest(manifest)
    session.snapshot_written()
    if verify:
        repo.mark_verified(sid)
    return BackupResult(sid, name, bytes_used, session.bytes_stored_new, round(seconds, 3), warnings,
                        bytes_resumed=session.bytes_resumed)


def _check_room(repo: Repository, name: str, bytes_used: int) -> None:
    """Refuse early when the new data clearly cannot fit. Without an earlier snapshot of this
    machine every used byte may be new (compression is unknown until read); with one, most of
    the disk is expected to dedup, so only a tenth is asked for."""
    free = repo.free_space()
    if free is None:
        return                  # an object store says nothing: no need to read every manifest
    has_history = any(s.name == name for s in repo.snapshots())
    estimate = bytes_used // 10 if has_history else bytes_used // 2
    if free < estimate:
        raise NoSpaceError(
            f"the backup destination has {human_size(free)} free but this backup needs about "
            f"{human_size(estimate)}; free some space or use a larger drive"
        )


def _image_partition(disk, part, fsinfo, repo, session, meter, cancel, threads, clock) -> PartitionImage:
    chunk = repo.chunk_size
    what = f"partition {part.number}" if part.number else "disk"
    with WindowReader(disk, chunk) as reader:
        table = _store_windows(lambda w, subs, length: reader.read(part.start + w * chunk, length, subs, what),
                               fsinfo.used, part.size, chunk, session, meter, cancel, threads, clock)
    return _partition_image(session, part.number, part.start, part.size, fsinfo.fs, fsinfo.label, fsinfo.uuid,
                            fsinfo.block_size, fsinfo.whole, fsinfo.used, fsinfo.warnings, table)


def _store_windows(read_window, used, size: int, chunk: int, session, meter, cancel, threads,
                   clock: StageClock | None = None) -> bytearray:
    """Store every window holding used bytes; the partition's chunk table. `read_window(w, subs,
    length)` gives window w's bytes with every byte outside `subs` zero."""
    table = bytearray(window_count(size, chunk) * ID_SIZE)   # zero = NO_DATA
    has, compress, seal = session.has, session.compressor.compress, session.seal_blob
    blob_id = session.repo.blob_id       # keyed in an encrypted repository
    clock = clock or StageClock()
    tick, add = time.thread_time, clock.add

    def hash_and_pack(item):
        """In a worker: read the window (unused bytes zero), hash, and compress unless
        the repository already holds that content."""
        w, subs = item
        length = window_length(w, size, chunk)
        c0, w0 = tick(), time.perf_counter()
        clock.mark("first_read")
        view = read_window(w, subs, length)
        c1, w1 = tick(), time.perf_counter()
        used_here = sum(n for _, n in subs)
        bid = blob_id(view)
        known = has(bid)
        c2, w2 = tick(), time.perf_counter()
        add("read", c1 - c0, w1 - w0, used_here)
        add("hash", c2 - c1, w2 - w1, length)
        if known:
            return w, length, used_here, bid, None, 0
        stored, codec = compress(view)
        stored = seal(bid, KIND_DATA, stored)      # an encrypted repository's AEAD; as is otherwise
        add("compress", tick() - c2, time.perf_counter() - w2, length)
        return w, length, used_here, bid, stored, codec

    windows = used_windows(used, size, chunk)
    # As many windows being read as being compressed, plus two: with two readers the
    # compressors waited for data 35-50 % of the time on a shared 2-core machine (the
    # profile's "compress starved" seconds), with cores + 2 readers 24-35 %.
    cores = worker_count(cores=threads)
    results = ordered_map(hash_and_pack, windows, cancel, io_bound=True, cores=threads, readers=cores + 2)
    c0, w0 = tick(), time.perf_counter()
    for w, length, used_here, bid, stored, codec in results:
        if stored is not None:
            new = session.add(bid, stored, length, KIND_DATA, codec)
        else:
            new = 0
            session.reused(bid)
        table[w * ID_SIZE : (w + 1) * ID_SIZE] = bid
        meter.add(used_here, new)
    add("main loop", tick() - c0, time.perf_counter() - w0)
    return table


def _partition_image(session, number, start, size, fs, label, uuid, block_size, whole, used, warnings,
                     table) -> PartitionImage:
    session.chunk_tables[number] = bytes(table)      # for the snapshot's location tables
    return PartitionImage(
        number=number,
        start=start,
        size=size,
        fs=fs,
        label=label,
        uuid=uuid,
        block_size=block_size,
        whole=whole,
        used_bytes=sum(n for _, n in used),
        warnings=list(warnings),
        ranges=[session.add_meta(p) for p in split(encode_ranges(used), META_PIECE)],
        chunks=[session.add_meta(p) for p in split(bytes(table), META_PIECE)],
        windows=len(table) // ID_SIZE,
    )
