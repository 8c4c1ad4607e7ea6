"""The live ISO boots real firmware into the Lifeboat TUI, and restores unattended.

The ISO is built once per session by scripts/build-iso (rebuilt when its sources are newer
than build/lifeboat.iso); LIFEBOAT_ISO=path tests a given ISO instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.fsimages import fsck_clean
from tests.vm import golden
from tests.vm.qemu import Cdrom, Disk, Machine

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
BOOT_TIMEOUT = 480          # plain emulation on a loaded 2-core machine; a quiet one needs ~40 s
# Each pattern ends at the newline: the console arrives in pieces, and a match on half a
# line would cut the last field short.
BOOT_LINE = r"LIFEBOAT-BOOT firmware=(?P<fw>\w+) secureboot=(?P<sb>\w+) medium=(?P<medium>\S+) uptime=(?P<up>[\d.]+)\n"
RESULT = r"LIFEBOAT-RESULT (?P<status>ok|error) (?P<rest>[^\n]*)\n"
# Textual switches to the alternate screen, then draws the main menu.
TUI_DRAWN = r"Power off"
MIB = 1024 * 1024


def _sources_newer_than(path: Path) -> bool:
    stamp = path.stat().st_mtime
    for top in ("iso-build", "recovery", "tui", "scripts/build-iso"):
        p = ROOT / top
        files = [p] if p.is_file() else p.rglob("*")
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and f.stat().st_mtime > stamp:
                return True
    return False


def ensure_iso() -> Path:
    """build/lifeboat.iso, built (or rebuilt) when missing or older than its sources."""
    given = os.environ.get("LIFEBOAT_ISO")
    if given:
        return Path(given)
    iso = BUILD / "lifeboat.iso"
    BUILD.mkdir(exist_ok=True)
    # scripts/test's lanes run at once, and more than one boots the ISO: one builds it, the
    # others wait for that build instead of starting their own over the same files.
    with open(BUILD / ".iso.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not iso.exists() or _sources_newer_than(iso):
            require(os.geteuid() == 0, "building the ISO needs root")
            log = BUILD / "build-iso.log"
            with open(log, "w") as out:
                # The build's tools come from scripts/setup: a test never installs Debian packages.
                rc = subprocess.run([str(ROOT / "scripts" / "build-iso")], stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, LIFEBOAT_BUILD_NO_INSTALL="1"),
                                    timeout=1200).returncode
            assert rc == 0, f"scripts/build-iso failed; see {log}:\n{log.read_text()[-3000:]}"
    return iso


@pytest.fixture(scope="session")
def iso() -> Path:
    return ensure_iso()


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ----------------------------------------------------------------------------- boot matrix


# UEFI is booted with Secure Boot enforced: the firmware then loads the same shim, GRUB and
# kernel from the same El Torito image and ESP as without it, and checks their signatures too.
# BIOS boots from the CD in test_bios_cd_boot_tui_restore_consoles_and_power_off (the TUI
# reached as a person would, in the same boot). USB is booted in test_usb_stick.py, by BIOS and
# by UEFI (the ESP of the image's own partition table, not El Torito's), from the stick
# write-usb made: its first bytes are this ISO, so a stick made with dd boots the same way
# (CI's time budget leaves no room for a boot that proves nothing more).
def test_iso_boots_from_cd_by_uefi_with_secure_boot(iso, tmp_path):
    """UEFI with Secure Boot from a CD, with SATA, NVMe and virtio disks attached: the boot
    line tells how it came up (firmware, Secure Boot, the medium whose squashfs became the
    root). It stops at the boot line: what follows it (init, the consoles, the TUI) runs from
    the same root whatever the firmware, and each TUI start costs emulation about 20 CPU
    seconds."""
    disks = [Disk(blank(tmp_path / f"{bus}.img", 64 * MIB), bus=bus, serial=f"ISO-{bus.upper()}")
             for bus in ("sata", "nvme", "virtio")]
    with Machine(disks, cdrom=Cdrom(iso, bus="sata"), firmware="uefi-secure", cpus=2, boot="cdrom",
                 log=tmp_path / "console.log") as vm:
        m = vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        seconds = vm.elapsed()
    assert (m["fw"], m["sb"]) == ("uefi", "on")
    assert re.fullmatch(r"/dev/sr\d", m["medium"]), m["medium"]        # the CD drive
    print(f"ISO uefi-secure: kernel+initramfs+sysinit {m['up']} s, boot line {seconds:.1f} s after QEMU start")


def first_console_shows_the_tui_and_alt_f2_a_root_shell(vm) -> None:
    """On the PC's own screen and keyboard: the TUI is drawn on the first console, Alt+F2
    switches to a shell console, Enter there starts a root shell that runs what is typed.
    The shell reports on the serial line what the consoles hold (/dev/vcsN is the text of ttyN).
    Part of the BIOS boot below: every boot under emulation costs CI a minute or two."""
    time.sleep(10)                                   # the first console's TUI draws too
    vm.press("alt-f2")
    time.sleep(2)
    vm.press("ret")                                  # "Press Enter to start a root shell"
    time.sleep(5)
    vm.type_text("echo CONSOLE-$(cat /sys/class/tty/tty0/active)-$(id -u)-$(tty) >/dev/ttyS0")
    m = vm.wait_for(r"CONSOLE-(\S+)-(\d+)-(\S+)\s", 240)
    assert m.groups() == ("tty2", "0", "/dev/tty2"), m.groups()
    vm.type_text("echo TTY1-$(grep -c Power.off /dev/vcs1)-$(grep -c Lifeboat.shell /dev/vcs2) >/dev/ttyS0")
    m = vm.wait_for(r"TTY1-(\d+)-(\d+)\s", 120)
    assert m.groups() == ("1", "1"), f"tty1 shows the TUI, tty2 the shell: {m.groups()}"


# ----------------------------------------------------------------------------- unattended restore


def make_repo_disk(tmp_path: Path, source: Path, label: str, where: str = "backups/repo",
                   partitioned: bool = False) -> tuple[Path, str]:
    """A disk image whose ext4 filesystem (labelled `label`; the whole disk, or its one GPT
    partition) holds a repository in folder `where` with one snapshot of `source`.
    Returns (image, snapshot id)."""
    staging = tmp_path / "repo-fs"
    repo = staging / where
    repo.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LIFEBOAT_LOG_DIR=str(tmp_path / "logs"))
    lifeboat = [str(ROOT / ".venv" / "bin" / "python"), "-m", "recovery"]

    def run(*args):
        out = subprocess.run(lifeboat + list(args), capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == 0, f"lifeboat {args} failed: {out.stderr}"
        return out.stdout

    run("repo", "init", str(repo))
    result = json.loads(run("backup", str(source), "--repo", str(repo), "--name", "golden", "--json"))
    size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) + 64 * MIB
    fs = blank(tmp_path / "repo-fs.img", size)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", str(staging), str(fs)], check=True)
    if not partitioned:
        return fs, result["snapshot"]
    image = blank(tmp_path / "repo-disk.img", size + 2 * MIB)
    subprocess.run(["sfdisk", "-q", str(image)], input=f"label: gpt\nstart=2048, size={size // 512}\n",
                   text=True, check=True)
    golden.copy_into(fs, image, 2048 * 512)
    fs.unlink()
    return image, result["snapshot"]


def live_machine(iso, disks, append, log, memory_mb=1024, nic=None, monitor=False, extra_args=()):
    """The live system booted straight from its kernel with a chosen command line (the
    ISO is still attached: the initramfs finds its root there)."""
    return Machine(disks, cdrom=Cdrom(iso, bus="sata"), firmware="bios", boot="cdrom",
                   kernel=BUILD / "lifeboat-vmlinuz", initrd=BUILD / "lifeboat-initrd.img",
                   append="console=tty0 console=ttyS0,115200n8 quiet loglevel=3 " + append,
                   memory_mb=memory_mb, log=log, nic=nic, monitor=monitor, extra_args=extra_args)


def test_unattended_restore_refuses_unknown_target_in_plain_words(iso, tmp_path):
    """A target nobody has: one error line on the console, nothing written, power off
    (never a reboot loop into the same failing restore)."""
    g = golden.bios_pc()
    repo_img, _ = make_repo_disk(tmp_path, g.path, "LBREPO")
    other = blank(tmp_path / "other.img", 128 * MIB)
    disks = [Disk(repo_img, bus="virtio", serial="REPO-DISK"), Disk(other, bus="sata", serial="OTHER")]
    append = ("lifeboat.repo=LABEL=LBREPO:/backups/repo lifeboat.target=NO-SUCH-SERIAL "
              "lifeboat.yes=1 lifeboat.then=poweroff")
    with live_machine(iso, disks, append, tmp_path / "live.log") as vm:
        m = vm.wait_for(RESULT, 600)
        assert vm.wait_exit(120) == 0
    assert m["status"] == "error"
    assert "no disk matches lifeboat.target=NO-SUCH-SERIAL" in m["rest"]
    assert "Traceback" not in m["rest"]
    with open(other, "rb") as f:
        assert f.read(MIB).count(0) == MIB   # untouched


# ----------------------------------------------------------------------------- the TUI, by keyboard

DOWN, UP, END, ENTER = "\x1b[B", "\x1b[A", "\x1b[F", "\r"


def keys(vm, *seq, pause=1.0):
    """Type keys one by one: under emulation the app needs a moment for each."""
    for k in seq:
        vm.send(k)
        time.sleep(pause)


def test_bios_cd_boot_tui_restore_consoles_and_power_off(iso, tmp_path, loops):
    """BIOS from a CD: the boot line tells how it came up (firmware, no Secure Boot, the CD's
    squashfs as the root). Then on the serial console, as a person would: Restore → the
    repository found on the USB disk → latest snapshot → the blank SATA disk → plan → type its
    name → done. On the PC's own screen and keyboard, the TUI and a root shell on Alt+F2 (see
    first_console_shows_the_tui_and_alt_f2_a_root_shell). Then on the serial console the Shell
    entry (memory in use is measured there), back, and Power off. The restored disk holds the
    PC's boot code and every file of its root, which e2fsck finds clean (the restore the TUI
    starts is the engine's; restored disks of this PC are booted in test_bare_metal.py)."""
    g = golden.bios_pc()
    repo_img, snapshot = make_repo_disk(tmp_path, g.path, "LBTUI", where="lifeboat", partitioned=True)
    target = blank(tmp_path / "target.img", g.path.stat().st_size + 128 * MIB)
    disks = [Disk(target, bus="sata", serial="TUI-TARGET"), Disk(repo_img, bus="usb", serial="TUI-REPO")]
    cd = Cdrom(iso, bus="sata")
    # Two processors like any PC of the last decade: the TUIs on screen and serial line start
    # side by side.
    with Machine(disks, cdrom=cd, firmware="bios", cpus=2, boot="cdrom", keyboard=True,
                 log=tmp_path / "console.log") as vm:
        booted = vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        vm.wait_for(TUI_DRAWN, BOOT_TIMEOUT)
        drawn = vm.elapsed()
        time.sleep(5)
        keys(vm, "r")
        vm.wait_for(r"Which backups\?", 300)
        vm.wait_for(r"lifeboat", 120)            # the repository's folder on the USB disk
        keys(vm, ENTER)
        vm.wait_for(r"Backups of", 300)
        keys(vm, ENTER)
        vm.wait_for(r"Restore onto which disk\?", 300)
        keys(vm, ENTER)
        vm.wait_for(r"Continue", 300)
        keys(vm, ENTER)
        vm.wait_for(r"type the disk's name", 300)
        keys(vm, *"sda", ENTER, pause=0.5)
        vm.wait_for(r"Restore finished", 900)
        keys(vm, ENTER)                             # Done: back home
        vm.wait_for(TUI_DRAWN, 120)
        first_console_shows_the_tui_and_alt_f2_a_root_shell(vm)
        keys(vm, END, UP, UP, UP, ENTER)            # Quit → Power off → Reboot → Shell
        vm.wait_for(r"Lifeboat shell", 120)
        time.sleep(2)
        keys(vm, "echo MEM-USED-MB $(free -m | awk '/^Mem:/ {print $3}')" + ENTER)
        used = int(vm.wait_for(r"MEM-USED-MB (\d+)\s", 60)[1])
        keys(vm, "exit" + ENTER)
        vm.wait_for(TUI_DRAWN, 300)                  # the TUI starts again (slow on a loaded host)
        time.sleep(3)
        keys(vm, END, UP, ENTER)                    # Power off, then confirm it
        vm.wait_for(r"Switch the computer off\?", 120)
        keys(vm, "\t", ENTER)
        assert vm.wait_exit(180) == 0
    print(f"ISO bios: kernel+initramfs+sysinit {booted['up']} s, TUI drawn {drawn:.1f} s after QEMU start; "
          f"memory used with the TUI running: {used} MiB")
    assert (booted["fw"], booted["sb"]) == ("bios", "off")
    assert re.fullmatch(r"/dev/sr\d", booted["medium"]), booted["medium"]        # the CD drive
    assert used <= 300
    assert_holds_the_bios_pc(target, g, loops, tmp_path)


def assert_holds_the_bios_pc(target: Path, g: golden.Golden, loops, tmp_path: Path) -> None:
    """The golden BIOS PC restored onto `target`: its MBR boot code and the GRUB core in the gap
    after it, a root filesystem e2fsck finds clean, and every file of that root."""
    gap = 2048 * 512
    with open(g.path, "rb") as a, open(target, "rb") as b:
        want, got = a.read(gap), b.read(gap)
    assert got[:440] == want[:440], "the MBR's boot code differs"
    assert got[512:] == want[512:], "the GRUB core after the MBR differs"
    dev = loops.attach(target, read_only=True)
    root = f"{dev}p{g.root_part}"
    assert fsck_clean("ext4", root)
    with golden.mounted(root, tmp_path / "restored-root", read_only=True) as mnt:
        assert golden.tree_fingerprint(mnt) == g.fingerprint
