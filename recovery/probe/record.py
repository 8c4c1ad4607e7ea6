"""A record of what this machine's probing sees, for a bug report or a test: every block
device's probe record (recovery.probe.disks.read_record), the mount table, and the shape of
/sys/class/block (each device's sysfs path, major:minor, holders and partitions).

`lifeboat disks --record` prints it; tests rebuild the sysfs shape in a temporary folder
(`build_sysfs`) and feed the records to the classifier, so a disk seen on a real bus (NVMe,
SATA, USB, virtio) or a device-mapper stack can be checked on any machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from recovery.probe import disks
from recovery.probe.mounts import MOUNTINFO, SYS, current_mounts


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def sysfs_shape(sys_root: str = SYS) -> list[dict]:
    """One entry per block device: {name, path (under /sys), dev, partition, holders}."""
    shape = []
    base = os.path.join(sys_root, "class", "block")
    root = os.path.realpath(sys_root)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return shape
    for name in names:
        sysdir = os.path.realpath(os.path.join(base, name))
        try:
            holders = sorted(os.listdir(os.path.join(sysdir, "holders")))
        except OSError:
            holders = []
        shape.append({"name": name, "path": sysdir[len(root):].lstrip("/"),
                      "dev": _read(os.path.join(sysdir, "dev")),
                      "partition": _read(os.path.join(sysdir, "partition")),
                      "holders": holders})
    return shape


def machine_record() -> dict:
    """Everything the disk listing reads on this machine, as JSON-able data."""
    mounts = current_mounts()
    links = disks.by_id_index()
    names = sorted(os.listdir(os.path.join(SYS, "block")))
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        mountinfo = f.read()
    return {
        "kernel": platform.release(),
        "udev_running": disks.udev_running(),
        "records": [disks.read_record(name, mounts=mounts, links=links) for name in names],
        "sysfs": sysfs_shape(),
        "mountinfo": mountinfo,
    }


def build_sysfs(shape: list[dict], root: Path) -> Path:
    """Recreate a recorded sysfs shape under `root` (folders, `dev` and `partition` files,
    `holders`/`slaves`, `class/block` and `dev/block` links); returns `root`, usable as
    `sys_root`."""
    for entry in shape:
        d = root / entry["path"]
        d.mkdir(parents=True, exist_ok=True)
        if entry["dev"] is not None:
            (d / "dev").write_text(entry["dev"] + "\n")
        if entry["partition"] is not None:
            (d / "partition").write_text(entry["partition"] + "\n")
    by_name = {e["name"]: root / e["path"] for e in shape}
    for sub in ("class/block", "dev/block"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for entry in shape:
        here = by_name[entry["name"]]
        (root / "class" / "block" / entry["name"]).symlink_to(here)
        if entry["dev"] is not None:
            (root / "dev" / "block" / entry["dev"]).symlink_to(here)
        for sub in ("holders", "slaves"):
            (here / sub).mkdir(exist_ok=True)
    for entry in shape:                     # the kernel links both ways: holders down, slaves up
        for h in entry["holders"]:
            if h in by_name:
                (by_name[entry["name"]] / "holders" / h).symlink_to(by_name[h])
                (by_name[h] / "slaves" / entry["name"]).symlink_to(by_name[entry["name"]])
    return root
