"""Mounts this test run made, told apart from those of another run on the same machine.

A session fixture in conftest points the product's temporary folders (browse views' mount
points, virtual-disk exports) into the run's own base folder, so counting what is left
mounted counts this run's mounts only."""

from __future__ import annotations

from pathlib import Path

from recovery.browse import view
from recovery.probe.mounts import current_mounts

_base: list[str] = []


def set_base(path: Path) -> None:
    _base[:] = [str(path).rstrip("/") + "/"]


def mine(targets) -> list[str]:
    return [t for t in targets if t.startswith(_base[0])]


def views() -> list[str]:
    """Browse views (live or stale) mounted beneath this run's base folder."""
    return mine(view.views())


def mounts() -> list[str]:
    """Every mount point beneath this run's base folder."""
    return mine(m.target for m in current_mounts())


def mounts_containing(word: str) -> list[str]:
    """Mount points beneath this run's base folder whose line in /proc/self/mounts holds `word`."""
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return mine(line.split()[1] for line in lines if word in line)


# A new mount namespace (unshare -m, ip netns exec) starts with a copy of every mount the host
# has at that moment, other lanes' test filesystems among them. A copy keeps its filesystem
# alive after that lane unmounts it: nothing is written back (an ext4 image then shows its
# journal unrecovered and its old bitmaps) and the loop device stays held. A shell script run
# in such a namespace begins with this line, which drops the copies beneath the temporary and
# Lifeboat's run folders before doing anything else.
DROP_COPIED_MOUNTS = (r"""awk '$5 ~ "^/(tmp|run/lifeboat|media)/" {print $5}' /proc/self/mountinfo"""
                      """ | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; """)
