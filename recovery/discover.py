"""Finding repositories, so that a person picks one instead of typing a path.

Each partition of the attached disks is looked at: a partition already mounted is read where
it is; any other is mounted read-only in a temporary directory, searched for a Lifeboat
repository at its root and one folder down, and unmounted at once. Plain directories (a
``--repo`` given on the command line, a path typed by the user) are accepted too.

Images other tools made (a VHDX, a Windows system image folder, a Clonezilla folder, a raw
``.img``) found in the same places are listed too, with their origin in words ("VHDX image,
2025-03-02, 3 partitions"), so a restore can start from one.

The result is a list of ``Place`` values: where a repository is (or where a new one could be
made, or a foreign image lies), on which disk, how much room is left, and how many snapshots it
holds. ``Mounts`` then
makes a found place usable (mounting it again, read-write for a backup) and cleans up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from recovery.errors import DiskError, LifeboatError, RepositoryError
from recovery.host import mounts as host_mounts
from recovery.model.disk import DiskInfo, PartInfo
from recovery.repo.format import CONFIG_FILE

# Filesystems worth offering as a home for a new repository.
WRITABLE_FS = {"ext2", "ext3", "ext4", "vfat", "exfat", "ntfs", "xfs", "btrfs"}
# Filesystems the scan never mounts.
SKIP_FS = {None, "", "swap", "linux_raid_member", "LVM2_member", "crypto_LUKS", "BitLocker"}
# Partition types that are never a destination: EFI system, Microsoft reserved, BIOS boot.
SYSTEM_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
    "21686148-6449-6E6F-744E-656564454649",
    "EF",
}
NEW_REPO_FOLDER = "lifeboat"
# Labels of the data partition `lifeboat write-usb --data` adds to the Lifeboat stick (exFAT
# labels hold 11 characters): its repository is listed before any other.
STICK_DATA_LABELS = {"LIFEBOAT-DATA", "LIFEBOATDAT"}


@dataclass(frozen=True)
class Place:
    """A repository, or a filesystem where a new one can be made (``snapshots is None``)."""

    disk: str | None            # disk path the filesystem is on (None: a plain directory)
    partition: str | None       # partition device (None: a plain directory)
    subpath: str                # folder inside the filesystem ("" = its root)
    path: str | None            # usable path now (plain directory or already mounted), else None
    free: int                   # bytes free on the filesystem
    snapshots: int | None       # snapshot count; None when no repository exists there yet
    fs: str | None = None
    label: str | None = None
    names: tuple[str, ...] = ()  # machine names found in the repository
    writable: bool = True
    image: str | None = None    # a foreign image at ``subpath``: its origin in words

    @property
    def is_repository(self) -> bool:
        return self.snapshots is not None

    @property
    def is_image(self) -> bool:
        return self.image is not None

    def describe(self) -> str:
        """One line for a person: where it is."""
        if self.partition is None:
            return self.path or "?"
        where = self.partition
        if self.label:
            where += f" ({self.label})"
        return f"{where}:/{self.subpath}" if self.subpath else f"{where}:/"


def has_repository(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def _open_repository(path: Path):
    from recovery.repo.repository import Repository  # engine module, imported when used

    return Repository.open(path)


def _repository_facts(path: Path) -> tuple[int, tuple[str, ...]] | None:
    if not has_repository(path):
        return None
    encrypted = _encrypted_facts(path)
    if encrypted is not None:
        return encrypted
    try:
        repo = _open_repository(path)
        snaps = repo.snapshots()
    except (LifeboatError, OSError, ValueError):
        return None
    names = tuple(sorted({s.name for s in snaps if s.name}))
    return len(snaps), names


def _encrypted_facts(path: Path) -> tuple[int, tuple[str, ...]] | None:
    """An encrypted repository is not unlocked by a scan: its snapshots are counted by their
    files, and their names stay unknown until someone gives the passphrase."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        if not isinstance(config, dict) or config.get("encryption") is None:
            return None
        return sum(1 for p in (path / "snapshots").glob("*.json")), ()
    except (OSError, ValueError):
        return None


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _candidates(root: Path) -> list[str]:
    """Sub-paths to look at: the root, and each folder one level down."""
    out = [""]
    try:
        with os.scandir(root) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and entry.name != "lost+found":
                    out.append(entry.name)
    except OSError:
        pass
    return out


