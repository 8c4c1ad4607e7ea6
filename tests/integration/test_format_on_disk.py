"""A repository written by a real backup, read back byte by byte as docs/FORMAT.md describes
it, with no engine code: the magic numbers, the footer and trailer layout, kinds and codecs,
pack and index names. A change to the bytes on disk that the engine's own reader follows
(both sides share recovery/repo/format.py) fails here."""

from __future__ import annotations

import json
import struct
import zlib

import blake3
import zstandard

from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat
from tests.integration.test_repository_safety import data_tree, one_partition_disk


def test_a_backup_writes_the_documented_format(tmp_path):
    tree = data_tree(tmp_path / "tree", 3, MiB)
    (tree / "notes.txt").write_text("compressible\n" * 50_000)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.ext4", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    sid = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]

    config = json.loads((repo / "lifeboat-repo.json").read_text())
    assert (config["format"], config["version"], config["hash"], config["compression"], config["chunk_size"]) == \
           ("lifeboat-repository", 2, "blake3-256", "zstd", 1048576)
    assert config["parity"] == {"scheme": "sector-rs", "code": "isa-l-cauchy", "sidecar": ".par"}
    assert len(config["id"]) == 32 and int(config["id"], 16) >= 0

    snapshot = (repo / "snapshots" / f"{sid}.json").read_bytes()
    assert blake3.blake3(snapshot).hexdigest() == sid

    kinds, codecs, entries_seen = set(), set(), []
    packs = sorted((repo / "packs").glob("*/*.pack"))
    assert packs
    for pack in packs:
        data = pack.read_bytes()
        assert data[:8] == b"LBPACK\x00\x01"
        count, reserved, footer_hash, end = struct.unpack("<II32s8s", data[-48:])
        assert end == b"LBPKEND1" and reserved == 0
        footer = data[-48 - 56 * count:-48]
        assert blake3.blake3(footer).digest() == footer_hash
        assert pack.stem == blake3.blake3(footer).hexdigest() and pack.parent.name == pack.stem[:2]
        at = 8
        for i in range(count):
            bid, offset, stored_len, raw_len, kind, codec, pad = struct.unpack("<32sQIIBB6s", footer[56 * i:56 * (i + 1)])
            assert offset == at and pad == bytes(6), (pack.name, i)     # back to back, no padding
            at += stored_len
            stored = data[offset:offset + stored_len]
            raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_len) if codec == 1 else stored
            assert codec in (0, 1) and kind in (0, 1)
            assert len(raw) == raw_len and blake3.blake3(raw).digest() == bid
            if codec == 1:
                assert stored[:4] == b"\x28\xb5\x2f\xfd"               # one zstd frame
                assert stored_len <= raw_len - raw_len // 64           # raw unless zstd saves 1/64
            if kind == 0:
                assert raw_len <= config["chunk_size"]
            kinds.add(kind)
            codecs.add(codec)
            entries_seen.append((bytes.fromhex(pack.stem), footer[56 * i:56 * (i + 1)]))
        assert at == len(data) - 48 - 56 * count
    assert kinds == {0, 1}                  # disk data and the snapshot's chunk tables
    assert 1 in codecs                      # the text compresses; random data is stored raw
    assert 0 in codecs

    indexes = list((repo / "index").glob("*.idx"))
    assert indexes
    listed = []
    for index in indexes:
        data = index.read_bytes()
        assert data[:8] == b"LBINDEX\x01"
        assert blake3.blake3(data[:-32]).digest() == data[-32:] and index.stem == data[-32:].hex()
        at = 8
        while at < len(data) - 32:
            pack_id, count = struct.unpack_from("<32sI", data, at)
            at += 36
            listed += [(pack_id, data[at + 56 * i:at + 56 * (i + 1)]) for i in range(count)]
            at += 56 * count
        assert at == len(data) - 32
    assert sorted(listed) == sorted(entries_seen)

    # Every pack, index file and manifest has its parity sidecar, as "Parity (format v2)" says.
    objects = [*packs, *indexes, repo / "snapshots" / f"{sid}.json"]
    assert sorted(p.name for p in repo.rglob("*.par")) == sorted(p.name + ".par" for p in objects)
    recomputed = [check_sidecar(obj.read_bytes(), (obj.parent / (obj.name + ".par")).read_bytes())
                  for obj in objects]
    assert any(recomputed)


def gf_mul(a: int, b: int) -> int:
    """GF(2^8) with the polynomial 0x11D."""
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = (a << 1) ^ (0x11D if a & 0x80 else 0)
        b >>= 1
    return out


def gf_inv(a: int) -> int:
    return next(x for x in range(1, 256) if gf_mul(a, x) == 1)


def check_sidecar(data: bytes, side: bytes) -> bool:
    """Read a sidecar from the format description alone, and recompute its parity for small
    objects from the Cauchy matrix the description gives (True when it did)."""
    header = struct.Struct("<8sQIHHIIIII32s")
    head = side[:header.size + 8]
    assert side[-len(head):] == head
    assert blake3.blake3(head[:header.size]).digest()[:8] == head[header.size:]
    magic, length, s, max_k, permille, n, w, k, m, tb, digest = header.unpack(head[:header.size])
    assert (magic, length, max_k, permille, digest) == (b"LBPARIT3", len(data), 244, 45, blake3.blake3(data).digest())
    assert s == (512 if length <= 262144 else 4096)
    assert n == max(1, -(-length // s)) and w == -(-n // 244) and k == -(-n // w)
    assert m == max(2, -(-k * 45 // 1000)) and tb == -(-(n + m * w) // 126)
    table_at, parity_at = len(head), len(head) + 512 * tb
    assert len(side) == 2 * len(head) + 2 * 512 * tb + m * w * s
    table = side[table_at:parity_at]
    assert side[parity_at + m * w * s : parity_at + m * w * s + len(table)] == table
    sums = []
    for b in range(tb):
        block = table[512 * b : 512 * (b + 1)]
        assert blake3.blake3(block[:504]).digest()[:8] == block[504:]
        sums += struct.unpack("<126I", block[:504])
    padded = data + bytes(k * w * s - len(data))
    parity = side[parity_at : parity_at + m * w * s]
    sectors = [padded[i * s:(i + 1) * s] for i in range(n)] + [parity[i * s:(i + 1) * s] for i in range(m * w)]
    assert sums[: n + m * w] == [zlib.crc32(x) for x in sectors]
    if w == 1 and k * s <= 8192:
        for p in range(m):
            want = bytearray(s)
            for j in range(k):
                coef = gf_inv((k + p) ^ j)
                for i, byte in enumerate(padded[j * s:(j + 1) * s]):
                    want[i] ^= gf_mul(coef, byte)
            assert parity[p * s:(p + 1) * s] == bytes(want), f"parity sector {p}"
        return True
    return False
