"""Small files Lifeboat remembers from one run to the next (the network locations used
before, without any secret), kept where they survive a reboot.

Off the live system that is the data folder (recovery.storage.mounted.data_dir). On the live
system the data folder is in RAM, so the files go to the stick's data partition (LIFEBOAT-DATA,
made by write-usb), in its folder FOLDER: the partition is found on the medium the live system
booted from (MEDIUM_FILE, written by the initramfs), mounted read-only to read and read-write
only for the moment of a write (a partition that is mounted already is used where it is).
When there is no such partition, or it cannot be written (a write-protected stick, or mounted
read-only by something else), the file stays in RAM and the caller gets a note saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

from recovery.errors import DiskError, LifeboatError
from recovery.host import mounts as host_mounts
from recovery.model.disk import PartInfo

MEDIUM_FILE = Path("/run/lifeboat/medium-device")
FOLDER = "lifeboat-remembered"


def _ram_dir() -> Path:
    from recovery.storage.mounted import data_dir

    return data_dir()


def _live() -> bool:
    return os.environ.get("LIFEBOAT_LIVE") == "1"


def stick_data_partition() -> PartInfo | None:
    """The data partition of the stick the live system booted from, or None."""
    from recovery.probe.disks import describe
    from recovery.usbstick import DATA_LABELS

    try:
        medium = MEDIUM_FILE.read_text().strip()
    except OSError:
        return None
    if not medium.startswith("/dev/"):
        return None
    name = os.path.basename(medium)
    sys_dir = Path("/sys/class/block") / name
    if (sys_dir / "partition").exists():                 # booted from a partition: its disk
        name = sys_dir.resolve().parent.name
    try:
        disk = describe(f"/dev/{name}")
    except LifeboatError:
        return None
    for part in disk.partitions:
        if part.path and part.label in DATA_LABELS.values() and part.fs in DATA_LABELS:
            return part
    return None


def _mounted_rw(part: PartInfo) -> Path | None:
    """Where `part` is mounted read-write already, if it is."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[1] in part.mountpoints and "rw" in fields[3].split(","):
            return Path(fields[1].replace("\\040", " "))
    return None


def read_all(name: str) -> list[str]:
    """The texts kept under `name`: the one in the data folder (on the live system, in RAM: only
    there when the stick could not be written, so it is the newer), then the stick's copy.
    Unreadable copies are left out: remembering is a convenience."""
    texts = []
    try:
        texts.append((_ram_dir() / name).read_text())
    except OSError:
        pass
    part = stick_data_partition() if _live() else None
    if part is not None:
        try:
            if part.mountpoints:
                texts.append((Path(part.mountpoints[0]) / FOLDER / name).read_text())
            else:
                where = host_mounts.temporary(part.path, part.fs, writable=False, prefix="lifeboat-remembered-")
                try:
                    texts.append((where / FOLDER / name).read_text())
                finally:
                    host_mounts.release(where)
        except (OSError, DiskError):
            pass
    return texts


def _write_file(path: Path, text: str) -> None:
    """Written whole, flushed, then renamed: a cut leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write(name: str, text: str) -> str | None:
    """Keep `text` under `name`. On the live system it goes to the stick's data partition;
    when it cannot, to RAM, and the returned note says why (None when all went as it should)."""
    if not _live():
        _write_file(_ram_dir() / name, text)
        return None
    part = stick_data_partition()
    if part is None:
        why = "the stick Lifeboat started from has no data partition"
    else:
        try:
            where = _mounted_rw(part)
            if where is not None:
                _write_file(where / FOLDER / name, text)
                return _drop_ram_copy(name)
            if part.mountpoints:
                raise OSError("it is in use read-only")
            where = host_mounts.temporary(part.path, part.fs, writable=True, prefix="lifeboat-remembered-")
            try:
                _write_file(where / FOLDER / name, text)
            finally:
                host_mounts.release(where)
            return _drop_ram_copy(name)
        except (OSError, DiskError) as exc:
            said = exc.message if isinstance(exc, DiskError) else (exc.strerror or str(exc))
            why = f"the stick's data partition cannot be written ({said})"
    _write_file(_ram_dir() / name, text)
    return f"kept until the next reboot only: {why}"


def _drop_ram_copy(name: str) -> None:
    """Once the stick has the file, an older copy left in RAM (when the stick could not be
    written) is not read again."""
    try:
        (_ram_dir() / name).unlink()
    except OSError:
        pass
    return None
