"""The "Get files back" wizard: repository -> computer -> snapshot -> partition -> files ->
destination drive -> copy, without restoring anything. An image another tool made (found on
the disks like a repository) goes straight to its partitions.

The chosen partition is mounted read-only in a private folder (recovery.browse.view) for as
long as the person browses it, and unmounted when the wizard ends, however it ends (a TUI that
crashes leaves a view the next run cleans up).
"""

from __future__ import annotations

from pathlib import Path

from recovery.browse import files
from recovery.browse.saved import describe, open_image, open_snapshot
from recovery.browse.view import temporary_view
from recovery.errors import LifeboatError
from tui import humanize
from tui.flows import repo_with_snapshots
from tui.screens.destination_picker import DestinationPickerScreen
from tui.screens.file_browser import FileBrowserScreen
from tui.screens.job import JobScreen
from tui.screens.name_picker import NamePickerScreen
from tui.screens.partition_picker import PartitionPickerScreen
from tui.screens.path_prompt import PathPrompt
from tui.screens.place_picker import TYPE_PATH
from tui.screens.result import ResultScreen
from tui.screens.snapshot_picker import SnapshotPickerScreen

COPY_CANCEL = ("Stop copying?", "What was copied so far stays, complete; the file being copied is removed.")


def destinations(session, repo_place, repo_path: str, saved) -> list:
    """Writable drives other than the repository's and the saved computer's own disk (by its
    serial number, or the path it was read from)."""
    from recovery.probe.mounts import disk_of_path

    serial, path = saved.source.get("serial"), saved.source.get("path")
    not_these = {d.path for d in session.disks if (serial and d.serial == serial) or d.path == path}
    not_these.add(repo_place.disk or disk_of_path(repo_path))
    return [p for p in session.places
            if p.writable and p.partition is not None and p.disk not in not_these]


async def pick_destination(app, repo_place, repo_path: str, saved, need: int) -> Path | None:
    s = app.session
    while True:
        offered = await app.blocking(destinations, s, repo_place, repo_path, saved)
        choice = await app.push_screen_wait(DestinationPickerScreen(offered, need, step="5/6"))
        if choice is None:
            return None
        if choice == TYPE_PATH:
            path = await app.push_screen_wait(PathPrompt("Type a folder", "The files are copied into a new "
                                                                          "folder inside it."))
            if not path:
                continue
            if not Path(path).is_dir():
                await app.show_message("Not a folder", f"{path} is not a folder.")
                continue
            return Path(path)
        try:
            where = Path(await app.blocking(s.mounts.path_of, choice, True))
            # The drive's root: a place names the folder a repository has (or would have) there.
            return where.parents[len(Path(choice.subpath).parts) - 1] if choice.subpath else where
        except LifeboatError as exc:
            await app.show_error(exc, "use that drive")


def result_lines(result: files.CopyResult, folder: Path) -> tuple[list[str], list[str]]:
    lines = [f"{result.files} file{'' if result.files == 1 else 's'} ({humanize.size(result.bytes)}) "
             f"copied into {folder}."]
    listed = []
    if result.renamed:
        lines.append(f"{len(result.renamed)} name(s) the drive cannot hold were changed (listed below).")
        listed += [f"Renamed: {a} → {Path(b).name}" for a, b in result.renamed]
    if result.stopped:
        lines.append(f"The copy stopped: the backup's drive could not be read any more ({result.stopped}). "
                     f"Was it removed? What was copied is complete; the file being copied was removed "
                     f"and the rest was not copied.")
    elif result.unreadable:
        lines.append(f"{len(result.unreadable)} file(s) could not be read from the backup and were not "
                     f"copied (listed below); everything else was.")
    listed += [f"Could not read: {a} ({why})" for a, why in result.unreadable]
    listed += [f"Skipped: {a} ({why})" for a, why in result.skipped]
    return lines, listed


