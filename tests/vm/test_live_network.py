"""The live system on the network, against real servers on this machine reached through
QEMU's user network (the host is 10.0.2.2 there): wired Ethernet comes up by DHCP as it
boots; an unattended restore from an S3 repository, its secrets read from a labelled
partition, ends in a disk that boots; and in the shell, repositories on SMB (Samba) and NFS
(nfs-ganesha), mounted by the live kernel's own cifs and nfs clients (this machine's kernel
has neither), and on SFTP (OpenSSH's sshd, through the live system's sshfs), take a backup
and check it; each snapshot restored (SMB and NFS in the live system, SFTP's here), every file
compared; in the same boot, repositories on FAT32 and
exFAT through the live kernel's own drivers, and a snapshot of a PC whose partitions are FAT32
and exFAT browsed there (mounted by those drivers) and copied out; a network card plugged in
after boot, and shares that refuse writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.storage.stall import nfs_replies, waits_in_nfs
from tests.browse_pc import make_exfat
from tests.diskimages import BASIC_DATA, PartSpec, make_disk
from tests.fsimages import ext_tree, make_tree, make_vfat, vfat_tree
from tests.netservers import SMB_PASSWORD, SMB_USER, ganesha, seaweedfs, smbd, sshd  # noqa: F401 - fixtures
from tests.vm import golden
from tests.vm.live_shell import assert_restored, power_off, shell_step, source_disk, step_output
from tests.vm.qemu import ConsoleTimeout, Disk, Machine
from tests.vm.test_iso import BOOT_LINE, BOOT_TIMEOUT, ENTER, MIB, RESULT, ROOT, blank, keys, live_machine
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
    assert fields["target"] == "/dev/nvme0n1" and int(fields["seconds"]) >= 0, fields
    assert "Restore snapshot" in out          # the plan was shown before writing
    assert re.search(r"lifeboat: network: \S+ 10\.0\.2\.15/24", out), out[-3000:]
    assert env["AWS_SECRET_ACCESS_KEY"] not in out          # secrets never reach a console

    with Machine([Disk(target, bus="virtio", snapshot=True)], firmware=g.firmware,
                 log=tmp_path / "restored.log") as vm:
        booted = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
    assert booted["root"] == g.fingerprint


def test_network_and_fat_repositories_from_the_live_shell(iso, tmp_path, smbd, ganesha, sshd):
    """In one boot (VM boots are CI's dearest time), as a technician would in the shell: a
    repository on each of SMB, NFS, SFTP, a FAT32 USB stick and an exFAT SATA disk, each mounted
    by the live system's own client or driver (this machine's kernel has none of cifs, nfs, vfat
    and exfat, so the rest of the suite reaches FAT through FUSE; sshfs needs the live kernel's
    FUSE module loaded). Into each network repository a backup of the source disk (its
    read-back check reads the packs back through that client); from SMB and NFS a restore onto
    a blank disk of its own, whose every file is then compared with the source's here (and
    e2fsck run). The SFTP repository, written through sshfs, is restored here from its folder
    on the server (SFTP restores are the integration tier's, through this machine's sshfs; an
    emulated restore costs CI half a minute). Into the FAT32 stick the same backup, its
    read-back check reading the packs through vfat. Then getting files back where the kernel's drivers do the reading: a PC
    disk with a FAT32 and an exFAT partition is backed up into the exFAT disk, its snapshot
    mounted (each filesystem beneath it mounted by the live kernel's vfat and exfat) and both
    copied out with `get`, read from the exFAT repository.
    The machine has no network card when it boots: one is plugged in from QEMU's monitor and
    gets its address by DHCP. A read-only SMB share and a read-only NFS export are refused in
    one line with nothing written."""
    source, part, want = source_disk(tmp_path, seed=43)
    kinds = ("smb", "nfs", "sftp")
    # one blank disk per snapshot: SMB's and NFS's restored in the guest, SFTP's here
    targets = [blank(tmp_path / f"target-{n}.img", 80 * MIB) for n in kinds]
    # The SSH client key travels on the FAT stick (FAT keeps no permissions: copied out below).
    stick_tree = tmp_path / "stick-tree"
    stick_tree.mkdir()
    shutil.copyfile(sshd.client_key, stick_tree / "client_key")
    sftp_dir = tmp_path / "sftp"
    sftp_dir.mkdir()
    stick = tmp_path / "stick.img"
    make_disk(stick, 160 * MIB, "dos", [PartSpec(None, "c", content=str(
        make_vfat(tmp_path / "stick.fs", 158 * MIB, tree_dir=stick_tree, label="FATREPO", garbage=False)))])
    exfat_fs = blank(tmp_path / "exfat.fs", 158 * MIB)
    subprocess.run(["mkfs.exfat", "-L", "EXREPO", str(exfat_fs)], check=True, capture_output=True)
    exdisk = tmp_path / "exfat.img"
    make_disk(exdisk, 160 * MIB, "dos", [PartSpec(None, "7", content=str(exfat_fs))])
    # sda: the exFAT disk, sdb: the FAT32 stick; vda: the source, vdb and vdc: the SMB and NFS targets
    disks = [Disk(exdisk, bus="sata", serial="EXFAT-REPO"), Disk(stick, bus="usb", serial="FAT-REPO", removable=True),
             Disk(source, bus="virtio", serial="SOURCE")]
    disks += [Disk(t, bus="virtio", serial=f"TARGET-{n.upper()}") for t, n in zip(targets[:2], kinds)]
    # vdd: a PC disk with a FAT32 and an exFAT partition, to browse; vde: where its files go
    fat_fs = make_vfat(tmp_path / "pc-fat.fs", 40 * MIB, tree_dir=make_tree(tmp_path / "pc-tree", seed=44),
                       label="PCFAT", garbage=False)
    exfat_pc_fs, exfat_want = make_exfat(tmp_path / "pc-exfat.fs", 24 * MIB)
    fat_pc = tmp_path / "fat-pc.img"
    make_disk(fat_pc, 72 * MIB, "gpt", [PartSpec(40 * MIB, BASIC_DATA, name="fat32", content=str(fat_fs)),
                                        PartSpec(None, BASIC_DATA, name="exfat", content=str(exfat_pc_fs))])
    out_disk = blank(tmp_path / "out.img", 64 * MIB)
    disks += [Disk(fat_pc, bus="virtio", serial="FAT-PC"), Disk(out_disk, bus="virtio", serial="COPY-OUT")]
    # repositories on the read-only share and export, made from this side (writable here); so
    # are the NFS and SFTP ones, each `repo init` costing emulation ~10 s (the SMB one is made
    # through the guest's cifs mount, below)
    for folder in (smbd.readonly, ganesha.readonly, ganesha.export, sftp_dir):
        lifeboat("repo", "init", folder / "lifeboat", env={})
    # No network card at boot: one is plugged in once the shell runs (a PCIe slot of its own,
    # as a card or a USB adapter plugged in later), and the live system brings it up by DHCP.
    hotplug = ["-netdev", "user,id=net0", "-device", "pcie-root-port,id=slot1,chassis=1,slot=1"]
    # A shell on the consoles instead of the TUI (test_iso.py reaches the shell through the TUI):
    # starting the TUI twice costs emulation most of a minute.
    with live_machine(iso, disks, "lifeboat.console=shell", tmp_path / "console.log", monitor=True,
                      extra_args=hotplug) as vm:
        vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        time.sleep(3)
        assert shell_step(vm, "no-net", "ls /run/lifeboat/network/ | wc -l") == 0
        cards_at_boot = int(vm.wait_for(r"\n(\d+)\r?\n", 30)[1])
        assert vm.hmp("device_add e1000e,netdev=net0,bus=slot1,id=card1") == ""
        # what DHCP got is kept for the TUI and technicians
        assert shell_step(vm, "net", "for i in $(seq 120); do grep -q . /run/lifeboat/network/* 2>/dev/null && break;"
                          " sleep 1; done; grep -H . /run/lifeboat/network/*", 180) == 0
        _, net = vm.wait_for(r"/run/lifeboat/network/(\w+):(10\.0\.2\.15/24) 10\.0\.2\.2", 60).groups()
        assert shell_step(vm, "mount", "mkdir -p /mnt/fat /mnt/exfat && mount -t vfat /dev/sdb1 /mnt/fat"
                          " && mount -t exfat /dev/sda1 /mnt/exfat && grep -E ' /mnt/(fat|exfat) ' /proc/mounts") == 0
        # the lines follow the step's end mark: waited for, not read at once
        fat_driver = vm.wait_for(r" /mnt/fat (\w+) ", 60)[1]
        exfat_driver = vm.wait_for(r" /mnt/exfat (\w+) ", 60)[1]
        assert shell_step(vm, "password", f"export LIFEBOAT_PASSWORD={SMB_PASSWORD}") == 0
        assert shell_step(vm, "key", "install -m 600 /mnt/fat/client_key /tmp/client_key && export "
                          f"LIFEBOAT_SSH_KEY=/tmp/client_key LIFEBOAT_SSH_HOST_KEY={sshd.fingerprint()} "
                          "LIFEBOAT_DATA_DIR=/tmp/lifeboat-data") == 0
        repos = (f"smb://{SMB_USER}@{HOST}/backups/lifeboat", f"nfs://{HOST}/backups/lifeboat",
                 f"sftp://root@{HOST}:{sshd.port}{sftp_dir}/lifeboat")
        assert shell_step(vm, "init-smb", f"lifeboat repo init {repos[0]}") == 0
        for kind, repo, target in zip(kinds, repos, ("/dev/vdb", "/dev/vdc", None)):
            assert shell_step(vm, f"backup-{kind}", f"lifeboat backup /dev/vda --repo {repo} --name pc", 900) == 0
            if target:
                assert shell_step(vm, f"restore-{kind}", f"lifeboat restore latest {target} --repo {repo} --yes",
                                  900) == 0
        # The FAT32 stick and the exFAT disk: local folders to the engine, the kernel's drivers
        # beneath (the restore and verify paths over a local folder are the rest of the suite's).
        for kind in ("fat", "exfat"):
            assert shell_step(vm, f"init-{kind}", f"lifeboat repo init /mnt/{kind}/lifeboat") == 0
        assert shell_step(vm, "backup-fat", "lifeboat backup /dev/vda --repo /mnt/fat/lifeboat --name pc", 900) == 0
        # a real Samba's refusals, read from mount.cifs by the live system: one line each, exit 5
        smb = f"smb://{SMB_USER}@{HOST}"
        refused = shell_step(vm, "smb-wrong", "LIFEBOAT_PASSWORD=wrong-pass-1 lifeboat snapshots "
                             f"--repo {smb}/backups/lifeboat", 300)
        refused_said = step_output(vm, "smb-wrong")
        missing = shell_step(vm, "smb-noshare", f"lifeboat snapshots --repo {smb}/no-such-share/lifeboat", 300)
        missing_said = step_output(vm, "smb-noshare")
        # No permission: a share the user may only read, an export served read-only. Neither
        # takes a new repository, nor a backup into the repository already there.
        ro_before = {p: sorted(f.relative_to(p) for f in p.rglob("*")) for p in (smbd.readonly, ganesha.readonly)}
        ro_codes, ro_said = [], {}
        for kind, place in (("smb", f"{smb}/readonly/lifeboat"), ("nfs", f"nfs://{HOST}/readonly/lifeboat")):
            for verb, command in (("init", f"lifeboat repo init {place}2"),
                                  ("backup", f"lifeboat backup /dev/vda --repo {place} --name pc")):
                ro_codes.append(shell_step(vm, f"ro-{kind}-{verb}", command, 300))
                ro_said[kind, verb] = step_output(vm, f"ro-{kind}-{verb}")
        ro_after = {p: sorted(f.relative_to(p) for f in p.rglob("*")) for p in (smbd.readonly, ganesha.readonly)}
        browse = "--repo /mnt/exfat/lifeboat --name fatpc"
        assert shell_step(vm, "backup-fatpc", f"lifeboat backup /dev/vdd {browse}", 900) == 0
        # mounted until umount: wait until both filesystems beneath it are in /proc/mounts (their folders
        # exist a moment before their mounts do), then show how they are mounted
        assert shell_step(vm, "browse-mount", f"(lifeboat mount latest /tmp/snap {browse} &) ; for i in $(seq 180); "
                          "do grep -q ' /tmp/snap/p1 ' /proc/mounts && grep -q ' /tmp/snap/p2 ' /proc/mounts && break; sleep 1; "
                          "done; grep -o ' /tmp/snap/p[12] [a-z]* ' /proc/mounts | tr -s ' ' '_'", 300) == 0
        browse_mounts = vm.wait_for(r"_/tmp/snap/p2_(\w+)_", 30)
        assert shell_step(vm, "browse-umount", "lifeboat umount /tmp/snap") == 0
        assert shell_step(vm, "copy-out", "mkfs.ext4 -q -F /dev/vde && mkdir -p /mnt/out && mount /dev/vde /mnt/out"
                          f" && lifeboat get latest 1:/ /mnt/out {browse} && lifeboat get latest 2:/ /mnt/out {browse}",
                          600) == 0
        console = vm.output
        power_off(vm, "sync; umount /mnt/out /mnt/fat /mnt/exfat")
    assert net == "10.0.2.15/24"
    # the repositories are on the servers, written through the guest's kernel clients
    assert (smbd.share / "lifeboat" / "lifeboat-repo.json").exists()
    assert (ganesha.export / "lifeboat" / "lifeboat-repo.json").exists()
    assert (sftp_dir / "lifeboat" / "lifeboat-repo.json").exists()
    # the kernel's drivers, not FUSE, held the FAT repositories
    assert (fat_driver, exfat_driver) == ("vfat", "exfat")
    assert SMB_PASSWORD not in console.replace(f"LIFEBOAT_PASSWORD={SMB_PASSWORD}", "")
    lifeboat("restore", "latest", targets[2], "--repo", sftp_dir / "lifeboat", "--yes", env={})
    for target in targets:
        assert_restored(target, part, want)
    assert (refused, missing) == (5, 5)
    assert f"the SMB server {HOST} refused the login of {SMB_USER} to the share backups" in refused_said
    assert f"the share no-such-share does not exist on {HOST}" in missing_said
    # the hot-plugged card: none at boot, then an address
    assert cards_at_boot == 0
    # no permission: one line each, exit 5, nothing written on either server
    assert ro_codes == [5, 5, 5, 5], ro_codes
    assert ro_after == ro_before
    for (kind, verb), said in ro_said.items():
        folder = "/readonly/lifeboat2" if verb == "init" else "/readonly/lifeboat"
        lines = said.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"lifeboat: no permission to write {folder} on {HOST}: "), \
            (kind, verb, said)
    # browsing used the kernel's vfat and exfat, and every file came out whole
    assert "_/tmp/snap/p1_vfat_" in console and browse_mounts[1] == "exfat", console[-3000:]
    got = ext_tree(out_disk)

    def under(top: str) -> dict:
        return {k[len(top) + 1:].casefold(): v for k, v in got.items() if k.startswith(top + "/")}
    # FAT keeps 8.3 names in upper case with a lower-case flag: compared without case
    assert under("p1") == {k.casefold(): v for k, v in vfat_tree(fat_fs).items()}
    assert under("p2") == {k.casefold(): v for k, v in exfat_want.items()}


def test_a_frozen_nfs_server_ends_the_backup_in_one_line(iso, tmp_path, ganesha):
    """An NFS server that stops answering mid-backup with its connection up (the process
    stopped, as a hung NAS is): the live kernel's client would wait on it for ever, even
    mounted `softerr`. The backup ends in one line within its stall and retry windows,
    exit 5; once the server answers again, the same backup runs to the end and the
    repository verifies."""
    source, _, _ = source_disk(tmp_path, seed=47)
    repo_dir = ganesha.export / "frozen"
    lifeboat("repo", "init", repo_dir, env={})
    repo = f"nfs://{HOST}/backups/frozen"
    disks = [Disk(source, bus="virtio", serial="SOURCE")]
    with live_machine(iso, disks, "lifeboat.console=shell", tmp_path / "console.log", nic="e1000") as vm:
        vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        time.sleep(3)
        assert shell_step(vm, "net", "for i in $(seq 120); do grep -q . /run/lifeboat/network/* 2>/dev/null && break;"
                          " sleep 1; done; grep -H . /run/lifeboat/network/*", 180) == 0
        # the live kernel's counters for an NFS mount, as the stall watch reads them
        assert shell_step(vm, "stats", f"(mkdir -p /mnt/n && mount -i -t nfs4 {HOST}:/backups /mnt/n -o "
                          f"vers=4.2,addr={HOST} && ls /mnt/n >/dev/null && cat /proc/self/mountstats && "
                          "umount /mnt/n)") == 0
        stats = step_output(vm, "stats")
        # a second mount of the server's, to show what a thread waiting on it looks like
        assert shell_step(vm, "second", f"mkdir -p /mnt/h && mount -i -t nfs4 {HOST}:/backups /mnt/h "
                          f"-o vers=4.2,addr={HOST}") == 0
        # the stall after 10 s without a reply, then 30 s of retries; in the background, so
        # the shell can still say where the backup's threads wait if it does not end (no job
        # control: its notice would mix with the output read next)
        keys(vm, "set +m; (LIFEBOAT_STALL_SECONDS=10 LIFEBOAT_RETRY_SECONDS=30 lifeboat backup /dev/vda --repo "
             f"{repo} --name pc >/tmp/frozen.log 2>&1; echo STEP-frozen-$?-) &" + ENTER)
        deadline = time.monotonic() + 300
        while not any((repo_dir / "lock").glob("*.json")):
            assert time.monotonic() < deadline, "the backup never took its lock"
            time.sleep(0.1)
        os.killpg(ganesha.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            try:
                code = int(vm.wait_for(r"STEP-frozen-(\d+)-", 300)[1])
            except ConsoleTimeout:
                shell_step(vm, "held", "(for t in /proc/$(pgrep -o -f 'lifeboat backup')/task/*; do echo; "
                           "echo $(cat $t/comm) $(cut -d' ' -f3 $t/stat) $(cat $t/wchan); cat $t/stack; done; "
                           "cat /tmp/frozen.log; tail -n 40 /var/log/lifeboat/*backup.log)", 60)
                pytest.fail("the backup did not end; its threads:\n" + step_output(vm, "held"))
            ended_after = time.monotonic() - frozen_at
            # the live kernel's view of a thread waiting on the frozen server (a look-up), as the
            # watch reads it for the waits the storage does not wrap
            shell_step(vm, "nfswait", "(ls /mnt/h/absent >/dev/null 2>&1 & sleep 5; cat /proc/$!/stack; "
                       "echo wchan $(cat /proc/$!/wchan); kill -9 $!)", 60)
            nfs_wait = step_output(vm, "nfswait")
        finally:
            os.killpg(ganesha.proc.pid, signal.SIGCONT)
        said = step_output(vm, "frozen")
        assert shell_step(vm, "again", f"lifeboat backup /dev/vda --repo {repo} --name pc", 900) == 0
        assert shell_step(vm, "verify", f"lifeboat verify --repo {repo}", 900) == 0
        power_off(vm)
    assert waits_in_nfs(nfs_wait.partition("wchan")[0]), nfs_wait        # the kernel stack
    assert waits_in_nfs(nfs_wait.partition("wchan")[2]), nfs_wait        # the wait channel alone
    assert nfs_replies(Path("/mnt/n"), stats) > 0, stats
    assert nfs_replies(Path("/mnt"), stats) is None
    lines = said.strip().splitlines()
    assert code == 5 and len(lines) == 1, said
    assert lines[0].startswith(f"lifeboat: nfs://{HOST}/backups/frozen stopped answering"), said
    # the stall (10 s), then the retry window (30 s), with emulation's slack
    assert ended_after < 240, ended_after
