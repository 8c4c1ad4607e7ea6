"""Virtual disks (VHD, VHDX, qcow2, VMDK) read through QEMU's own block layer.

    info = image_info("pc.vhdx")                 # qemu-img info: format, virtual size, ...
    problems = image_check("pc.vhdx", "vhdx")     # qemu-img check: its words, or None when clean
    with RawExport("pc.vhdx", "vhdx") as raw:     # qemu-storage-daemon exports it over FUSE
        open(raw.path, "rb")                      # ... as a plain read-only raw file

The kernel of the live system has no nbd module; qemu-storage-daemon's FUSE export needs only
FUSE, which it has. The daemon runs in the foreground as our child: stopping it (SIGTERM) makes
it unmount its export; a left-over mount is unmounted anyway.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time

from recovery.errors import DamageError, ToolError
from recovery.host import tools
from recovery.probe.mounts import current_mounts

log = logging.getLogger("recovery.host.qemu")
CHECK_UNSUPPORTED = 63       # qemu-img check: "this image format does not support checks"
CHECK_LEAKS_ONLY = 3         # leaked clusters waste space but lose no data


def image_info(path: str, fmt: str | None = None) -> dict:
    """qemu-img info as a dict; DamageError with qemu's words when it cannot open the image."""
    args = ["qemu-img", "info", "--output=json"] + (["-f", fmt] if fmt else []) + [path]
    tools.require("qemu-img", "package qemu-utils")
    res = tools.run(args, check=False)
    if res.returncode != 0:
        raise DamageError(f"{path} cannot be opened as a virtual disk: {_words(res.stderr)}")
    return json.loads(res.stdout)


def image_check(path: str, fmt: str) -> str | None:
    """qemu-img check's findings in words, or None when the image is consistent (or the format
    has no check: VHD)."""
    res = tools.run(["qemu-img", "check", "--output=json", "-f", fmt, path], check=False)
    if res.returncode in (0, CHECK_LEAKS_ONLY, CHECK_UNSUPPORTED):
        return None
    try:
        report = json.loads(res.stdout)
        found = [f"{report[k]} {k.replace('-', ' ')}" for k in ("corruptions", "check-errors") if report.get(k)]
        return ", ".join(found) or _words(res.stderr)
    except (ValueError, TypeError):
        return _words(res.stderr or res.stdout)


def _words(text: str) -> str:
    line = tools.last_line(text)
    return line.removeprefix("qemu-img: ")


class RawExport:
    """A virtual disk exported read-only as a raw file (self.path) until close()."""

    def __init__(self, image: str, fmt: str, size: int, timeout: float = 20.0):
        tools.require("qemu-storage-daemon", "package qemu-system-common")
        self._dir = tempfile.mkdtemp(prefix="lifeboat-vdisk-")
        self.path = os.path.join(self._dir, "disk.raw")
        open(self.path, "wb").close()             # a FUSE export mounts over a regular file
        args = ["qemu-storage-daemon",
                "--blockdev", f"driver=file,node-name=file,filename={_escape(os.path.abspath(image))},read-only=on",
                "--blockdev", f"driver={fmt},node-name=disk,file=file,read-only=on",
                "--export", f"type=fuse,id=raw,node-name=disk,mountpoint={_escape(self.path)},writable=off"]
        log.info("run %s", " ".join(args))
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while not self._mounted():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read()
                self._cleanup()
                raise DamageError(f"{image} cannot be read as {fmt}: {_words(err)}")
            if time.monotonic() > deadline:
                self.close()
                raise ToolError(f"qemu-storage-daemon did not export {image} within {timeout:.0f} s")
            time.sleep(0.05)
        if os.path.getsize(self.path) != size:
            self.close()
            raise DamageError(f"{image}: its export holds {os.path.getsize(self.path)} bytes, not the {size} "
                              "its header says")

    def _mounted(self) -> bool:
        return any(m.target == self.path for m in current_mounts())

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()                      # the daemon unmounts its export on SIGTERM
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._mounted():
            tools.quiet(["umount", "-l", self.path])
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "RawExport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _escape(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")
