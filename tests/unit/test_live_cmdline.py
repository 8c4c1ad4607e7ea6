"""The live system's unattended-restore request, parsed from a kernel command line."""

import pytest

from recovery.errors import RefusedError, UsageError
from recovery.live import (RepoLocator, lifeboat_params, parse_repo_locator, parse_request, parse_secrets,
                           resolve_target, split_cmdline, then_after_error)
from recovery.model.disk import DiskInfo

BASE = "BOOT_IMAGE=/live/vmlinuz console=tty0 console=ttyS0,115200n8 quiet"


def test_split_like_the_kernel():
    assert split_cmdline('a b="c d"  "e=f g" h\n') == ["a", "b=c d", "e=f g", "h"]
    assert split_cmdline("") == []


def test_no_repo_means_no_unattended_restore():
    assert parse_request(BASE) is None
    assert parse_request(BASE + " lifeboat.target=/dev/sda lifeboat.yes=1") is None


def test_full_request():
    req = parse_request(BASE + " lifeboat.repo=LABEL=BACKUPS:/lifeboat/repo lifeboat.snapshot=3fa2c1"
                        " lifeboat.target=SER123 lifeboat.layout=keep lifeboat.yes=1 lifeboat.then=poweroff"
                        " lifeboat.name=office-pc")
    assert req.repo == RepoLocator("label", "BACKUPS", "/lifeboat/repo")
    assert (req.snapshot, req.target, req.layout, req.yes, req.then) == ("3fa2c1", "SER123", "keep", True, "poweroff")
    assert req.name == "office-pc"


def test_defaults_are_latest_grow_ask_and_shell():
    req = parse_request("lifeboat.repo=/dev/sdb1 lifeboat.target=/dev/nvme0n1")
    assert req.repo == RepoLocator("device", "/dev/sdb1", "/")
    assert (req.snapshot, req.layout, req.yes, req.then, req.name) == ("latest", "grow", False, "shell", None)


def test_later_parameter_wins_and_bare_flag_is_one():
    p = lifeboat_params("lifeboat.then=reboot lifeboat.then=poweroff lifeboat.yes")
    assert p == {"then": "poweroff", "yes": "1"}


@pytest.mark.parametrize("text,expected", [
    ("LABEL=BACKUPS:/lifeboat", RepoLocator("label", "BACKUPS", "/lifeboat")),
    ("label=My Disk:/a/b/", RepoLocator("label", "My Disk", "/a/b")),
    ("UUID=0A1B-2C3D:/repo", RepoLocator("uuid", "0a1b-2c3d", "/repo")),
    ("UUID=6f1e0f9c-2f1a-4b5e-9d7e-1c2b3a4d5e6f", RepoLocator("uuid", "6f1e0f9c-2f1a-4b5e-9d7e-1c2b3a4d5e6f", "/")),
    ("/dev/sdb1:/backups", RepoLocator("device", "/dev/sdb1", "/backups")),
    # by-id names contain ':' but never ':/'
    ("/dev/disk/by-id/usb-Kingston_DT_0-0:0-part1:/r", RepoLocator("device", "/dev/disk/by-id/usb-Kingston_DT_0-0:0-part1", "/r")),
])
def test_repo_locators(text, expected):
    assert parse_repo_locator(text) == expected


@pytest.mark.parametrize("text", ["", "backups:/x", "LABEL=:/x", "sdb1:/repo", "UUID="])
def test_bad_repo_locators_are_refused_in_plain_words(text):
    with pytest.raises(UsageError) as exc:
        parse_repo_locator(text)
    assert "lifeboat.repo" in exc.value.message


@pytest.mark.parametrize("url", ["s3://backups/office", "sftp://anna@nas.local/srv/lifeboat",
                                 "smb://WORK;anna@nas/backups/lifeboat", "nfs://10.0.0.2/export/lifeboat"])
def test_network_repository_with_secrets_from_a_partition(url):
    req = parse_request(f"lifeboat.repo={url} lifeboat.secrets=LABEL=KEYS:/lifeboat-secrets lifeboat.target=SER1")
    assert req.repo == RepoLocator("url", url, "")
    assert req.repo.describe() == f"the network repository {url}"
    assert req.secrets == RepoLocator("label", "KEYS", "/lifeboat-secrets")


