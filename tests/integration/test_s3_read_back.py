"""The backup's read-back check on an S3 repository (SeaweedFS on loopback): one streamed GET
per pack gives the same digests as reading it piece by piece, sees bytes changed on the
server, and the late check finds a pack that went away or changed size."""

from __future__ import annotations

import io
import os

import blake3
import pytest

from recovery.errors import DamageError
from recovery.storage import s3 as s3mod
from recovery.storage.base import Storage
from recovery.storage.location import open_location
from recovery.verify import check_new_packs
from tests.integration.engine_fixtures import MiB


@pytest.fixture
def s3(seaweedfs, monkeypatch):
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "2")
    seaweedfs.bucket("readback")
    storage = open_location("s3://readback/t")
    yield storage
    storage.close()


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * MiB + 12345, 9 * MiB])
def test_one_get_gives_the_digests_of_a_piecewise_read(s3, size):
    data = os.urandom(size)
    s3.write(f"obj-{size}", data)
    whole, samples = s3.read_back(f"obj-{size}", size)
    assert whole == blake3.blake3(data).digest()
    assert (whole, samples) == Storage.read_back(s3, f"obj-{size}", size)      # the generic read, range by range
    assert samples == Storage.read_back_samples(s3, f"obj-{size}", size)


@pytest.mark.parametrize("single_put", [s3mod.SINGLE_PUT_DEFAULT, 0])
@pytest.mark.parametrize("size", [0, 1, 17 * MiB + 3])
def test_an_object_goes_up_in_one_put_or_in_parts_and_reads_back_the_same(s3, monkeypatch, size, single_put):
    """A pack goes up in one PUT (the default up to 5 GiB); larger objects in parallel parts,
    taken here with the threshold at 0. The bytes come back the same either way."""
    monkeypatch.setattr(s3mod, "SINGLE_PUT", single_put)
    data = os.urandom(size)
    writer = s3.create()
    view = memoryview(data)
    for at in range(0, size, 3 * MiB):
        writer.write(view[at : at + 3 * MiB])
    writer.commit(f"put-{size}-{single_put}")
    assert s3.size(f"put-{size}-{single_put}") == size
    assert s3.read(f"put-{size}-{single_put}") == data


def test_changed_bytes_on_the_server_are_seen(s3, seaweedfs):
    data = os.urandom(2 * MiB + 7)
    s3.write("pack", data)
    changed = bytearray(data)
    changed[MiB + 3] ^= 0x01
    seaweedfs.client().put_object("readback", "t/pack", io.BytesIO(bytes(changed)), len(changed))
    assert s3.read_back("pack", len(data))[0] != blake3.blake3(data).digest()
    with pytest.raises(FileNotFoundError):
        s3.read_back("no-such-pack")


class _Repo:
    def __init__(self, storage):
        self.storage = storage
        self.index = None


class _Pack:
    def __init__(self, pid: str, size: int, digest: bytes):
        self.id, self.size, self.digest = pid, size, digest


class _Early:
    def __init__(self, samples: bytes):
        self.samples = samples

    def result(self, _pack_id):
        return self.samples


def test_the_late_check_on_an_object_store_finds_a_pack_gone_or_cut(s3, seaweedfs):
    from recovery.repo.packs import pack_name
    from recovery.events import CancelToken

    assert s3.shared_offsets is False
    pid = "ab" + "0" * 62
    data = os.urandom(MiB + 5)
    s3.write(pack_name(pid), data)
    pack = _Pack(pid, len(data), blake3.blake3(data).digest())
    early = _Early(s3.read_back(pack_name(pid), len(data))[1])
    check_new_packs(_Repo(s3), [pack], [], lambda e: None, CancelToken(), early)       # whole and there: passes
    seaweedfs.client().put_object("readback", f"t/{pack_name(pid)}", io.BytesIO(data[:-5]), len(data) - 5)
    with pytest.raises(DamageError, match="now holds"):
        check_new_packs(_Repo(s3), [pack], [], lambda e: None, CancelToken(), early)
    s3.delete(pack_name(pid))
    with pytest.raises(DamageError, match="cannot be read back"):
        check_new_packs(_Repo(s3), [pack], [], lambda e: None, CancelToken(), early)
