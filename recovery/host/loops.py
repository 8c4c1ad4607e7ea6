"""Loop devices over image files, or over a byte range of a disk."""

from __future__ import annotations

import os
from contextlib import contextmanager

from recovery.errors import ToolError
from recovery.host import tools


def attach(path: str, offset: int = 0, size: int | None = None, read_only: bool = False,
           sector_size: int | None = None, partitions: bool = False, pass_fds: tuple[int, ...] = ()) -> str:
    """A new loop device over `path` (from `offset`, `size` bytes); ToolError when it fails."""
    if os.geteuid() != 0:
        raise ToolError("a loop device needs root")
    args = ["losetup", "--find", "--show"]
    if offset:
        args += ["--offset", str(offset)]
    if size is not None:
        args += ["--sizelimit", str(size)]
    if read_only:
        args.append("--read-only")
    if sector_size and sector_size != 512:
        args += ["--sector-size", str(sector_size)]
    if partitions:
        args.append("--partscan")
    try:
        return tools.run(args + [path], pass_fds=pass_fds).stdout.strip()
    except tools.Failed as exc:
        raise ToolError(f"cannot attach a loop device to {path}: {tools.first_line(exc.stderr)}") from exc


def detach(device: str) -> None:
    tools.quiet(["losetup", "-d", device])


@contextmanager
def loop_device(path: str, offset: int = 0, size: int | None = None, read_only: bool = False):
    device = attach(path, offset, size, read_only)
    try:
        yield device
    finally:
        detach(device)