@pytest.mark.parametrize("text,word", [
    ("lifeboat.repo=sftp://anna:hunter2@nas/x", "password"),    # a secret on the command line
    ("lifeboat.repo=ftp://nas/x", "lifeboat.repo"),
    ("lifeboat.repo=s3://backups/p lifeboat.secrets=LABEL=KEYS", "names no file"),
    ("lifeboat.repo=s3://backups/p lifeboat.secrets=keys.txt", "lifeboat.secrets"),
])
def test_bad_network_requests_are_refused_before_anything(text, word):
    with pytest.raises(UsageError) as exc:
        parse_request(f"{text} lifeboat.target=SER1")
    assert word in exc.value.message
    assert "hunter2" not in exc.value.message


def test_secrets_file_lines():
    text = "# the office NAS\nLIFEBOAT_PASSWORD=s3cret = with spaces\n\nAWS_ACCESS_KEY_ID = AKIA1\n"
    assert parse_secrets(text, "the file") == {"LIFEBOAT_PASSWORD": "s3cret = with spaces", "AWS_ACCESS_KEY_ID": "AKIA1"}
    with pytest.raises(UsageError) as exc:
        parse_secrets("LIFEBOAT_PASSWORD=ok\nPASSWORD=topsecret\n", "the file")
    assert exc.value.message.startswith("line 2 of the file is not NAME=value") and "topsecret" not in exc.value.message


@pytest.mark.parametrize("extra,word", [
    ("lifeboat.layout=squeeze", "lifeboat.layout"),
    ("lifeboat.then=dance", "lifeboat.then"),
    ("lifeboat.yes=maybe", "lifeboat.yes"),
])
def test_bad_values_are_refused(extra, word):
    with pytest.raises(UsageError) as exc:
        parse_request(f"lifeboat.repo=LABEL=B:/r lifeboat.target=/dev/vdb {extra}")
    assert word in exc.value.message


def test_missing_target_is_refused():
    with pytest.raises(UsageError, match="lifeboat.target"):
        parse_request("lifeboat.repo=LABEL=B:/r lifeboat.yes=1")


def test_after_an_error_never_reboot_into_the_same_restore():
    assert then_after_error("lifeboat.then=reboot") == "shell"
    assert then_after_error("lifeboat.then=poweroff") == "poweroff"
    assert then_after_error("") == "shell"


DISKS = [
    DiskInfo(path="/dev/vda", size=1 << 30, by_id="/dev/disk/by-id/virtio-REPO01", serial="REPO01"),
    DiskInfo(path="/dev/nvme0n1", size=1 << 30, by_id="/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_TGT7", serial="TGT7"),
    DiskInfo(path="/dev/sda", size=1 << 30, by_id="/dev/disk/by-id/ata-QEMU_HARDDISK_DUP", serial="DUP"),
    DiskInfo(path="/dev/sdb", size=1 << 30, by_id="/dev/disk/by-id/usb-QEMU_DUP-0:0", serial="DUP"),
]


@pytest.mark.parametrize("name,path", [
    ("TGT7", "/dev/nvme0n1"),
    ("nvme-QEMU_NVMe_Ctrl_TGT7", "/dev/nvme0n1"),
    ("/dev/disk/by-id/virtio-REPO01", "/dev/vda"),
    ("usb-QEMU_DUP-0:0", "/dev/sdb"),
])
def test_target_by_serial_or_by_id(name, path):
    assert resolve_target(name, DISKS) == path


def test_target_by_device_path_is_taken_as_is():
    assert resolve_target("/dev/sdz", DISKS) == "/dev/sdz"


def test_ambiguous_or_unknown_target_is_refused():
    with pytest.raises(RefusedError, match="several disks"):
        resolve_target("DUP", DISKS)
    with pytest.raises(RefusedError, match="no disk matches"):
        resolve_target("NOPE", DISKS)


def test_passphrase_file_locator():
    from recovery.live import parse_passphrase_locator

    req = parse_request(BASE + " lifeboat.repo=LABEL=BACKUPS:/lifeboat lifeboat.target=SER1"
                        " lifeboat.passphrase=LABEL=KEYS:/secret/pass.txt")
    assert req.passphrase == RepoLocator("label", "KEYS", "/secret/pass.txt")
    assert parse_request(BASE + " lifeboat.repo=LABEL=B:/ lifeboat.target=SER1").passphrase is None
    for bad in ("LABEL=KEYS", "LABEL=KEYS:/", "KEYS:/pass.txt"):
        with pytest.raises(UsageError, match="lifeboat.passphrase"):
            parse_passphrase_locator(bad)
