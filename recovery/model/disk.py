"""What probing finds on a machine: disks and their partitions, as immutable values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PartInfo:
    number: int
    path: str | None            # /dev/sdb1, or None inside an image file
    start: int                  # bytes
    size: int                   # bytes
    type: str                   # GPT type GUID or MBR id (hex)
    fs: str | None = None       # "ext4", "vfat", "ntfs", "swap", ... or None
    label: str | None = None
    uuid: str | None = None     # filesystem UUID
    mountpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskInfo:
    path: str                   # /dev/sdb, /dev/loop3 or an image file's absolute path
    size: int
    logical_sector: int = 512
    physical_sector: int = 512
    by_id: str | None = None    # /dev/disk/by-id/... when udev knows one
    model: str | None = None
    serial: str | None = None
    transport: str | None = None  # "nvme", "sata", "usb", "virtio", "loop", "scsi", "file"
    removable: bool = False
    read_only: bool = False
    is_image: bool = False       # a disk-image file rather than a block device
    is_system: bool = False      # the running system (or live medium) lives here
    holds_repository: bool = False
    table: str | None = None     # "gpt", "dos" or None
    incomplete_restore: str | None = None   # "incomplete restore of <name> <date>": a restore's mark is on it
    incomplete_snapshot: str | None = None  # the id of the snapshot that restore was writing
    partitions: tuple[PartInfo, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """Short name a person types to confirm: 'sdb', 'nvme0n1', or the image's file name."""
        return self.path.rsplit("/", 1)[-1]

    def to_json(self) -> dict:
        d = asdict(self)
        d["name"] = self.name
        return d
