"""The wizards: each is a coroutine run in a Textual worker, walking a person through screens.

A screen dismissed with None (Esc) goes back one step. Engine calls that block run in thread
workers (``app.blocking`` for short ones, ``JobScreen`` for long ones with progress); engine
errors become dialogs.
"""

from __future__ import annotations

from recovery.discover import Place, default_destination
from recovery.errors import LifeboatError
from tui import humanize
from tui.screens.backup_summary import BackupSummaryScreen
from tui.screens.check_report import CheckReportScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.disk_picker import DiskPickerScreen
from tui.screens.disks import DisksScreen
from tui.screens.job import JobScreen
from tui.screens.name_picker import NamePickerScreen
from tui.screens.path_prompt import PathPrompt
from tui.screens.place_picker import TYPE_PATH, PlacePickerScreen
from tui.screens.plan import PlanScreen
from tui.screens.question import QuestionDialog
from tui.screens.result import ResultScreen
from tui.screens.snapshot_picker import ALL, SnapshotPickerScreen
from tui.session import default_name
from tui.widgets.disk_map import display_path

BACKUP_CANCEL = (
    "Stop the backup?",
    "Nothing of this backup will be kept. The repository and every earlier backup in it stay intact.",
)
RESTORE_CANCEL = (
    "Stop the restore?",
    "The target disk is then INCOMPLETE and will not start. You can run the restore again later.",
)
CHECK_CANCEL = ("Stop the check?", "Nothing is changed by a check; it can be run again at any time.")


# -- shared steps ---------------------------------------------------------------------------------
async def pick_place(app, *, for_backup: bool, source=None, step: str = "") -> Place | None:
    """A repository (or, for a backup, a place for a new one); None when the person goes back."""
    s = app.session
    while True:
        if for_backup:
            places = [p for p in s.places if p.writable and (source is None or p.disk != source.path)]
            default = default_destination(places, source)
            title, hint = "Where should the backup go?", (
                "Found on the disks. The one with the most room is suggested; t types another folder.")
        else:
            places, default = s.repositories(), None
            title, hint = "Which backups?", "Repositories found on the disks of this computer."
        choice = await app.push_screen_wait(PlacePickerScreen(title, hint, places, default, step=step))
        if choice is None:
            return None
        if choice != TYPE_PATH:
            return choice
        path = await app.push_screen_wait(PathPrompt(
            "Type a folder", "A folder holding a Lifeboat repository" +
            (", or an empty folder for a new one." if for_backup else ".")))
        if not path:
            continue
        try:
            place = await app.blocking(s.add_directory, path)
        except LifeboatError as exc:
            await app.show_error(exc, "use that folder")
            continue
        if not for_backup and not place.is_repository:
            await app.show_message("No backups there", f"{path} holds no Lifeboat repository.")
            continue
        return place


async def open_repo(app, place: Place, writable: bool = False):
    try:
        return await app.blocking(app.session.open_repository, place, writable)
    except LifeboatError as exc:
        await app.show_error(exc, "open the repository")
        return None


async def repo_with_snapshots(app, step: str):
    """Pick a repository and open it; (place, repo, snapshots), or None when the person went back,
    it failed to open (the dialog was shown) or it holds nothing yet (said so)."""
    place = await pick_place(app, for_backup=False, step=step)
    if place is None:
        return None
    repo = await open_repo(app, place)
    if repo is None:
        return None
    snaps = await app.blocking(repo.snapshots)
    if not snaps:
        repo.close()
        await app.show_message("No backups", "This repository holds no snapshot yet.")
        return None
    return place, repo, snaps


async def rescan(app) -> None:
    app.action_rescan()
    await app.ready()


