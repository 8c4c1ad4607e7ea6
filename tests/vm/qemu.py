"""Boot a set of disks (and optionally a CD) in QEMU and talk to the serial console.

Usage::

    from tests.vm.qemu import Disk, Machine

    disks = [Disk("golden.img", bus="nvme", snapshot=True)]
    with Machine(disks, firmware="uefi", log=tmp_path / "console.log") as vm:
        m = vm.wait_for(r"GOLDEN-PC ok root=(\\w+) ", timeout=300)
        vm.wait_exit(timeout=60)

API
- ``Disk(path, bus="virtio"|"sata"|"nvme"|"usb"|"ide", fmt="raw", readonly=False,
  snapshot=False, serial=None, sector_size=512)``: one disk. ``snapshot=True`` sends every
  write to a throw-away overlay (the file is never changed); ``sector_size=4096`` makes a
  4Kn disk (virtio, nvme, sata).
- ``Cdrom(path, bus="sata"|"usb"|"ide")``: an ISO attached read-only as a CD-ROM
  (``bus="usb"`` attaches it as a USB stick instead, which is how a written ISO boots).
- ``Machine(disks, cdrom=None, firmware="bios"|"uefi"|"uefi-secure", memory_mb=1024,
  cpus=1, kernel=None, initrd=None, append=None, extra_args=(), log=None,
  boot="disk"|"cdrom", nic=None|"e1000"|"rtl8139"|...)``; ``start()``/``stop()`` or a
  ``with`` block. ``nic`` adds a network card on QEMU's user network (the host is 10.0.2.2).
  ``monitor=True`` opens QEMU's monitor: ``vm.hmp("device_add …")`` plugs a device in while
  the machine runs.
  Firmware ``bios`` is SeaBIOS, ``uefi`` OVMF (with a private copy of the variable store),
  ``uefi-secure`` OVMF with Microsoft keys and Secure Boot on. ``vars_file=path`` keeps the
  UEFI variable store (boot entries) in that file across machines (made on first use).
- ``vm.wait_for(pattern, timeout) -> re.Match``: waits for a regular expression in the serial
  output after the previous match; raises ``ConsoleTimeout`` (with the console's tail) on
  timeout or when QEMU exits first. The output arrives in pieces, so a pattern whose last
  field is open-ended (``\\S+``) must end with ``\\n`` or it may match half a line.
- ``vm.send(text)``: types on the serial console. ``vm.output``: everything read so far
  (``\\r`` removed). ``vm.wait_exit(timeout) -> int``: QEMU's exit status (the guest powered
  off or rebooted: ``-no-reboot`` is always set).
- ``accelerator() -> "kvm"|"tcg"``: KVM only when /dev/kvm opens and a probe kernel really
  boots under it (nested KVM often opens but hangs); the answer is cached. Override with
  ``LIFEBOAT_QEMU_ACCEL=kvm|tcg``.

The guest's serial console is the first serial port (``console=ttyS0``). Every process this
module starts is stopped by ``stop()`` (also on exceptions in a ``with`` block).
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
OVMF_DIR = Path("/usr/share/OVMF")
BUSES = ("virtio", "sata", "nvme", "usb", "ide")


def cache_dir() -> Path:
    path = Path(os.environ.get("LIFEBOAT_TEST_CACHE", Path(__file__).resolve().parents[2] / "build" / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class ConsoleTimeout(AssertionError):
    """The awaited console line did not come (or QEMU stopped first)."""


@dataclass(frozen=True)
class Disk:
    path: str | os.PathLike
    bus: str = "virtio"
    fmt: str = "raw"
    readonly: bool = False
    snapshot: bool = False
    serial: str | None = None
    sector_size: int = 512
    removable: bool = False      # usb: the removable-medium bit a USB stick reports

    def __post_init__(self):
        if self.bus not in BUSES:
            raise ValueError(f"unknown bus {self.bus!r}; one of {BUSES}")
        if self.removable and self.bus != "usb":
            raise ValueError("only a usb disk can be removable here")


@dataclass(frozen=True)
class Cdrom:
    path: str | os.PathLike
    bus: str = "sata"


# ----------------------------------------------------------------------------- accelerator

_ACCEL: str | None = None


def _probe_kernel() -> Path | None:
    env = os.environ.get("LIFEBOAT_QEMU_PROBE_KERNEL")
    if env:
        return Path(env)
    found = sorted((cache_dir() / "kernel").glob("vmlinuz-*"))
    return found[-1] if found else None


def accelerator() -> str:
    """"kvm" when KVM really runs a Linux kernel here, else "tcg" (plain emulation)."""
    global _ACCEL
    forced = os.environ.get("LIFEBOAT_QEMU_ACCEL")
    if forced:
        return forced
    if _ACCEL:
        return _ACCEL
    _ACCEL = "tcg"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return _ACCEL
    kernel = _probe_kernel()
    if kernel is None or not kernel.exists():
        return _ACCEL
    stamp = cache_dir() / "qemu-accel"
    key = f"{os.uname().release} {kernel.name}"
    if stamp.exists():
        saved_key, _, saved = stamp.read_text().rpartition(" ")
        if saved_key == key and saved in ("kvm", "tcg"):
            _ACCEL = saved
            return _ACCEL
    cmd = [QEMU, "-accel", "kvm", "-M", "q35", "-m", "256", "-display", "none", "-nodefaults",
           "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
           "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=20, text=True, errors="replace").stdout
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    if "Kernel panic" in out or "VFS:" in out:
        _ACCEL = "kvm"
    stamp.write_text(f"{key} {_ACCEL}")
    return _ACCEL


# ----------------------------------------------------------------------------- machine


class Machine:
    def __init__(self, disks=(), cdrom: Cdrom | None = None, firmware: str = "bios",
                 memory_mb: int = 1024, cpus: int = 1, kernel=None, initrd=None,
                 append: str | None = None, extra_args=(), log=None, boot: str | None = None,
                 vars_file=None, keyboard: bool = False, nic: str | None = None, monitor: bool = False):
        if firmware not in ("bios", "uefi", "uefi-secure"):
            raise ValueError(f"unknown firmware {firmware!r}")
        self.disks = list(disks)
        self.cdrom = cdrom
        self.firmware = firmware
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.kernel, self.initrd, self.append = kernel, initrd, append
        self.extra_args = list(extra_args)
        self.log_path = Path(log) if log else None
        self.boot = boot or ("cdrom" if cdrom and not disks else "disk")
        self.vars_file = Path(vars_file) if vars_file else None
        # keyboard: a QEMU monitor socket, so keys reach the emulated PC keyboard (the VGA
        # consoles) and not only the serial line.
        self.keyboard = keyboard
        # monitor: the same socket, for hmp() commands (devices plugged in while it runs)
        self.monitor = monitor
        # nic: a wired network card of this QEMU model ("e1000" is Intel's, "rtl8139" Realtek's)
        # on QEMU's user network, where the host is 10.0.2.2 and its loopback servers answer.
        self.nic = nic
        self._monitor: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._buf: list[str] = []
        self._text = ""
        self._cursor = 0
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._logf = None
        self.started_at = 0.0

    # --- command line -----------------------------------------------------------------

    def command(self, workdir: Path) -> list[str]:
        accel = accelerator()
        machine = "q35,smm=on" if self.firmware == "uefi-secure" else "q35"
        cmd = [QEMU, "-accel", accel, "-M", machine, "-m", str(self.memory_mb),
               "-smp", str(self.cpus), "-display", "none", "-nodefaults", "-no-reboot",
               "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
               *self._monitor_args(workdir)]
        if accel == "kvm":
            cmd += ["-cpu", "host"]
        cmd += self._firmware_args(workdir)
        need_ahci = any(d.bus == "sata" for d in self.disks) or (self.cdrom and self.cdrom.bus == "sata")
        need_usb = any(d.bus == "usb" for d in self.disks) or (self.cdrom and self.cdrom.bus == "usb")
        if need_ahci:
            cmd += ["-device", "ahci,id=ahci0"]
        if need_usb:
            cmd += ["-device", "qemu-xhci,id=xhci0"]
        ports = {"sata": 0, "ide": 0}
        order = 1
        if self.cdrom is not None and self.boot == "cdrom":
            cmd += self._cdrom_args(ports, bootindex=order)
            order += 1
        for i, disk in enumerate(self.disks):
            cmd += self._disk_args(i, disk, ports, bootindex=order if i == 0 and self.boot == "disk" else None)
        if self.cdrom is not None and self.boot != "cdrom":
            cmd += self._cdrom_args(ports, bootindex=None)
        if self.nic:
            cmd += ["-nic", f"user,model={self.nic}"]
        if self.kernel:
            cmd += ["-kernel", str(Path(self.kernel).resolve())]
            if self.initrd:
                cmd += ["-initrd", str(Path(self.initrd).resolve())]
            if self.append:
                cmd += ["-append", self.append]
        return cmd + [str(a) for a in self.extra_args]

    def _firmware_args(self, workdir: Path) -> list[str]:
        if self.firmware == "bios":
            return []
        if self.firmware == "uefi":
            code, vars_ = OVMF_DIR / "OVMF_CODE_4M.fd", OVMF_DIR / "OVMF_VARS_4M.fd"
            extra = []
        else:
            code, vars_ = OVMF_DIR / "OVMF_CODE_4M.ms.fd", OVMF_DIR / "OVMF_VARS_4M.ms.fd"
            extra = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        own_vars = self.vars_file or workdir / "OVMF_VARS.fd"
        if not own_vars.exists():
            shutil.copyfile(vars_, own_vars)
        return extra + [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={own_vars}",
        ]

    @staticmethod
    def _drive(ident: str, path, fmt: str, readonly: bool, snapshot: bool, cdrom: bool = False) -> list[str]:
        opts = [f"file={path}", "if=none", f"id={ident}", f"format={fmt}"]
        if cdrom:
            opts += ["media=cdrom", "readonly=on"]
        elif readonly:
            opts.append("readonly=on")
        if snapshot:
            opts.append("snapshot=on")
        return ["-drive", ",".join(opts)]

    def _disk_args(self, i: int, disk: Disk, ports: dict, bootindex: int | None) -> list[str]:
        ident = f"disk{i}"
        args = self._drive(ident, Path(disk.path).resolve(), disk.fmt, disk.readonly, disk.snapshot)
        serial = disk.serial or f"LIFEBOAT{i:04d}"
        blk = []
        if disk.sector_size != 512:
            blk = [f"logical_block_size={disk.sector_size}", f"physical_block_size={disk.sector_size}"]
        if disk.bus == "virtio":
            dev = ["virtio-blk-pci", f"drive={ident}", f"serial={serial}"] + blk
        elif disk.bus == "nvme":
            dev = ["nvme", f"drive={ident}", f"serial={serial}"] + blk
        elif disk.bus == "sata":
            dev = ["ide-hd", f"drive={ident}", f"bus=ahci0.{ports['sata']}", f"serial={serial}"] + blk
            ports["sata"] += 1
        elif disk.bus == "ide":
            dev = ["ide-hd", f"drive={ident}", f"bus=ide.{ports['ide']}", f"serial={serial}"]
            ports["ide"] += 1
        else:  # usb
            dev = ["usb-storage", f"drive={ident}", "bus=xhci0.0", f"serial={serial}"]
            if disk.removable:
                dev.append("removable=on")
        if bootindex is not None:
            dev.append(f"bootindex={bootindex}")
        return args + ["-device", ",".join(dev)]

    def _cdrom_args(self, ports: dict, bootindex: int | None) -> list[str]:
        cd = self.cdrom
        boot = [f"bootindex={bootindex}"] if bootindex is not None else []
        path = Path(cd.path).resolve()
        if cd.bus == "usb":
            args = self._drive("cd0", path, "raw", readonly=True, snapshot=False)
            return args + ["-device", ",".join(["usb-storage", "drive=cd0", "bus=xhci0.0", "removable=on"] + boot)]
        args = self._drive("cd0", path, "raw", readonly=True, snapshot=False, cdrom=True)
        if cd.bus == "sata":
            dev = ["ide-cd", "drive=cd0", f"bus=ahci0.{ports['sata']}"]
            ports["sata"] += 1
        else:
            dev = ["ide-cd", "drive=cd0", f"bus=ide.{ports['ide']}"]
            ports["ide"] += 1
        return args + ["-device", ",".join(dev + boot)]

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> "Machine":
        self._tmp = tempfile.TemporaryDirectory(prefix="lifeboat-qemu-")
        workdir = Path(self._tmp.name)
        cmd = self.command(workdir)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._logf = open(self.log_path, "w", encoding="utf-8", errors="replace")
            self._logf.write("# " + " ".join(cmd) + "\n")
        self.started_at = time.monotonic()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, cwd=workdir)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        fd = self._proc.stdout.fileno()
        # A character split across two reads (the TUI's box drawing) must not turn into U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            text = decoder.decode(data).replace("\r", "")
            with self._cond:
                self._text += text
                if self._logf:
                    self._logf.write(text)
                    self._logf.flush()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return self._text

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def wait_for(self, pattern, timeout: float) -> re.Match:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._text, self._cursor)
                if m:
                    self._cursor = m.end()
                    return m
                left = deadline - time.monotonic()
                exited = self._proc is None or (self._proc.poll() is not None and
                                                 not (self._reader and self._reader.is_alive()))
                if left <= 0 or exited:
                    why = "QEMU exited" if exited else f"no match within {timeout:.0f} s"
                    tail = self._text[-3000:]
                    raise ConsoleTimeout(f"waiting for {rx.pattern!r}: {why}. Console tail:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def _monitor_args(self, workdir: Path) -> list[str]:
        if not (self.keyboard or self.monitor):
            return ["-monitor", "none"]
        self._monitor = workdir / "monitor.sock"
        return ["-monitor", f"unix:{self._monitor},server=on,wait=off"]

    def press(self, *keys: str, pause: float = 0.3) -> None:
        """Keys on the PC keyboard, in QEMU's names: "alt-f2", "ret", "shift-4", "e"."""
        import socket

        assert self._monitor, "Machine(keyboard=True) gives a keyboard"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
            mon.connect(str(self._monitor))
            for key in keys:
                mon.sendall(f"sendkey {key}\n".encode())
                time.sleep(pause)

    def hmp(self, command: str, timeout: float = 30) -> str:
        """One QEMU monitor command (``device_add …``); returns what the monitor answered."""
        import socket

        assert self._monitor, "Machine(monitor=True) gives the monitor"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
            mon.settimeout(timeout)
            mon.connect(str(self._monitor))
            said = b""
            while not said.endswith(b"(qemu) "):          # the greeting and the first prompt
                said += mon.recv(4096)
            mon.sendall(command.encode() + b"\n")
            said = b""
            while not said.endswith(b"(qemu) "):
                said += mon.recv(4096)
        # The monitor echoes the command as it is typed (redrawn per character): its answer
        # follows the last, complete echo.
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", said.decode(errors="replace"))
        return text[text.rfind(command) + len(command):].replace("(qemu) ", "").strip()

    def type_text(self, text: str) -> None:
        """Type a line of plain text on the PC keyboard (US layout), then Enter."""
        shifted = {"$": "shift-4", "(": "shift-9", ")": "shift-0", ">": "shift-dot", "_": "shift-minus",
                   "|": "shift-backslash", '"': "shift-apostrophe", ":": "shift-semicolon"}
        plain = {" ": "spc", "-": "minus", ".": "dot", "/": "slash", "=": "equal", ",": "comma", ";": "semicolon"}
        keys = []
        for ch in text:
            if ch in shifted:
                keys.append(shifted[ch])
            elif ch in plain:
                keys.append(plain[ch])
            elif ch.isupper():
                keys.append(f"shift-{ch.lower()}")
            else:
                keys.append(ch)
        self.press(*keys, "ret", pause=0.15)

    def send(self, text: str) -> None:
        assert self._proc and self._proc.stdin
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def wait_exit(self, timeout: float) -> int:
        assert self._proc
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise ConsoleTimeout(f"QEMU still running after {timeout:.0f} s. Console tail:\n{self.output[-3000:]}") from exc

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._reader:
                self._reader.join(5)
            for f in (self._proc.stdin, self._proc.stdout):
                try:
                    f and f.close()
                except OSError:
                    pass
        if self._logf:
            self._logf.close()
            self._logf = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Machine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def boot_until(disks, pattern, timeout: float, **machine_kw) -> tuple[re.Match, float, str]:
    """Boot, wait for ``pattern``, then for QEMU to exit (guest power-off). Returns the match,
    seconds from start to the match, and the whole console output."""
    with Machine(disks, **machine_kw) as vm:
        m = vm.wait_for(pattern, timeout)
        seconds = vm.elapsed()
        try:
            vm.wait_exit(60)
        except ConsoleTimeout:
            pass
        return m, seconds, vm.output
