"""The in-memory index (blob id -> where it lives) and the index files that persist it.

Index files only speed up opening: every pack carries its own footer, so a pack that landed
without an index file (a killed backup) is found by listing packs/ and reading its footer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import blake3

from recovery.errors import DamageError
from recovery.repo.format import ENTRY, INDEX_MAGIC, BlobEntry
from recovery.repo.packs import read_footer
from recovery.storage.base import Storage, StorageError, UnreachableError
from recovery.storage.local import LocalStorage

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
    def load(cls, storage, cache=None) -> "Index":
        """Every index file, then the footer of each pack no index file names. `storage` is a
        Storage (or a repository folder's path); `cache` (an IndexCache) keeps copies of
        index files and footers on this machine, so a network repository opened again costs
        one listing plus what is new since."""
        if not isinstance(storage, Storage):
            with LocalStorage(Path(storage)) as local:
                return cls.load(local, cache)
        index = cls()
        for info in sorted(storage.list("index/"), key=lambda i: i.name):
            if not info.name.endswith(".idx"):
                continue
            try:
                packs = None
                data = cache.get(info.name) if cache else None
                if data is not None:
                    try:
                        packs = parse_index_file(info.name, data)
                    except DamageError:
                        cache.drop(info.name)          # a damaged copy: fetch it again
                if packs is None:
                    data = storage.read(info.name)
                    packs = parse_index_file(info.name, data)
                    if cache:
                        cache.put(info.name, data)
                for pack_id, entries in packs:
                    index.add_pack(pack_id, entries)
            except UnreachableError:
                raise
            except (DamageError, FileNotFoundError, StorageError) as exc:
                index.problems.append(str(exc))   # packs are scanned below instead
        for info in sorted(storage.list("packs/"), key=lambda i: i.name):
            if not info.name.endswith(".pack"):
                continue
            pack_id = info.name.rpartition("/")[2][: -len(".pack")]
            if index.has_pack(pack_id):
                continue
            try:
                entries = cache.footer(pack_id, info.size) if cache else None
                if entries is None:
                    entries = read_footer(storage, info.name, info.size)
                    if cache:
                        cache.put_footer(pack_id, info.size, entries)
                index.add_pack(pack_id, entries)
            except DamageError as exc:
                index.problems.append(str(exc))
        return index


def encode_index_file(packs: list[tuple[str, list[BlobEntry]]]) -> tuple[str, bytes]:
    """An index file's object name and bytes."""
    body = bytearray(INDEX_MAGIC)
    for pack_id, entries in packs:
        body += PACK_HEADER.pack(bytes.fromhex(pack_id), len(entries))
        for e in entries:
            body += e.pack()
    digest = blake3.blake3(body).digest()
    body += digest
    return f"index/{digest.hex()}.idx", bytes(body)


def write_index_file(storage: Storage, packs: list[tuple[str, list[BlobEntry]]]) -> str:
    name, body = encode_index_file(packs)
    storage.write(name, body)
    return name


def read_index_file(path: Path) -> list[tuple[str, list[BlobEntry]]]:
    return parse_index_file(Path(path).name, Path(path).read_bytes())


def parse_index_file(name: str, data: bytes) -> list[tuple[str, list[BlobEntry]]]:
    label = name.rpartition("/")[2]
    if not data.startswith(INDEX_MAGIC) or len(data) < len(INDEX_MAGIC) + 32:
        raise DamageError(f"index file {label} is damaged")
    body, digest = data[:-32], data[-32:]
    if blake3.blake3(body).digest() != digest:
        raise DamageError(f"index file {label} is damaged")
    out = []
    pos = len(INDEX_MAGIC)
    while pos < len(body):
        raw_id, count = PACK_HEADER.unpack_from(body, pos)
        pos += PACK_HEADER.size
        end = pos + count * ENTRY.size
        out.append((raw_id.hex(), BlobEntry.unpack_all(body[pos:end])))
        pos = end
    return out
