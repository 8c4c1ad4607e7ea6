"""An encrypted repository in S3 object storage (a real SeaweedFS server on loopback): made,
backed up to, opened again through this machine's cache, restored with every file compared."""

from __future__ import annotations

import json

import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, assert_restored, build_gpt_pc, lifeboat
from tests.integration.test_encryption import FAST_KDF, PASSPHRASE, secret_file


@pytest.fixture
def s3env(seaweedfs, monkeypatch, tmp_path):
    for key, value in seaweedfs.env(LIFEBOAT_LOG_DIR=str(tmp_path / "logs")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    return seaweedfs


def test_encrypted_round_trip_through_s3(tmp_path, s3env, monkeypatch):
    s3env.bucket("sealed")
    repo = "s3://sealed/office"
    pw = secret_file(tmp_path / "pass", PASSPHRASE)
    pc = build_gpt_pc(tmp_path, fi.make_tree(tmp_path / "tree"))
    lifeboat("repo", "init", repo, "--encrypt", "--passphrase-file", pw, *FAST_KDF)
    monkeypatch.setenv("LIFEBOAT_PASSPHRASE_FILE", str(pw))
    made = lifeboat("backup", pc.disk, "--repo", repo, "--name", "Reception-Desk-2", "--json", json_out=True).data
    for _ in range(2):        # the second opening reads index files and manifests from the cache
        snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
        assert [(s["id"], s["name"]) for s in snaps] == [(made["snapshot"], "Reception-Desk-2")]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(96 * MiB)
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    assert_restored(pc, target)
    client = s3env.client()
    names = [o.object_name for o in client.list_objects("sealed", recursive=True)]
    assert any(n.startswith("office/keys/") for n in names)
    for name in names:
        body = client.get_object("sealed", name).read()
        assert b"Reception-Desk-2" not in body and PASSPHRASE.encode() not in body
        if name.startswith("office/snapshots/"):
            with pytest.raises(ValueError):
                json.loads(body)
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached and not any(b"Reception-Desk-2" in p.read_bytes() for p in cached)
