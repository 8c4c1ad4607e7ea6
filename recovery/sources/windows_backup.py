"""Windows Backup's system image folder as a source ("Backup and Restore (Windows 7)", still in
Windows 10 and 11). Windows writes, on the backup drive:

    WindowsImageBackup/<PC name>/
        MediaId                                   identifies the backup drive
        Catalog/GlobalCatalog, BackupGlobalCatalog
        SPPMetadataCache/
        Backup <YYYY-MM-DD HHMMSS>/               the image; renamed on each new one
            <disk GUID>.vhdx                      one virtual disk per disk (.vhd before Windows 8):
                                                  its partition table and the saved volumes' data
            BackupSpecs.xml                       what was chosen for the backup
            <GUID>_Components.xml, <GUID>_AdditionalFiles<GUID>.xml, <GUID>_RegistryExcludes.xml,
            <GUID>_Writer<GUID>.xml               the VSS writers' metadata

Each virtual disk is a whole disk, so a disk is reassembled by reading its VHDX through QEMU
(recovery.sources.virtual) under the PC's name and the image's date. A PC with one disk is
restored by naming any of these folders; with several, the disk is named by its file (the
error lists them). The XML catalogues are read only to prove they are whole (a cut catalogue
is a cut backup); the disks themselves carry everything a restore needs.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from recovery.errors import DamageError, UsageError
from recovery.sources.virtual import VirtualDiskSource, detect

ROOT = "WindowsImageBackup"
BACKUP_DIR = re.compile(r"^Backup (\d{4})-(\d{2})-(\d{2}) (\d{2})(\d{2})(\d{2})$")
DISK_FILE = re.compile(r"\.vhdx?$", re.IGNORECASE)


class WindowsBackupSource(VirtualDiskSource):
    tool = "Windows Backup (system image)"

    def __init__(self, disk_file: str, pc: str, created: str, folder: str):
        super().__init__(disk_file, detect(disk_file) or "vhdx", kind="Windows system image", created=created)
        self.name = pc
        self.folder = folder

    def heading(self) -> str:
        return (f"Windows system image of {self.name}, saved {self.created}: disk {os.path.basename(self.location)} "
                f"in {self.folder}")


def _backup_folder(path: str) -> tuple[str, str, str] | None:
    """(backup folder, PC name, ISO date) of the newest image that `path` names or lies in;
    None when `path` is not part of a Windows system image."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    if ROOT not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index(ROOT)
    below = parts[i + 1:]
    if os.path.isfile(path):
        below = below[:-1]
    root = os.sep.join(parts[: i + 1])
    if not below:                                   # WindowsImageBackup itself: one PC in it
        pcs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if len(pcs) != 1:
            raise UsageError(f"{root} holds the system images of {len(pcs)} computers ({', '.join(pcs) or 'none'}): "
                             "name the computer's folder")
        below = [pcs[0]]
    pc_dir = os.path.join(root, below[0])
    if len(below) >= 2:
        backup = below[1]
    else:
        found = sorted(d for d in os.listdir(pc_dir) if BACKUP_DIR.match(d))
        if not found:
            raise DamageError(f"{pc_dir} holds no “Backup <date>” folder: the system image is missing")
        backup = found[-1]
    m = BACKUP_DIR.match(backup)
    if m is None:
        return None
    y, mo, d, h, mi, s = m.groups()
    return os.path.join(pc_dir, backup), below[0], f"{y}-{mo}-{d}T{h}:{mi}:{s}"


def _check_catalogues(folder: str) -> None:
    """BackupSpecs.xml must be there and every XML catalogue whole."""
    if not os.path.isfile(os.path.join(folder, "BackupSpecs.xml")):
        raise DamageError(f"{folder} is incomplete: BackupSpecs.xml is missing")
    for name in sorted(os.listdir(folder)):
        if name.lower().endswith(".xml"):
            try:
                ET.parse(os.path.join(folder, name))
            except ET.ParseError as exc:
                raise DamageError(f"{os.path.join(folder, name)} is damaged: {exc}") from exc
            except OSError as exc:
                raise DamageError(f"{os.path.join(folder, name)} cannot be read: {exc.strerror}") from exc


def open_backup(path: str) -> WindowsBackupSource | None:
    found = _backup_folder(path)
    if found is None:
        return None
    folder, pc, created = found
    _check_catalogues(folder)
    if os.path.isfile(path):
        disks = [os.path.abspath(path)]
    else:
        disks = sorted(os.path.join(folder, n) for n in os.listdir(folder) if DISK_FILE.search(n))
    if not disks:
        raise DamageError(f"{folder} holds no virtual disk (.vhdx or .vhd): the system image is incomplete")
    if len(disks) > 1:
        listed = "; ".join(f"{d} ({os.path.getsize(d) // (1024 * 1024)} MiB file)" for d in disks)
        raise UsageError(f"the system image of {pc} holds {len(disks)} disks; name the one to use: {listed}")
    return WindowsBackupSource(disks[0], pc, created, folder)
