"""The pieces of an encrypted repository on their own: sealing and its associated data,
keyed ids, key objects and their bounds, recovery codes, sealed footers and index files."""

from __future__ import annotations

import json
import os

import blake3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.errors import DamageError, RepositoryError, WrongPassphraseError
from recovery.repo.format import KIND_DATA, KIND_META, BlobEntry, blob_id
from recovery.repo.index import encode_index_file, index_file_packs
from recovery.repo.keys import KdfParams, KeyObject, new_key_object, parse_recovery_code, recovery_code
from recovery.repo.packs import PackWriter, read_footer
from recovery.repo import sealing
from recovery.repo.sealing import OVERHEAD, SealBroken, Sealer, key_check
from recovery.storage.local import LocalStorage

FAST = KdfParams(memory_kib=8 * 1024, iterations=1, parallelism=1)


def test_a_sealed_blob_opens_only_as_the_same_id_and_kind():
    s = Sealer(os.urandom(32))
    raw = b"some chunk" * 100
    bid = s.blob_id(raw)
    sealed = s.seal_blob(bid, KIND_DATA, raw)
    assert len(sealed) == len(raw) + OVERHEAD and raw not in sealed
    assert s.open_blob(bid, KIND_DATA, sealed) == raw
    for wrong in ((bid, KIND_META), (s.blob_id(b"other"), KIND_DATA)):
        with pytest.raises(SealBroken):
            s.open_blob(*wrong, sealed)
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(SealBroken):
        s.open_blob(bid, KIND_DATA, bytes(flipped))
    with pytest.raises(SealBroken):
        Sealer(os.urandom(32)).open_blob(bid, KIND_DATA, sealed)


def test_ids_are_keyed_per_master_key():
    raw = bytes(4096)
    a, b = Sealer(os.urandom(32)), Sealer(os.urandom(32))
    assert a.blob_id(raw) != b.blob_id(raw) != blob_id(raw)
    assert a.blob_id(raw) == a.blob_id(bytearray(raw)) == a.blob_id(memoryview(raw))


def test_key_object_unwraps_with_its_passphrase_only():
    master = os.urandom(32)
    key_id, body = new_key_object(master, "right words here", "repo-1", FAST, "2026-11-30T00:00:00Z")
    key = KeyObject.parse(f"keys/{key_id}.json", body)
    assert key.unwrap("right words here", "repo-1") == master
    assert key.unwrap("wrong words here", "repo-1") is None
    assert key.unwrap("right words here", "another-repo") is None      # bound to its repository
    assert master.hex() not in body.decode()


def test_a_key_object_asking_for_too_much_memory_is_refused_before_any_work():
    _, body = new_key_object(os.urandom(32), "right words here", "r", FAST, "")
    data = json.loads(body)
    data["kdf"]["memory_kib"] = 64 * 1024 * 1024
    with pytest.raises(RepositoryError, match="damaged or of an unknown kind"):
        KeyObject.parse("keys/x.json", json.dumps(data).encode())


def test_recovery_code_round_trip_and_typos():
    master = os.urandom(32)
    code = recovery_code(master)
    assert len(code.split("-")) == 14 and all(len(g) == 4 for g in code.split("-"))
    assert parse_recovery_code(code) == master
    assert parse_recovery_code(" " + code.lower().replace("-", " ") + "\n") == master
    typo = ("A" if code[5] != "A" else "B")
    with pytest.raises(WrongPassphraseError, match="not a valid recovery code"):
        parse_recovery_code(code[:5] + typo + code[6:])
    with pytest.raises(WrongPassphraseError):
        parse_recovery_code(code[:-5])


def test_sealed_footer_and_index_file(tmp_path):
    s = Sealer(os.urandom(32))
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    writer = PackWriter(storage, s)
    raw = b"x" * 1000
    bid = s.blob_id(raw)
    writer.add(bid, s.seal_blob(bid, KIND_DATA, raw), len(raw), KIND_DATA, 0)
    pack_id, entries = writer.finish()
    name = f"packs/{pack_id[:2]}/{pack_id}.pack"
    assert read_footer(storage, name, sealer=s) == entries
    assert bid not in (tmp_path / name).read_bytes()                   # ids are inside the seal
    with pytest.raises(DamageError, match="encrypted, unlike its repository"):
        read_footer(storage, name)
    with pytest.raises(DamageError, match="forged or altered"):
        read_footer(storage, name, sealer=Sealer(os.urandom(32)))
    other = tmp_path / "packs" / pack_id[:2] / ("0" * 64 + ".pack")
    other.write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(DamageError, match="another pack's content"):
        read_footer(storage, f"packs/{pack_id[:2]}/{other.name}", sealer=s)

    index_name, body = encode_index_file([(pack_id, entries)], s)
    assert bid not in body
    got = index_file_packs(index_name, body, s)
    assert [(p, BlobEntry.unpack_all(bytes(raw_entries))) for p, raw_entries in got] == [(pack_id, entries)]
    with pytest.raises(DamageError, match="another index file's content"):
        index_file_packs("index/" + "0" * 64 + ".idx", body, s)
    with pytest.raises(DamageError, match="is sealed, unlike its repository"):
        index_file_packs(index_name, body)
    storage.close()


