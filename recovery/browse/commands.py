"""The browse verbs of the command line: mount, umount, ls, get.

    lifeboat mount SNAPSHOT MOUNTPOINT --repo R     until `lifeboat umount MOUNTPOINT` or Ctrl-C
    lifeboat umount MOUNTPOINT
    lifeboat ls SNAPSHOT [PARTITION:PATH] --repo R [--json]
    lifeboat get SNAPSHOT PARTITION:PATH DEST --repo R [--json]

SNAPSHOT may also be an image another tool made (a file or folder, as `lifeboat inspect`
takes), browsed in place without --repo.

`ls` and `get` mount the one partition they need in a private folder and let it go again.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from recovery.browse import files
from recovery.browse.saved import (BROWSABLE, describe, entry_name, find_partition, fs_name, open_image, open_snapshot,
                                   shown_name, split_ref)
from recovery.browse.view import SnapshotView, clean_stale, temporary_view, unmount_view
from recovery.errors import Cancelled, RefusedError, RepositoryError, UsageError
from recovery.units import human_size

PARTIAL_EXIT = 9      # get: some files could not be read; the rest was copied


def _open(args):
    """The saved disk the command names: an image file or folder another tool made, else a
    snapshot of --repo."""
    from recovery.cli import is_foreign
    from recovery.repo.repository import Repository

    clean_stale()         # a view left by a killed process goes before anything else is done
    if is_foreign(args.snapshot):
        return open_image(args.snapshot)
    if not args.repo:
        raise UsageError(f"{args.snapshot} is neither an image file or folder nor, without --repo, a snapshot: "
                         "name the repository with --repo (or set LIFEBOAT_REPO)")
    repo = Repository.open(args.repo)
    try:
        return open_snapshot(repo, args.snapshot, args.name)
    except BaseException:
        repo.close()
        raise


def _signals_raise() -> None:
    """SIGTERM and SIGHUP end a serving mount as Ctrl-C does: unmounted on the way out."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def cmd_mount(args) -> int:
    disk = _open(args)
    _signals_raise()
    view = SnapshotView(disk, args.mountpoint)
    try:
        view.start()
        print(f"{disk.title()} ({disk.created}) mounted read-only at {view.where}",
              file=sys.stderr)
        letters = disk.drive_letters()
        for part in disk.partitions:
            name = entry_name(part)
            where = f"{name}/ and {name}.img" if part.number in view.mounted else f"{name}.img"
            print(f"  {where:<16} {describe(part, letters.get(part.number))}", file=sys.stderr)
        for note in view.notes:
            print(f"  note: {note}", file=sys.stderr)
        print(f"stop with Ctrl-C or: lifeboat umount {view.where}", file=sys.stderr, flush=True)
        view.wait()
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
        disk.close()
    return 0


def cmd_umount(args) -> int:
    unmount_view(args.mountpoint)
    print(f"unmounted {args.mountpoint}", file=sys.stderr)
    return 0


def _emit(args, data, lines) -> None:
    import json

    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            print(line)


def _partition_json(p, letter: str | None) -> dict:
    return {"number": p.number, "label": p.label, "drive_letter": letter, "fs": p.fs, "size": p.size,
            "used_bytes": p.used_bytes, "browsable": p.fs in BROWSABLE,
            "description": describe(p, letter)}


def _entry_line(e: files.Entry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
    size = "<dir>" if e.kind == "dir" else human_size(e.size) if e.kind == "file" else e.kind
    name = e.name + ("/" if e.kind == "dir" else f" -> {e.target}" if e.kind == "link" else "")
    return f"{size:>11}  {when}  {name}"


def _mounted_partition(disk, spec: str):
    part = find_partition(disk, spec)
    if part.fs not in BROWSABLE:
        raise RefusedError(f"partition {part.number} holds {fs_name(part.fs) if part.fs else 'no filesystem'}"
                           f", which Lifeboat cannot browse; `lifeboat mount` offers it as an image file")
    if os.geteuid() != 0:
        raise RefusedError("looking inside a saved filesystem needs root (it is mounted read-only)")
    view = temporary_view(disk, only={part.number})
    view.start()
    if part.number not in view.mounted:
        view.close()
        raise RefusedError(view.notes[0] if view.notes else f"partition {part.number} cannot be mounted")
    return part, view


def cmd_ls(args) -> int:
    disk = _open(args)
    try:
        if not args.where:
            letters = disk.drive_letters()
            lines = [f"{disk.title()}, {disk.created}"]
            lines += [f"  {p.number:>2}  {fs_name(p.fs):<8} {human_size(p.size):>10}  "
                      f"{shown_name(p, letters.get(p.number)) if p.label or p.number in letters else ''}"
                      for p in disk.partitions]
            _emit(args, {"snapshot": disk.id, "name": disk.name, "created": disk.created,
                         "partitions": [_partition_json(p, letters.get(p.number)) for p in disk.partitions]},
                  lines)
            return 0
        spec, path = split_ref(args.where)
        part, view = _mounted_partition(disk, spec)
        try:
            full = files.locate(view.mounted[part.number], path, f"{part.number}:{path}")
            entries = files.list_dir(full) if full.is_dir() and not full.is_symlink() else [files.entry_of(full)]
            _emit(args, {"snapshot": disk.id, "partition": part.number, "path": path,
                         "entries": [e.to_json() for e in entries]}, [_entry_line(e) for e in entries])
        finally:
            view.close()
        return 0
    finally:
        disk.close()


def cmd_get(args) -> int:
    from recovery.cli import progress_for

    disk = _open(args)
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise RefusedError(f"{dest} already exists and is not a folder: name a folder to copy into")
    if not dest.exists() and not dest.parent.is_dir():
        raise UsageError(f"{dest.parent} does not exist")
    try:
        spec, path = split_ref(args.where)
        part, view = _mounted_partition(disk, spec)
        try:
            root = view.mounted[part.number]
            src = files.locate(root, path, f"{part.number}:{path}")
            made = not dest.exists()
            if made:
                dest.mkdir()
            with progress_for(args) as sink:
                try:
                    result = files.copy_out([src], root, dest, on_event=sink,
                                            lost=lambda: view.repository_lost)
                except KeyboardInterrupt:
                    raise Cancelled("cancelled: what was copied is complete; the file being copied was "
                                    "removed") from None
        finally:
            view.close()
    finally:
        disk.close()
    lines = [f"copied {result.files} file(s), {human_size(result.bytes)}, into {dest}"]
    lines += [f"renamed: {a} -> {b}" for a, b in result.renamed]
    lines += [f"skipped: {a}: {b}" for a, b in result.skipped]
    lines += [f"UNREADABLE: {a}: {b}" for a, b in result.unreadable]
    if result.stopped:
        why = (f"the repository could not be read any more ({result.stopped}); was its drive removed? "
               f"The {result.files} file(s) copied into {dest} are complete, what is listed UNREADABLE was "
               f"removed, and the rest was not copied")
        _emit(args, result.to_json(), lines)
        print(f"lifeboat: {why}", file=sys.stderr)
        return RepositoryError.exit_code
    if result.partial:
        lines.append(f"{len(result.unreadable)} file(s) could not be read; everything else was copied")
    _emit(args, result.to_json(), lines)
    return PARTIAL_EXIT if result.partial else 0


COMMANDS = {"mount": cmd_mount, "umount": cmd_umount, "ls": cmd_ls, "get": cmd_get}
