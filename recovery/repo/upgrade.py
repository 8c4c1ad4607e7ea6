"""`lifeboat repo upgrade`: a format v1 repository becomes v2 in place by adding a parity sidecar
beside every pack, index file and manifest, then rewriting the config, last.

Crash safety rests on the order: every sidecar is one whole-object write that adds a file
and changes none, and v1 readers ignore them; the config (one atomic write) says "version 2"
only after every object has its sidecar. Killed at any point, the repository is a valid v1
(some sidecars already there) or a valid v2; run again, the objects whose sidecar is already
intact are skipped and the rest done.

Parity made over damaged bytes would keep the damage for good, so each object is proven first
(a pack's footer and every blob's hash, an index file's digest, a manifest's id); one that fails
gets no sidecar and is named in the result, and the config is not changed: verify says what
that damage costs, and upgrade runs again once it is dealt with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import blake3

from recovery.errors import DamageError, LifeboatError, RepositoryError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.repo.format import CONFIG_FILE, FORMAT_VERSION
from recovery.repo.index import index_file_packs
from recovery.repo.lock import Lock
from recovery.repo.packs import parse_footer
from recovery.repo.parity import make_parity, parity_name, parse_sidecar, sidecar_matches
from recovery.repo.scrub import object_label
from recovery.storage.base import StorageError, UnreachableError
from recovery.workers import ordered_map

# Each object is held whole in memory with its parity (a pack is up to 64 MiB, ~3 copies while
# its parity is made): two at a time keep both cores of a small machine busy in bounded memory.
WHOLE_OBJECTS_AT_ONCE = 2


@dataclass
class UpgradeResult:
    version_before: int
    version: int
    objects: int = 0                 # packs, index files and manifests in the repository
    added: int = 0                   # sidecars written by this run
    bytes_added: int = 0
    damaged: list[str] = field(default_factory=list)   # objects left without parity, and why

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _objects(storage) -> list[tuple[str, int]]:
    out = []
    for prefix, suffix in (("packs/", ".pack"), ("index/", ".idx"), ("snapshots/", ".json")):
        for info in storage.list(prefix):
            rest = info.name[len(prefix):]
            if info.name.endswith(suffix) and (prefix == "packs/" or "/" not in rest):
                out.append((info.name, info.size))
    return sorted(out)


def _prove(repo, name: str, data: bytes) -> None:
    """DamageError unless the object's own checks pass (with the repository's keys, when it
    is encrypted: a v2 repository's lost sidecars are made again here too)."""
    label = object_label(name)
    if name.startswith("snapshots/"):
        if blake3.blake3(data).hexdigest() != name[len("snapshots/"):-len(".json")]:
            raise DamageError(f"{label} is damaged")
    elif name.startswith("index/"):
        index_file_packs(name, data, repo.sealer)
    else:
        entries = parse_footer(name, len(data), data, repo.sealer)
        if isinstance(entries, int):
            raise DamageError(f"{label} has a damaged footer")
        for e in entries:
            try:
                repo.decode(e.id, data[e.offset : e.offset + e.stored_len], e.raw_len, e.codec, e.kind)
            except DamageError as exc:
                raise DamageError(f"{label}: {exc.message}") from exc


def _readable(raw: bytes) -> bool:
    try:
        parse_sidecar(raw, "")
    except DamageError:
        return False
    return True


def upgrade(repo, *, on_event: EventSink | None = None, cancel: CancelToken | None = None) -> UpgradeResult:
    """Bring `repo` to format v2 (see the module's description); returns what was done."""
    storage = repo.storage
    cancel = cancel or CancelToken()
    before = int(repo.config.get("version", 1))
    result = UpgradeResult(before, before)
    with Lock(storage, exclusive=True, purpose="upgrade"):
        objects = _objects(storage)
        result.objects = len(objects)
        meter = Meter("upgrade", sum(size for _, size in objects), on_event or ignore)
        meter.add(0, force=True)

        def protect(item):
            name, size = item
            try:
                data = storage.read(name)
                try:
                    raw = storage.read(parity_name(name))
                except FileNotFoundError:
                    raw = None
                if raw is not None and sidecar_matches(raw, data):
                    return name, size, 0, None
                if raw is not None and _readable(raw):
                    # Its parity is there but the object no longer matches it: damage that
                    # verify --repair fixes; new parity would only keep the damage.
                    return name, size, 0, f"{object_label(name)} is damaged: run lifeboat verify --repair"
                _prove(repo, name, data)
                sidecar = make_parity(data)
                storage.write(parity_name(name), sidecar)
                return name, size, len(sidecar), None
            except UnreachableError:
                raise
            except FileNotFoundError:
                return name, size, 0, None          # removed meanwhile (prune): nothing to protect
            except DamageError as exc:
                return name, size, 0, exc.message
            except (OSError, StorageError) as exc:
                return name, size, 0, f"{object_label(name)} cannot be read ({exc})"

        for name, size, added, problem in ordered_map(protect, objects, cancel, cores=WHOLE_OBJECTS_AT_ONCE):
            if problem:
                result.damaged.append(problem)
            elif added:
                result.added += 1
                result.bytes_added += added
            meter.add(size)
        meter.finish()
        if result.damaged:
            return result
        if before < FORMAT_VERSION:
            from recovery.repo.repository import PARITY_CONFIG

            config = dict(repo.config, version=FORMAT_VERSION, parity=dict(PARITY_CONFIG))
            try:
                storage.write(CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
            except (OSError, LifeboatError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                raise RepositoryError(f"the parity was added but the config could not be rewritten "
                                      f"({message}); run upgrade again") from exc
            repo.config = config
            result.version = FORMAT_VERSION
    return result