# The sealed layouts as docs/FORMAT.md writes them down, rebuilt here from blake3 and AES-GCM
# directly: a repository sealed by one version must open in every later one.
DOCUMENTED_AAD = {
    "AAD_BLOB": b"lifeboat blob\x00",
    "AAD_FOOTER": b"lifeboat pack footer",
    "AAD_INDEX": b"lifeboat index file",
    "AAD_MANIFEST": b"lifeboat snapshot manifest",
    "AAD_MARK": b"lifeboat check mark\x00",
}


def documented_key(master: bytes, context: str) -> bytes:
    return blake3.blake3(master, derive_key_context=context).digest()


def test_keys_ids_and_seals_match_the_documented_format():
    master = bytes(range(32))
    s = Sealer(master)
    aead = AESGCM(documented_key(master, "lifeboat repository v2 aes-256-gcm sealing key"))
    id_key = documented_key(master, "lifeboat repository v2 chunk id key")
    assert key_check(master) == documented_key(master, "lifeboat repository v2 master key check").hex()
    assert s.blob_id(b"chunk") == blake3.blake3(b"chunk", key=id_key).digest()
    assert s.master == master                      # adding a passphrase wraps this key again
    assert (sealing.AEAD_NAME, sealing.ID_NAME) == ("aes-256-gcm", "blake3-keyed")  # config "encryption"
    for name, aad in DOCUMENTED_AAD.items():
        constant = getattr(sealing, name)
        sealed = s.seal(b"plain " + aad, constant)
        assert len(sealed) == 12 + len(b"plain " + aad) + 16
        assert aead.decrypt(sealed[:12], sealed[12:], aad) == b"plain " + aad
        nonce = os.urandom(12)
        assert s.open(nonce + aead.encrypt(nonce, b"theirs", aad), constant) == b"theirs"
    bid = s.blob_id(b"raw")
    sealed = s.seal_blob(bid, KIND_META, b"stored")
    assert aead.decrypt(sealed[:12], sealed[12:], b"lifeboat blob\x00" + bytes([KIND_META]) + bid) == b"stored"


def test_an_empty_plaintext_seals_to_exactly_the_overhead_and_shorter_input_is_refused():
    s = Sealer(os.urandom(32))
    sealed = s.seal(b"", b"aad")
    assert len(sealed) == OVERHEAD == 28
    assert s.open(sealed, b"aad") == b""
    with pytest.raises(SealBroken, match="^too short$"):
        s.open(sealed[:-1], b"aad")
    with pytest.raises(SealBroken, match="^authentication failed$"):
        s.open(sealed, b"other aad")
    with pytest.raises(ValueError, match="^a master key is 32 bytes$"):
        Sealer(bytes(31))


def test_a_blob_sealed_into_one_buffer_opens_and_is_laid_out_as_any_sealed_bytes():
    from recovery.repo.sealing import NONCE_SIZE, OVERHEAD, blob_aad, Sealer as S

    s = S(bytes(range(32)))
    bid = bytes(32)
    for size in (0, 1, 4096, 1_000_003):
        plain = os.urandom(size)
        sealed = s.seal_blob(bid, 1, plain)
        assert len(sealed) == size + OVERHEAD
        assert s.open_blob(bid, 1, sealed) == plain
        assert s.open(bytes(sealed), blob_aad(bid, 1)) == plain        # the documented layout: nonce, ciphertext, tag
        assert s.seal_blob(bid, 1, plain)[:NONCE_SIZE] != sealed[:NONCE_SIZE]   # a fresh nonce each time
        with pytest.raises(SealBroken):
            s.open_blob(bytes(31) + b"\x01", 1, sealed)                  # bound to its id
