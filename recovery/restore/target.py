"""Which disks a restore may write: the one set of rules the CLI, the TUI and the live boot share."""

from __future__ import annotations

import os

from recovery.errors import RefusedError
from recovery.model.disk import DiskInfo
from recovery.probe.mounts import is_on_disk, mounts_on_disk


def target_refusal(target: DiskInfo, repo_path: str | None = None, *, check_mounts: bool = True) -> str | None:
    """Why `target` cannot be restored onto, in words that complete "cannot restore there: ...";
    None when it can. `repo_path` is the repository or image being restored from, when known."""
    if target.is_system:
        return "it holds the running system"
    if target.read_only:
        return "it is read-only"
    if target.holds_repository:
        return "it holds backups"
    if repo_path is not None:
        if is_on_disk(str(repo_path), target.path):
            return "it holds the backup being restored from"
        if target.is_image and os.path.realpath(target.path).startswith(os.path.realpath(repo_path) + os.sep):
            return "it lies inside the backup being restored from"
    if check_mounts:
        mounted = mounts_on_disk(target.path)
        if mounted:
            m = mounted[0]
            return f"{m.source} on it is mounted at {m.target} (unmount it first)"
    elif any(p.mountpoints for p in target.partitions):
        return "a partition on it is in use (mounted)"
    return None


def check_target(target: DiskInfo, repo_path: str | None) -> None:
    why = target_refusal(target, repo_path)
    if why:
        raise RefusedError(f"cannot restore onto {target.path}: {why}; choose another disk")