# -- back up ------------------------------------------------------------------------------------
async def backup(app) -> None:
    from recovery.backup import backup as run_backup

    await app.ready()
    s = app.session
    if not s.disks:
        await app.show_message("No disks", "No disk was found to back up.")
        return
    step, disk, place = 0, None, None
    while True:
        if step == 0:
            disk = await app.push_screen_wait(DiskPickerScreen(
                "Which disk do you want to back up?",
                "Every partition of the disk is saved: Windows, Linux, boot areas.", s.disks, step="1/3",
                usage=s.usage))
            if disk is None:
                return
            step = 1
        elif step == 1:
            place = await pick_place(app, for_backup=True, source=disk, step="2/3")
            step = 0 if place is None else 2
        else:
            existing = await open_repo(app, place) if place.is_repository else None
            if place.is_repository and existing is None:
                step = 1
                continue
            try:
                name = await app.blocking(default_name, disk, existing)
            finally:
                if existing is not None:
                    existing.close()
            name = await app.push_screen_wait(BackupSummaryScreen(disk, place, name, step="3/3"))
            if name is None:
                step = 1
                continue
            repo = await open_repo(app, place, writable=True)
            if repo is None:
                continue
            try:
                outcome = await app.push_screen_wait(JobScreen(
                    f"Backing up {display_path(disk.path)} as “{name}”",
                    lambda on_event, cancel: run_backup(disk.path, repo, name, verify=True, on_event=on_event,
                                                        cancel=cancel, zstd_level=s.zstd_level),
                    cancel_title=BACKUP_CANCEL[0], cancel_text=BACKUP_CANCEL[1],
                    intro=f"To {place.describe() if place.partition else display_path(str(repo.path))}"))
                if outcome.cancelled:
                    await app.show_message("Backup stopped", "The backup was stopped and nothing of it was "
                                           "kept. The repository and its earlier backups are intact.")
                    await rescan(app)
                    return
                if outcome.error is not None:
                    await app.show_error(outcome.error, "back up the disk")
                    await rescan(app)
                    return
                r = outcome.result
                saved = 1 - r.bytes_stored_new / r.bytes_used if r.bytes_used else 0
                lines = [
                    f"Snapshot {r.snapshot[:8]} of “{r.name}” is saved and was read back to check it.",
                    f"Data in use: {humanize.size(r.bytes_used)}; newly stored: "
                    f"{humanize.size(r.bytes_stored_new)} ({saved:.0%} saved by compression and dedup).",
                    f"Time: {humanize.duration(r.seconds)}.",
                ]
                choice = await app.push_screen_wait(ResultScreen(
                    "Backup finished", lines, [("done", "Done"), ("verify", "Check it fully now")],
                    warnings=r.warnings))
                if choice == "verify":
                    await run_check(app, repo, [r.snapshot])
            finally:
                repo.close()
            await rescan(app)
            return


# -- restore ------------------------------------------------------------------------------------
async def restore(app) -> None:
    from recovery.restore import apply_restore, plan_restore

    await app.ready()
    s = app.session
    opened = await repo_with_snapshots(app, "1/5")
    if opened is None:
        return
    place, repo, snaps = opened
    try:
        names = sorted({x.name for x in snaps})
        step, name, snap, target, plan, mode = (0 if len(names) > 1 else 1), names[0], None, None, None, "grow"
        while True:
            if step == 0:
                name = await app.push_screen_wait(NamePickerScreen(snaps, step="2/5"))
                if name is None:
                    return
                step = 1
            elif step == 1:
                mine = [x for x in snaps if x.name == name]
                snap = await app.push_screen_wait(SnapshotPickerScreen(
                    f"Backups of “{name}”", "Newest first. Enter picks the one to restore.", mine, step="2/5"))
                if snap is None:
                    if len(names) > 1:
                        step = 0
                        continue
                    return
                step = 2
            elif step == 2:
                refusals = {d.path: why for d in s.disks if (why := s.restore_refusal(d, place))}
                target = await app.push_screen_wait(DiskPickerScreen(
                    "Restore onto which disk?",
                    f"The disk will be erased and will hold “{name}” as it was on {humanize.when(snap.created)}.",
                    s.disks, refusals, step="3/5", usage=s.usage))
                step = 1 if target is None else 3
            elif step == 3:
                try:
                    plan = await app.blocking(plan_restore, repo, snap.id, target.path, name=name, layout_mode=mode)
                except LifeboatError as exc:
                    await app.show_error(exc, f"restore onto {display_path(target.path)}")
                    step = 2
                    continue
                choice = await app.push_screen_wait(PlanScreen(plan, snap, step="4/5"))
                if choice.startswith("layout:"):
                    mode = choice.split(":", 1)[1]
                    continue
                step = 2 if choice == "back" else 4
            elif step == 4:
                ok = await app.push_screen_wait(ConfirmScreen(plan.target, step="5/5"))
                if not ok:
                    step = 3
                    continue
                outcome = await app.push_screen_wait(JobScreen(
                    f"Restoring “{name}” onto {display_path(plan.target.path)}",
                    lambda on_event, cancel: apply_restore(repo, plan, on_event=on_event, cancel=cancel),
                    cancel_title=RESTORE_CANCEL[0], cancel_text=RESTORE_CANCEL[1],
                    intro="Do not switch the computer off. Each piece is checked as it is read."))
                await rescan(app)
                if outcome.cancelled:
                    await app.show_message(
                        "Restore stopped",
                        f"{display_path(plan.target.path)} is now incomplete and will not start. "
                        "Run the restore again before using it.")
                    return
                if outcome.error is not None:
                    await app.show_error(outcome.error, "finish the restore")
                    return
                r = outcome.result
                lines = [
                    f"“{name}” from {humanize.when(snap.created)} is back on {display_path(r.target)}.",
                    f"Written: {humanize.size(r.bytes_written)} in {humanize.duration(r.seconds)}; "
                    "every piece was checked against its hash as it was read.",
                    "Next: remove the Lifeboat stick and restart the computer." if app.live else
                    "Next: start the computer from the restored disk.",
                ]
                choices = [("done", "Done")] + ([("reboot", "Restart now")] if app.live else [])
                choice = await app.push_screen_wait(ResultScreen("Restore finished", lines, choices,
                                                                 warnings=r.warnings))
                if choice == "reboot":
                    await system_action(app, "reboot")
                return
    finally:
        repo.close()