def search_filesystem(root: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """(subpath, snapshot count, names) of every repository at ``root`` or one folder down."""
    found = []
    for sub in _candidates(root):
        facts = _repository_facts(root / sub if sub else root)
        if facts is not None:
            found.append((sub, facts[0], facts[1]))
    return found


def search_images(root: Path) -> list[tuple[str, str]]:
    """(subpath, origin in words) of every foreign image at ``root`` or one folder down."""
    from recovery.sources.open import peek

    found = []
    for sub in _candidates(root):
        base = root / sub if sub else root
        if sub and has_repository(base):
            continue
        entries = [base]
        try:
            entries += sorted(e for e in base.iterdir() if e.is_file() or e.name == "WindowsImageBackup")
        except OSError:
            pass
        for entry in entries:
            if entry == root or (entry == base and base.name == "WindowsImageBackup"):
                continue                  # the root's own WindowsImageBackup is listed from the root
            words = peek(str(entry))
            if words:
                found.append((str(entry.relative_to(root)), words))
    return found


def check_directory(path: str | os.PathLike) -> Place:
    """A plain directory (or file): a repository, an image another tool made, or an
    empty/missing folder where a repository can be made."""
    from recovery.sources.open import peek

    p = Path(path).expanduser().absolute()
    facts = _repository_facts(p)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    writable = os.access(probe, os.W_OK)
    if facts is None:
        words = peek(str(p)) if p.exists() else None
        if words:
            return Place(None, None, "", str(p), _free_bytes(probe), None, writable=False, image=words)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise RepositoryError(f"{p} is not a Lifeboat repository and is not empty")
        return Place(None, None, "", str(p), _free_bytes(probe), None, writable=writable)
    return Place(None, None, "", str(p), _free_bytes(p), facts[0], names=facts[1], writable=writable)


def mount(device: str, fs: str | None, writable: bool = False) -> Path:
    """Mount ``device`` in a new temporary directory; DiskError when it cannot be mounted."""
    try:
        return host_mounts.temporary(device, fs, writable)
    except DiskError:
        region = _region_of_mounted_disk(device)
        if region is None:
            raise
    # The whole disk is mounted (the Lifeboat stick, mounted whole as the live medium): the
    # kernel lets none of its partitions be mounted, a loop device over the bytes can.
    disk, start, size = region
    return host_mounts.temporary(disk, fs, writable, offset=start, size=size)


def _region_of_mounted_disk(device: str) -> tuple[str, int, int] | None:
    """(whole disk, byte offset, byte size) of partition ``device`` when its whole disk is itself
    mounted; None otherwise."""
    from recovery.probe import blockdev
    from recovery.probe.mounts import current_mounts

    try:
        if not blockdev.is_partition(device):
            return None
        disk = blockdev.parent_disk(device)
        sysdir = blockdev.sysfs_dir(device)
        with open(os.path.join(sysdir, "start")) as f:
            start = int(f.read()) * 512
        with open(os.path.join(sysdir, "size")) as f:
            size = int(f.read()) * 512
        rdev = os.stat(disk).st_rdev
    except (OSError, ValueError, LifeboatError):
        return None
    numbers = (os.major(rdev), os.minor(rdev))
    if any(m.major_minor == numbers or m.source == disk for m in current_mounts()):
        return disk, start, size
    return None


def unmount(where: Path) -> None:
    host_mounts.release(where)


def _partition_places(disk: DiskInfo, part: PartInfo, mount_partitions: bool) -> list[Place]:
    if part.path is None or part.fs in SKIP_FS:
        return []
    if part.mountpoints:
        root, temporary = Path(part.mountpoints[0]), False
    elif mount_partitions and os.geteuid() == 0:
        try:
            root, temporary = mount(part.path, part.fs), True
        except DiskError:
            return []
    else:
        return []
    try:
        free = _free_bytes(root)
        places = [
            Place(disk.path, part.path, sub, None if temporary else str(root / sub) if sub else str(root),
                  free, count, part.fs, part.label, names)
            for sub, count, names in search_filesystem(root)
        ]
        images = [
            Place(disk.path, part.path, sub, None if temporary else str(root / sub), free, None, part.fs,
                  part.label, writable=False, image=words)
            for sub, words in search_images(root)
        ]
        offer_new = (
            not places
            and part.fs in WRITABLE_FS
            and part.type.upper() not in SYSTEM_TYPES
            and not disk.is_system
            and not disk.read_only
        )
        if offer_new:
            places.append(Place(disk.path, part.path, NEW_REPO_FOLDER,
                                None if temporary else str(root / NEW_REPO_FOLDER),
                                free, None, part.fs, part.label))
        return places + images
    finally:
        if temporary:
            unmount(root)


def _whole_disk_filesystem(disk: DiskInfo) -> tuple[PartInfo, ...]:
    """A USB drive formatted without a partition table holds its filesystem on the disk
    itself; it is searched like a partition numbered 0."""
    if disk.is_image or disk.table or disk.partitions:
        return ()
    from recovery.probe.disks import blkid_probe
    from recovery.probe.mounts import mounts_on_disk

    found = blkid_probe(disk.path)
    if not found.get("TYPE"):
        return ()
    targets = tuple(m.target for m in mounts_on_disk(disk.path) if m.source == disk.path)
    return (PartInfo(number=0, path=disk.path, start=0, size=disk.size, type="", fs=found["TYPE"],
                     label=found.get("LABEL"), uuid=found.get("UUID"), mountpoints=targets),)


def scan(disks: Iterable[DiskInfo], directories: Iterable[str] = (), *,
         mount_partitions: bool = True) -> list[Place]:
    """Repositories (and homes for new ones) on ``disks`` and in ``directories``.

    Repositories first (the Lifeboat stick's LIFEBOAT-DATA one before the others), then the
    rest; each group by free space, largest first.
    """
    places: list[Place] = []
    for d in directories:
        try:
            places.append(check_directory(d))
        except RepositoryError:
            continue
    for disk in disks:
        for part in disk.partitions or _whole_disk_filesystem(disk):
            places.extend(_partition_places(disk, part, mount_partitions))
    places.sort(key=_rank)
    return places


def _rank(place: Place) -> tuple:
    """Repositories first, the Lifeboat stick's own data partition first among them; then by
    free space, largest first."""
    return (not place.is_repository, place.is_image, place.label not in STICK_DATA_LABELS, -place.free)


def default_destination(places: Iterable[Place], source: DiskInfo | None) -> Place | None:
    """Where a new backup of ``source`` goes by default: the writable place with the most
    free space that is not on the disk being backed up."""
    ok = [p for p in places if p.writable and not p.is_image and (source is None or p.disk != source.path)]
    ok.sort(key=lambda p: (-p.free, not p.is_repository))
    return ok[0] if ok else None


def disks_holding_repositories(places: Iterable[Place]) -> set[str]:
    return {p.disk for p in places if p.is_repository and p.disk}


@dataclass
class Mounts:
    """Makes places usable for the length of a session; ``close()`` unmounts what it mounted."""

    mounted: dict[str, tuple[Path, bool]] = field(default_factory=dict)

    def path_of(self, place: Place, writable: bool = False) -> Path:
        if place.path is not None:
            return Path(place.path)
        assert place.partition is not None
        have = self.mounted.get(place.partition)
        if have and (have[1] or not writable):
            root = have[0]
        else:
            if have:
                unmount(have[0])
            root = mount(place.partition, place.fs, writable)
            self.mounted[place.partition] = (root, writable)
        return root / place.subpath if place.subpath else root

    def close(self) -> None:
        for root, _ in self.mounted.values():
            unmount(root)
        self.mounted.clear()


def usage(disk: DiskInfo) -> dict[int, int]:
    """Bytes in use per partition number, from each filesystem's own metadata (the same maps a
    backup uses). Partitions imaged whole (unknown, encrypted, damaged) are left out: their use
    is not known. Reads the disk only; DiskError when it cannot be opened."""
    from recovery.diskio import Disk
    from recovery.fs import probe_partition

    out: dict[int, int] = {}
    with Disk(disk.path) as d:
        for part in disk.partitions:
            if not part.fs or part.fs == "swap":
                continue
            try:
                info = probe_partition(lambda off, n, base=part.start: d.read(base + off, n), part.size)
            except (LifeboatError, OSError):
                continue
            if not info.whole:
                out[part.number] = info.used_bytes
    return out
