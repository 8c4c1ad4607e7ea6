"""Scrubbing: check whole objects (packs, index files, manifests) against their parity sidecars,
repair what the parity gives back, and on request write the repaired object back.

Writing back never risks the only copy: the damaged bytes are first saved as
`damaged-files/<name>`, then the repaired object replaces the original (an atomic whole-object
write), is read back and compared with the digest the sidecar holds, and only then is the saved
copy removed. A crash at any point leaves the original (damaged, still repairable) or the
repaired object in place, and at worst a spare copy under damaged-files/.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from recovery.errors import DamageError, LifeboatError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.repo.parity import make_parity, parity_name, read_tolerant, repair
from recovery.storage.base import StorageError, UnreachableError
from recovery.workers import ordered_map

# Objects are read whole with their sidecars (a pack is up to 64 MiB, ~3 copies while being
# repaired): two at a time, so memory stays bounded on a small machine.
WHOLE_OBJECTS_AT_ONCE = 2

DAMAGED_PREFIX = "damaged-files/"


@dataclass
class ObjectRepair:
    """What scrubbing found in one object."""

    name: str
    label: str
    damaged_sectors: int = 0     # data sectors that failed their checksum
    lost_sectors: int = 0        # of those, the ones the parity could not give back
    parity_damaged: int = 0      # sectors or checksums of the sidecar found damaged
    no_parity: bool = False      # the object has no readable sidecar at all
    written_back: bool = False   # the repaired object (or a new sidecar) is now stored
    problem: str = ""            # why writing back failed

    @property
    def repaired(self) -> bool:
        return not self.no_parity and not self.lost_sectors

    def message(self) -> str:
        if self.no_parity:
            return f"{self.label} has no readable parity ({self.problem}); run: lifeboat repo upgrade"
        if self.lost_sectors:
            return (f"could not repair {self.label}: {self.lost_sectors} of its {self.damaged_sectors} "
                    "damaged sector(s) are beyond what its parity repairs")
        what = []
        if self.damaged_sectors:
            what.append(f"{self.damaged_sectors} damaged sector(s)")
        if self.parity_damaged:
            what.append(f"{self.parity_damaged} damaged sector(s) of its parity")
        done = ("written back" if self.written_back else
                f"writing it back failed: {self.problem}" if self.problem else
                "in memory; run verify --repair to write it back")
        return f"repaired {self.label}: {', '.join(what)} ({done})"

    def to_json(self) -> dict:
        return {"object": self.name, "damaged_sectors": self.damaged_sectors,
                "lost_sectors": self.lost_sectors, "parity_damaged_sectors": self.parity_damaged,
                "no_parity": self.no_parity, "repaired": self.repaired,
                "written_back": self.written_back, "message": self.message()}


def object_label(name: str) -> str:
    """How people read an object's name: 'pack 1a2b3c4d5e6f7a8b', 'index file …', ..."""
    base = name.rpartition("/")[2]
    if name.startswith("packs/"):
        return f"pack {base[:16]}"
    if name.startswith("index/"):
        return f"index file {base[:16]}"
    if name.startswith("snapshots/"):
        return f"the manifest of snapshot {base[:8]}"
    return name


def write_back(storage, name: str, damaged: bytes, repaired: bytes) -> None:
    """Replace a damaged object by its repaired bytes, keeping the damaged copy aside until the
    new one reads back right."""
    aside = DAMAGED_PREFIX + name
    storage.write(aside, damaged)
    storage.write(name, repaired)
    if storage.read_back_digest(name) != blake3.blake3(repaired).digest():
        raise DamageError(f"{object_label(name)} did not read back correctly after repair; "
                          f"the damaged copy is kept as {aside}")
    storage.delete(aside)


def scrub_object(storage, name: str, fix: bool) -> ObjectRepair | None:
    """Check one object against its sidecar; None when both are intact."""
    label = object_label(name)
    found = ObjectRepair(name, label)
    try:
        raw = read_tolerant(storage, parity_name(name))
        data = read_tolerant(storage, name)
    except UnreachableError:
        raise
    except (OSError, StorageError) as exc:
        found.no_parity, found.problem = True, str(exc)
        return found
    if not raw:
        found.no_parity, found.problem = True, "it is missing"
        return found
    try:
        result = repair(data, raw, label)
    except DamageError as exc:
        found.no_parity, found.problem = True, "its header is damaged"
        return found
    if not result.damaged and not result.parity_damaged:
        return None
    found.damaged_sectors, found.lost_sectors = len(result.damaged), len(result.lost)
    found.parity_damaged = result.parity_damaged
    if fix and result.repaired:
        try:
            if result.damaged:
                write_back(storage, name, data, result.data)
            if result.parity_damaged:
                storage.write(parity_name(name), make_parity(result.data))
            found.written_back = True
        except UnreachableError:
            raise
        except (OSError, LifeboatError) as exc:
            found.problem = getattr(exc, "message", None) or str(exc)
    return found


def scrub(repo, names: list[str], *, fix: bool = False, on_event: EventSink | None = None,
          cancel: CancelToken | None = None) -> list[ObjectRepair]:
    """Scrub `names` on every core (progress phase "parity", in bytes); what was found, in
    name order."""
    sink = on_event or ignore
    storage = repo.storage
    sizes = {i.name: i.size for p in ("packs/", "index/", "snapshots/") for i in storage.list(p)}
    meter = Meter("parity", sum(sizes.get(n, 0) for n in names), sink)
    meter.add(0, force=True)
    found: list[ObjectRepair] = []

    def one(name: str):
        return scrub_object(storage, name, fix), sizes.get(name, 0)

    for result, size in ordered_map(one, sorted(names), cancel or CancelToken(), cores=WHOLE_OBJECTS_AT_ONCE):
        if result is not None:
            found.append(result)
        meter.add(size)
    meter.finish()
    return found
