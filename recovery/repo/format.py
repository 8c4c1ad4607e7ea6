"""Byte layouts of repository formats v1 and v2. docs/FORMAT.md is the normative description."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

FORMAT_NAME = "lifeboat-repository"
FORMAT_VERSION = 2           # new repositories; v2 adds parity sidecars (docs/FORMAT.md)
READABLE_VERSIONS = (1, 2)   # a v1 repository is read and written as v1 until `repo upgrade`
CONFIG_FILE = "lifeboat-repo.json"

PACK_MAGIC = b"LBPACK\x00\x01"
PACK_END_MAGIC = b"LBPKEND1"
PACK_END_SEALED = b"LBPKENC1"     # an encrypted repository's pack: its footer entries are sealed
INDEX_MAGIC = b"LBINDEX\x01"
INDEX_MAGIC_SEALED = b"LBINDEX\x02"

ID_SIZE = 32
NO_DATA = bytes(ID_SIZE)      # chunk-table entry for a window that holds no used byte

KIND_DATA = 0                 # a chunk of disk data
KIND_META = 1                 # a piece of a snapshot's chunk table or range map

CODEC_RAW = 0
CODEC_ZSTD = 1

# id(32) offset(u64) stored_len(u32) raw_len(u32) kind(u8) codec(u8) reserved(6)
ENTRY = struct.Struct("<32sQIIBB6x")
# entry_count(u32) reserved(u32) footer_hash(32) end_magic(8)
TRAILER = struct.Struct("<II32s8s")


def blob_id(raw: bytes | bytearray | memoryview) -> bytes:
    """A blob's id: BLAKE3-256 of its raw (uncompressed) content."""
    return blake3.blake3(raw).digest()


@dataclass(frozen=True)
class BlobEntry:
    id: bytes
    offset: int
    stored_len: int
    raw_len: int
    kind: int
    codec: int

    def pack(self) -> bytes:
        return ENTRY.pack(self.id, self.offset, self.stored_len, self.raw_len, self.kind, self.codec)

    @classmethod
    def unpack_all(cls, data: bytes) -> list["BlobEntry"]:
        return [cls(*fields) for fields in ENTRY.iter_unpack(data)]


def encode_footer(entries: list[BlobEntry]) -> bytes:
    body = b"".join(e.pack() for e in entries)
    digest = blake3.blake3(body).digest()
    return body + TRAILER.pack(len(entries), 0, digest, PACK_END_MAGIC)


def pack_id_of(footer: bytes) -> str:
    """A pack's id: BLAKE3 of its footer (which lists every blob id and offset in it)."""
    return blake3.blake3(footer).hexdigest()
