"""Remembered network locations (tui/netlocations.py): the latest first, at most KEEP, never a
secret, a damaged file read as an empty list; and the secrets given to this process only."""

from __future__ import annotations

import json
import os

import pytest

from recovery.errors import UsageError
from tui import netlocations


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(tmp_path / "data"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LIFEBOAT_S3_ENDPOINT", "LIFEBOAT_S3_PATH_STYLE",
                "LIFEBOAT_S3_VIRTUAL_HOST", "LIFEBOAT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "data"


def test_latest_first_without_duplicates_and_bounded(data_dir):
    assert netlocations.load() == []
    netlocations.remember("s3://bucket-a/pcs", "http://127.0.0.1:9000")
    netlocations.remember("sftp://me@server.lan/srv/backups")
    netlocations.remember("s3://bucket-a/pcs/", "http://127.0.0.1:9000")       # the same, used again
    got = netlocations.load()
    assert [r.url for r in got] == ["s3://bucket-a/pcs", "sftp://me@server.lan:22/srv/backups"]   # as the engine writes it
    assert got[0].endpoint == "http://127.0.0.1:9000" and got[1].endpoint == ""
    assert got[0].when() != "?"
    for i in range(netlocations.KEEP + 3):
        netlocations.remember(f"nfs://nas.lan/export/pc{i}")
    got = netlocations.load()
    assert len(got) == netlocations.KEEP and got[0].url == f"nfs://nas.lan/export/pc{netlocations.KEEP + 2}"


def test_never_a_secret_and_never_a_folder(data_dir):
    with pytest.raises(UsageError, match="a password never goes in the location"):
        netlocations.remember("sftp://me:hunter2@server.lan/srv")
    with pytest.raises(UsageError, match="is a folder, not a network location"):
        netlocations.remember("/media/usb")
    assert not (data_dir / netlocations.FILE_NAME).exists()


def test_a_damaged_file_is_an_empty_list_and_is_replaced(data_dir):
    data_dir.mkdir()
    (data_dir / netlocations.FILE_NAME).write_text("{not json")
    assert netlocations.load() == []
    (data_dir / netlocations.FILE_NAME).write_text(json.dumps({"locations": [{"url": "ftp://x/y"}, "junk"]}))
    assert netlocations.load() == []
    netlocations.remember("nfs://nas.lan/export/pcs")
    assert [r.url for r in netlocations.load()] == ["nfs://nas.lan/export/pcs"]


def test_secrets_go_to_this_process_only_and_empty_fields_remove_them():
    os.environ["LIFEBOAT_S3_VIRTUAL_HOST"] = "1"           # from a secrets file: the TUI's choice wins
    netlocations.apply("s3", {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}, "http://127.0.0.1:9000")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "SK" and os.environ["LIFEBOAT_S3_PATH_STYLE"] == "1"
    assert "LIFEBOAT_S3_VIRTUAL_HOST" not in os.environ
    netlocations.apply("s3", {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": ""}, "")
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ and "LIFEBOAT_S3_ENDPOINT" not in os.environ
    netlocations.apply("smb", {"LIFEBOAT_PASSWORD": "pw"})
    assert os.environ["LIFEBOAT_PASSWORD"] == "pw"
    assert netlocations.scheme_of("SMB://me@nas/share") == "smb" and netlocations.scheme_of("/media") is None
