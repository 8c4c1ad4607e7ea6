"""The in-memory index (blob id -> where it lives) and the index files that persist it.

Index files only speed up opening: every pack carries its own footer, so a pack that landed
without an index file (a killed backup) is found by listing packs/ and reading its footer.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3

from recovery.errors import DamageError
from recovery.repo.format import ENTRY, INDEX_MAGIC, BlobEntry
from recovery.repo.packs import fsync_dir, read_footer

PACK_HEADER = struct.Struct("<32sI")
_OFFSET_BITS = 40
_LEN_BITS = 32


@dataclass(frozen=True)
class Location:
    pack_id: str
    offset: int
    stored_len: int
    raw_len: int
    kind: int
    codec: int


class Index:
    """Blob id -> location, packed into one int per blob (~150 bytes a blob in CPython)."""

    def __init__(self) -> None:
        self.packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._where: dict[bytes, int] = {}
        self.problems: list[str] = []   # packs whose footer could not be read

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._where

    def add_pack(self, pack_id: str, entries: list[BlobEntry]) -> None:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self.packs)
            self.packs.append(pack_id)
            self._pack_numbers[pack_id] = number
        for e in entries:
            value = (number << _OFFSET_BITS) | e.offset
            value = (value << _LEN_BITS) | e.stored_len
            value = (value << _LEN_BITS) | e.raw_len
            self._where.setdefault(e.id, (value << 2) | (e.kind << 1) | e.codec)

    def get(self, blob_id: bytes) -> Location | None:
        value = self._where.get(blob_id)
        if value is None:
            return None
        codec, kind = value & 1, (value >> 1) & 1
        value >>= 2
        raw_len = value & ((1 << _LEN_BITS) - 1)
        value >>= _LEN_BITS
        stored_len = value & ((1 << _LEN_BITS) - 1)
        value >>= _LEN_BITS
        offset = value & ((1 << _OFFSET_BITS) - 1)
        return Location(self.packs[value >> _OFFSET_BITS], offset, stored_len, raw_len, kind, codec)

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._pack_numbers

    @classmethod
    def load(cls, root: Path) -> "Index":
        index = cls()
        for path in sorted((root / "index").glob("*.idx")):
            try:
                for pack_id, entries in read_index_file(path):
                    index.add_pack(pack_id, entries)
            except DamageError as exc:
                index.problems.append(str(exc))   # packs are scanned below instead
        for path in sorted((root / "packs").glob("*/*.pack")):
            pack_id = path.stem
            if index.has_pack(pack_id):
                continue
            try:
                index.add_pack(pack_id, read_footer(path))
            except DamageError as exc:
                index.problems.append(str(exc))
        return index


def write_index_file(root: Path, packs: list[tuple[str, list[BlobEntry]]]) -> Path:
    body = bytearray(INDEX_MAGIC)
    for pack_id, entries in packs:
        body += PACK_HEADER.pack(bytes.fromhex(pack_id), len(entries))
        for e in entries:
            body += e.pack()
    digest = blake3.blake3(body).digest()
    body += digest
    name = digest.hex()
    tmp = root / "tmp" / f"{name}.idx"
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    final = root / "index" / f"{name}.idx"
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def read_index_file(path: Path) -> list[tuple[str, list[BlobEntry]]]:
    data = path.read_bytes()
    if not data.startswith(INDEX_MAGIC) or len(data) < len(INDEX_MAGIC) + 32:
        raise DamageError(f"index file {path.name} is damaged")
    body, digest = data[:-32], data[-32:]
    if blake3.blake3(body).digest() != digest:
        raise DamageError(f"index file {path.name} is damaged")
    out = []
    pos = len(INDEX_MAGIC)
    while pos < len(body):
        raw_id, count = PACK_HEADER.unpack_from(body, pos)
        pos += PACK_HEADER.size
        end = pos + count * ENTRY.size
        out.append((raw_id.hex(), BlobEntry.unpack_all(body[pos:end])))
        pos = end
    return out
