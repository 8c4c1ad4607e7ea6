"""Mistakes with smb:// and nfs:// locations that need no server to show: a name that does not
resolve is one plain line, exit 5, before any mount is tried (mount.cifs's own words for it
were "mount error: could not resolve address for …: Unknown error"); and mount.cifs's answers
(its "mount error(N)" line, always followed by a pointer to its manual) become the line that
says what to fix. Wrong passwords and missing shares against a real Samba are in the VM tier
(this machine's kernel has no cifs client)."""

from __future__ import annotations

import os

import pytest

from recovery.host.netmounts import cifs_error
from recovery.storage import location, mounted
from recovery.storage.base import StorageError
from tests.integration.engine_fixtures import lifeboat
from tests.integration.test_repository_safety import one_line_error
from tests.netservers import network_mounts


@pytest.mark.parametrize("repo", ["smb://ann@no-such-host.invalid/backups/pc", "nfs://no-such-host.invalid/export/pc"])
def test_a_name_that_does_not_resolve_is_one_line(tmp_path, monkeypatch, repo):
    monkeypatch.setenv("LIFEBOAT_PASSWORD", "hunter2")
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(tmp_path / "data"))
    line = one_line_error(lifeboat("snapshots", "--repo", repo, check=False), 5)
    assert line == "lifeboat: the name no-such-host.invalid does not resolve: check the server's name and the network"
    assert not network_mounts("no-such-host.invalid")


REFER = "Refer to the mount.cifs(8) manual page (e.g. man mount.cifs) and kernel log messages (dmesg)"


@pytest.mark.parametrize("said, words", [
    ("mount error(13): Permission denied", "refused the login of ann to the share backups: check the user name"),
    ("mount error(2): No such file or directory", "the share backups does not exist on nas"),
    ("mount error: cifs filesystem not supported by the system\nmount error(19): No such device",
     "kernel has no SMB (cifs) client"),
    ("mount error(112): Host is down", "no SMB server answers at nas"),
    ("mount error(113): could not connect to 10.0.0.9Unable to find suitable address.", "no SMB server answers at nas"),
    ("mount error(95): Operation not supported", "cannot mount //nas/backups: mount error(95): Operation not supported"),
])
def test_mount_cifs_answers_become_the_line_that_says_what_to_fix(said, words):
    message = cifs_error(f"{said}\n{REFER}\n", "nas", "backups", "ann").message
    assert words in message, message
    assert "Refer to" not in message


def test_a_failed_mount_leaves_no_folder_behind():
    """Each attempt makes its mount point under the mount root; a refused or failed mount
    (here NFS with no server and no statd) must not leave it there, one empty folder per try."""
    root = mounted._mount_root()

    def ours() -> list[str]:
        return sorted(p.name for p in root.iterdir() if p.name.endswith(f"-{os.getpid()}"))

    before = ours()
    with pytest.raises(StorageError):
        mounted.MountedStorage.mount(location.parse("nfs://127.0.0.1/export/pc"))
    assert ours() == before
