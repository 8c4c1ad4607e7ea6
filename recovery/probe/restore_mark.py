"""The mark a restore leaves on a disk until it has finished: "incomplete restore of <name>".

A restore first wipes the old table signatures and puts this mark in the first sector; the
partition table (or, for a whole-disk filesystem, its first window) is written last and
replaces it. So a restore that is stopped, crashes or loses power leaves a disk that no
firmware or tool takes for a working system, and that Lifeboat names and can resume.

Byte layout of sector 0 while a restore runs: the magic line below, then one line of JSON
(snapshot id, machine name, snapshot date, start time, repository id), zero-padded to 512
bytes. Bytes 510..511 are never 0x55 0xAA, so no firmware or partitioning tool sees an MBR;
a sector that carries that signature is never read as a mark (the table was written).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

MAGIC = b"LIFEBOAT-INCOMPLETE-RESTORE v1\n"
SECTOR = 512


@dataclass(frozen=True)
class IncompleteRestore:
    snapshot: str
    name: str
    created: str       # the snapshot's date
    started: str       # when the restore began
    repository: str = ""   # the repository's id, so a resume is offered from the same one

    def describe(self) -> str:
        return f"incomplete restore of {self.name} {self.created}"

    def to_json(self) -> dict:
        return asdict(self)


def encode(mark: IncompleteRestore) -> bytes:
    body = MAGIC + json.dumps(mark.to_json(), sort_keys=True).encode() + b"\n"
    if len(body) > SECTOR - 2:
        raise ValueError("the restore mark does not fit in one sector")
    return body + bytes(SECTOR - len(body))


def decode(sector: bytes) -> IncompleteRestore | None:
    """The mark in a disk's first sector, or None (no mark, or a real table over it)."""
    if len(sector) < SECTOR or sector[510:512] == b"\x55\xaa" or not sector.startswith(MAGIC):
        return None
    line = sector[len(MAGIC):].split(b"\n", 1)[0]
    try:
        data = json.loads(line)
        return IncompleteRestore(**{k: str(data.get(k, "")) for k in IncompleteRestore.__dataclass_fields__})
    except (ValueError, TypeError):
        return None


def read_mark(path: str) -> IncompleteRestore | None:
    """The mark on a disk or disk-image file; None when there is none or it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return decode(os.pread(fd, SECTOR, 0))
    except OSError:
        return None
    finally:
        os.close(fd)
