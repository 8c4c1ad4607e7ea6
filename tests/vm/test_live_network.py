"""The live system on the network, against real servers on this machine reached through
QEMU's user network (the host is 10.0.2.2 there): wired Ethernet comes up by DHCP as it
boots; an unattended restore from an S3 repository, its secrets read from a labelled
partition, ends in a disk that boots; and in the shell, repositories on SMB (Samba) and NFS
(nfs-ganesha), mounted by the live kernel's own cifs and nfs clients (this machine's kernel
has neither), take a backup, check it and restore it, every file compared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.netservers import SMB_PASSWORD, SMB_USER, ganesha, seaweedfs, smbd  # noqa: F401 - fixtures
from tests.vm import golden
from tests.vm.live_shell import assert_restored, open_shell, power_off, shell_step, source_disk
from tests.vm.qemu import Disk, Machine
from tests.vm.test_iso import BOOT_TIMEOUT, MIB, RESULT, ROOT, blank, live_machine
from tests.vm.test_iso import iso  # noqa: F401 - the built ISO, a fixture

pytestmark = pytest.mark.vm

HOST = "10.0.2.2"          # this machine, as QEMU's user network shows it to the guest


def lifeboat(*args, env: dict) -> str:
    out = subprocess.run([sys.executable, "-m", "recovery", *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **env})
    assert out.returncode == 0, f"lifeboat {args}: {out.stderr}"
    return out.stdout


def secrets_disk(tmp_path, label: str, lines: dict) -> tuple:
    """An ext4 filesystem labelled `label` holding /lifeboat-secrets."""
    staging = tmp_path / "secrets-fs"
    staging.mkdir()
    (staging / "lifeboat-secrets").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    image = blank(tmp_path / "secrets.img", 16 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", str(staging), str(image)], check=True)
    return image


def test_unattended_restore_from_s3_with_secrets_from_a_partition_boots(iso, tmp_path, seaweedfs):
    g = golden.bios_pc()
    bucket = seaweedfs.bucket("lifeboat-vm")
    url = f"s3://{bucket}/office"
    env = seaweedfs.env(LIFEBOAT_LOG_DIR=str(tmp_path / "logs"), LIFEBOAT_CACHE_DIR=str(tmp_path / "cache"))
    lifeboat("repo", "init", url, env=env)
    snapshot = json.loads(lifeboat("backup", g.path, "--repo", url, "--name", "golden", "--json", env=env))["snapshot"]
    port = seaweedfs.endpoint.rsplit(":", 1)[1]
    keys = secrets_disk(tmp_path, "LBKEYS", {
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "LIFEBOAT_S3_ENDPOINT": f"http://{HOST}:{port}", "LIFEBOAT_S3_PATH_STYLE": "1"})
    target = blank(tmp_path / "target.img", g.path.stat().st_size + 128 * MIB)
    disks = [Disk(keys, bus="usb", serial="KEYS-STICK", removable=True), Disk(target, bus="nvme", serial="TARGET-NVME")]
    append = (f"lifeboat.repo={url} lifeboat.secrets=LABEL=LBKEYS:/lifeboat-secrets lifeboat.snapshot=latest "
              "lifeboat.target=TARGET-NVME lifeboat.yes=1 lifeboat.then=poweroff")
    with live_machine(iso, disks, append, tmp_path / "live.log", nic="rtl8139") as vm:
        m = vm.wait_for(RESULT, 900)
        assert m["status"] == "ok", m.group(0)
        assert vm.wait_exit(120) == 0
        out = vm.output
    fields = dict(kv.split("=", 1) for kv in m["rest"].split())
    assert fields["snapshot"] == snapshot
    assert re.search(r"lifeboat: network: \S+ 10\.0\.2\.15/24", out), out[-3000:]
    assert env["AWS_SECRET_ACCESS_KEY"] not in out          # secrets never reach a console

    with Machine([Disk(target, bus="virtio", snapshot=True)], firmware=g.firmware,
                 log=tmp_path / "restored.log") as vm:
        booted = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
    assert booted["root"] == g.fingerprint


def test_smb_and_nfs_repositories_from_the_live_shell(iso, tmp_path, smbd, ganesha):
    source, part, want = source_disk(tmp_path, seed=43)
    targets = [blank(tmp_path / f"target-{n}.img", 80 * MIB) for n in ("smb", "nfs")]
    disks = [Disk(source, bus="virtio", serial="SOURCE"), Disk(targets[0], bus="virtio", serial="TARGET-SMB"),
             Disk(targets[1], bus="virtio", serial="TARGET-NFS")]
    with live_machine(iso, disks, "", tmp_path / "console.log", nic="e1000") as vm:
        open_shell(vm)
        # DHCP ran while the system booted; what it got is kept for the TUI and technicians
        assert shell_step(vm, "net", "grep -H . /run/lifeboat/network/*", 120) == 0
        _, net = vm.wait_for(r"/run/lifeboat/network/(\w+):(10\.0\.2\.15/24) 10\.0\.2\.2", 60).groups()
        assert shell_step(vm, "password", f"export LIFEBOAT_PASSWORD={SMB_PASSWORD}") == 0
        for proto, repo, target in (("smb", f"smb://{SMB_USER}@{HOST}/backups/lifeboat", "/dev/vdb"),
                                    ("nfs", f"nfs://{HOST}/backups/lifeboat", "/dev/vdc")):
            assert shell_step(vm, f"init-{proto}", f"lifeboat repo init {repo}") == 0
            assert shell_step(vm, f"backup-{proto}", f"lifeboat backup /dev/vda --repo {repo} --name pc", 900) == 0
            assert shell_step(vm, f"verify-{proto}", f"lifeboat verify --repo {repo}", 900) == 0
            assert shell_step(vm, f"restore-{proto}", f"lifeboat restore latest {target} --repo {repo} --yes", 900) == 0
        console = vm.output
        power_off(vm)
    assert net == "10.0.2.15/24"
    # the repositories are on the servers, written through the guest's kernel clients
    assert (smbd.share / "lifeboat" / "lifeboat-repo.json").exists()
    assert (ganesha.export / "lifeboat" / "lifeboat-repo.json").exists()
    assert SMB_PASSWORD not in console.replace(f"LIFEBOAT_PASSWORD={SMB_PASSWORD}", "")
    for target in targets:
        assert_restored(target, part, want)
