"""Opening a saved disk another tool made: `open_source(path)` says what a file or folder is and
returns its Source (recovery.sources.base), or raises one plain error naming what is wrong.

Each format's module offers an opener: `opener(path)` returns its Source, None when the path is
not that format, or raises (UsageError, DamageError) when it is that format but cannot be used.
They are tried in the order of OPENERS, the most particular first (folders, then files with a
signature, raw images last, since any file could be one). A format whose module is not part of
this build is skipped. A Lifeboat repository is not a foreign image: it is opened with --repo.
"""

from __future__ import annotations

import os

from recovery.errors import UsageError
from recovery.repo.format import CONFIG_FILE
from recovery.sources.base import Source

def openers():
    """The opener of each format, in the order they are tried: each returns a Source, or None
    when the path is not of its kind. Imported here, not at module level, so that listing
    disks never pays for qemu, partclone or XML parsing."""
    from recovery.sources import clonezilla, compressed_raw, partclone, raw, virtual, windows_backup

    return (
        clonezilla.open,                 # Clonezilla / Rescuezilla image folders
        windows_backup.open_backup,      # WindowsImageBackup folders
        partclone.open,                  # bare partclone images
        virtual.open_virtual,            # VHD, VHDX, qcow2, VMDK
        compressed_raw.open_compressed,  # disk.img.gz / .zst / .xz
        raw.open_raw,                    # disk.img / .dd / .raw
    )


KNOWN = ("a Clonezilla or Rescuezilla image folder, a partclone image, a VHD, VHDX, qcow2 or VMDK virtual disk, "
         "a Windows system image folder (WindowsImageBackup), or a raw disk image (.img, .dd, .raw, "
         "plain or .gz/.zst/.xz/.bz2/.lz4/.lzo/.lzma, whole or in .aa .ab ... pieces)")


def open_source(path: str) -> Source:
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist")
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise UsageError(f"{path} is a Lifeboat repository, not an image: name it with --repo and pick a snapshot")
    for opener in openers():
        source = opener(path)
        if source is not None:
            return source
    raise UsageError(f"{path} is not an image Lifeboat can read; it reads {KNOWN}")


# Names worth opening while scanning a drive for images (opening anything else is left to a
# person who names it): the suffixes of the formats above, and the folders they are saved in.
IMAGE_SUFFIXES = (".vhd", ".vhdx", ".qcow2", ".qcow", ".vmdk", ".img", ".dd", ".raw", ".ptcl-img") + tuple(
    f"{raw}{codec}{piece}" for raw in (".img", ".dd", ".raw")
    for codec in (".gz", ".zst", ".xz", ".bz2", ".lz4", ".lzo", ".lzma") for piece in ("", ".aa"))


def peek(path: str) -> str | None:
    """What a scan says of `path`, when it is a foreign image: "VHDX image, 2025-03-02, 3
    partitions"; None when it is not one (or cannot be read). A compressed raw image is not
    decompressed for this: its partitions are counted when it is opened."""
    from recovery.errors import LifeboatError
    from recovery.sources import compressed_raw

    name = os.path.basename(path).lower()
    if os.path.isfile(path) and not name.endswith(IMAGE_SUFFIXES):
        return None
    try:
        how = compressed_raw.compression_of(path)
        if how is not None:
            from datetime import datetime, timezone

            when = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc).strftime("%Y-%m-%d")
            return f"{how}-compressed raw disk image, {when}"
        with open_source(path) as source:
            n = len(source.partitions)
            return f"{source.kind}, {source.created[:10]}, {n} partition{'' if n == 1 else 's'}"
    except (LifeboatError, OSError):
        return None
