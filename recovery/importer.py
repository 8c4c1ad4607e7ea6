"""Import: a saved disk another tool made (any recovery.sources Source) becomes a snapshot.

The backup pipeline stores it (recovery.backup: fixed windows over each partition's used
ranges, hashed, deduplicated, compressed, read back), fed from the source's reader instead of
a disk. So a second import of a later image of the same PC stores only the windows that
changed, and a restore of the snapshot writes the same bytes as a restore straight from the
image. The manifest's `source` records where it came from: the image's kind, the tool that made
it when known, its location, its identity and the date it was saved.
"""

from __future__ import annotations

import time

from recovery.backup import BackupResult, _check_room, _partition_image, _store_windows, seal_snapshot
from recovery.errors import DamageError, RefusedError
from recovery.events import CancelToken, EventSink, Meter, Warning_, ignore
from recovery.repo.locations import record_locations
from recovery.repo.manifest import BootArea
from recovery.repo.repository import Repository
from recovery.sources.base import Source


def source_record(source: Source) -> dict:
    """The manifest's `source` for an imported image (docs/FORMAT.md)."""
    return {
        "imported": {
            "kind": source.kind,
            "tool": getattr(source, "tool", "") or None,
            "location": source.location,
            "id": source.id,
            "created": source.created,
        },
        "size": source.layout.disk_size,
        "logical_sector": source.layout.sector_size,
        "model": None,
        "serial": None,
    }


def import_source(source: Source, repo: Repository, name: str | None = None, *, verify: bool = True,
                  on_event: EventSink | None = None, cancel: CancelToken | None = None, zstd_level: int = 3,
                  threads: int | None = None) -> BackupResult:
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    started = time.monotonic()
    if source.unreadable:
        raise RefusedError(f"{source.title()} cannot be imported: partition(s) "
                           f"{', '.join(map(str, sorted(source.unreadable)))} cannot be read")
    found = source.prove_events(sink, cancel)
    if found:
        raise DamageError(f"{source.title()} is damaged: " + "; ".join(d.why for d in found)
                          + "; nothing was imported")
    name = name or source.name
    warnings = list(getattr(source, "warnings", []))
    for w in warnings:
        sink(Warning_(w))
    bytes_used = sum(p.used_bytes for p in source.partitions)
    _check_room(repo, name, bytes_used)
    chunk = repo.chunk_size
    meter = Meter("import", bytes_used, sink)
    with repo.writer(zstd_level, threads) as session:
        boot = [BootArea(off, len(data), session.add_meta(data)) for off, data in source.boot_areas()]
        images = []
        for part in source.partitions:
            meter.partition = part.number
            reader = source.reader(part.number)
            used = [tuple(r) for r in reader.used_ranges()]

            def read_window(w, subs, length, reader=reader):
                data = reader.read(w * chunk, length)
                window = bytearray(length)          # bytes outside the used ranges stay zero
                for off, n in subs:
                    window[off : off + n] = data[off : off + n]
                return memoryview(window)

            table = _store_windows(read_window, used, part.size, chunk, session, meter, cancel, threads)
            images.append(_partition_image(session, part.number, part.start, part.size, part.fs, part.label,
                                           part.uuid, 4096, part.whole, used, (), table))
        locations = record_locations(repo, session, boot, images, session.chunk_tables)
        meter.finish()
        if verify:
            from recovery.verify import check_new_packs

            check_new_packs(repo, session.new_packs, images, sink, cancel)
        return seal_snapshot(repo, session, name=name, source=source_record(source), layout=source.layout,
                             boot=boot, images=images, locations=locations, bytes_used=bytes_used, warnings=warnings,
                             started=started, verify=verify)