# -- check ----------------------------------------------------------------------------------------
async def run_check(app, repo, ids: list[str] | None) -> None:
    from recovery.verify import verify

    outcome = await app.push_screen_wait(JobScreen(
        "Checking backups" if ids is None else f"Checking snapshot {ids[0][:8]}",
        lambda on_event, cancel: verify(repo, ids, on_event=on_event, cancel=cancel),
        cancel_title=CHECK_CANCEL[0], cancel_text=CHECK_CANCEL[1],
        intro="Every piece is read back and its hash compared."))
    if outcome.cancelled:
        await app.show_message("Check stopped", "The check was stopped. Nothing was changed.")
        return
    if outcome.error is not None:
        await app.show_error(outcome.error, "check the backups")
        return
    snaps = await app.blocking(repo.snapshots)
    await app.push_screen_wait(CheckReportScreen(outcome.result, snaps))


async def check(app) -> None:
    await app.ready()
    opened = await repo_with_snapshots(app, "1/2")
    if opened is None:
        return
    _, repo, snaps = opened
    try:
        choice = await app.push_screen_wait(SnapshotPickerScreen(
            "Check which backups?", "Check all, or pick one snapshot.", snaps, offer_all=True, step="2/2"))
        if choice is None:
            return
        await run_check(app, repo, None if choice == ALL else [choice.id])
    finally:
        repo.close()


# -- the rest -------------------------------------------------------------------------------------
async def disks(app) -> None:
    await app.push_screen_wait(DisksScreen())


POWER_WORDS = {
    "reboot": ("Restart the computer?", "Remove the Lifeboat stick first if the computer should start "
               "from its own disk.", "Restart"),
    "poweroff": ("Switch the computer off?", "Everything Lifeboat mounted is unmounted first.", "Power off"),
}


async def system_action(app, what: str) -> None:
    """Shell, reboot, power off: the live system's actions (recovery.system refuses elsewhere)."""
    from recovery import system

    if what in POWER_WORDS:
        title, text, yes = POWER_WORDS[what]
        if not await app.push_screen_wait(QuestionDialog(title, text, yes=yes, no="Cancel")):
            return
        app.session.close()
    try:
        if what == "shell":
            with app.suspend():
                system.shell()
        else:
            getattr(system, what)()
    except LifeboatError as exc:
        await app.show_error(exc, {"shell": "open a shell", "reboot": "restart",
                                   "poweroff": "power off"}.get(what, what))