async def get_files(app) -> None:
    await app.ready()
    opened = await repo_with_snapshots(app, "1/6", images=True)
    if opened is None:
        return
    place, repo, snaps = opened
    view = disk = None
    if repo is None:                       # an image another tool made: its one disk, no snapshots to pick
        try:
            disk = await app.blocking(lambda: open_image(str(app.session.mounts.path_of(place))))
        except LifeboatError as exc:
            await app.show_error(exc, "open the image")
            return
        snaps = []
    try:
        names = sorted({x.name for x in snaps}) or [disk.name]
        step, name, snap, part, picked = (0 if len(names) > 1 else 1), names[0], None, None, None
        if repo is None:
            step, snap = 2, disk
        letters: dict[int, str] = {}
        while True:
            if step == 0:
                name = await app.push_screen_wait(NamePickerScreen(snaps, step="2/6"))
                if name is None:
                    return
                step = 1
            elif step == 1:
                snap = await app.push_screen_wait(SnapshotPickerScreen(
                    f"Backups of “{name}”", "Newest first. Enter opens the one to take files from.",
                    [x for x in snaps if x.name == name], step="2/6"))
                if snap is None:
                    if len(names) > 1:
                        step = 0
                        continue
                    return
                try:
                    disk = await app.blocking(open_snapshot, repo, snap.id)
                except LifeboatError as exc:
                    await app.show_error(exc, "open the snapshot")
                    continue
                step = 2
            elif step == 2:
                if view is not None:
                    await app.blocking(view.close)
                    view = None
                letters = await app.blocking(disk.drive_letters)
                part = await app.push_screen_wait(PartitionPickerScreen(
                    f"Inside “{name}” from {humanize.when(snap.created)}", disk.partitions, step="3/6",
                    letters=letters))
                if part is None and repo is None:
                    return
                step = 1 if part is None else 3
            elif step == 3:
                if view is None:
                    view = temporary_view(disk, only={part.number})
                    try:
                        await app.blocking(view.start)
                    except LifeboatError as exc:
                        view = None
                        await app.show_error(exc, "open the partition")
                        step = 2
                        continue
                    if part.number not in view.mounted:
                        await app.show_message("Cannot look inside", "; ".join(view.notes) or
                                               "The filesystem could not be mounted.")
                        step = 2
                        continue
                picked = await app.push_screen_wait(FileBrowserScreen(
                    f"{describe(part, letters.get(part.number))} · “{name}” {humanize.when(snap.created)}", view.mounted[part.number],
                    step="4/6"))
                step = 2 if picked is None else 4
            else:
                paths, total = picked
                base = await pick_destination(app, place, str(repo.path) if repo else disk.source["path"], disk, total)
                if base is None:
                    step = 3
                    continue
                folder = base / f"Lifeboat {name} {humanize.when(snap.created).replace(':', '.')}"
                try:
                    folder.mkdir(exist_ok=True)
                except OSError as exc:
                    await app.show_message("Cannot copy there", f"{folder} cannot be made: {exc.strerror}.")
                    continue
                root = view.mounted[part.number]
                outcome = await app.push_screen_wait(JobScreen(
                    f"Copying {humanize.size(total)} from “{name}” to {folder}",
                    lambda on_event, cancel: files.copy_out(paths, root, folder, on_event=on_event,
                                                            cancel=cancel, total=total,
                                                            lost=lambda: view.repository_lost),
                    cancel_title=COPY_CANCEL[0], cancel_text=COPY_CANCEL[1], phases={"copy": "Copying files"},
                    intro="Nothing is written to the backup; only the chosen drive is written."))
                if outcome.cancelled:
                    await app.show_message("Copy stopped", f"What was copied so far is in {folder}, complete; "
                                                           "the file being copied was removed.")
                elif outcome.error is not None:
                    await app.show_error(outcome.error, "copy the files")
                else:
                    lines, listed = result_lines(outcome.result, folder)
                    choice = await app.push_screen_wait(ResultScreen(
                        "Files copied" if not outcome.result.partial else "Files copied, in part", lines,
                        [("done", "Done"), ("more", "Copy more from this partition")],
                        ok=not outcome.result.partial, damaged=listed))
                    if choice == "more":
                        step = 3
                        continue
                return
    finally:
        if view is not None:
            view.close()
        if disk is not None:
            disk.close()             # closes the repository with the snapshot
        elif repo is not None:
            repo.close()
