"""The wizards: each is a coroutine run in a Textual worker, walking a person through screens.

A screen dismissed with None (Esc) goes back one step. Backup, restore and check go through
the engine's job layer (``recovery.jobs``): the job's ``plan()`` runs in ``app.blocking``, its
``run(plan, on_event, cancel)`` in a ``JobScreen`` with progress and Cancel. Engine errors
become dialogs. A job's result (or error, or the word that it was stopped) is shown before the
disks are looked at again.
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
from tui.screens.passphrase_prompt import PassphrasePrompt
from tui.screens.path_prompt import PathPrompt
from tui.screens.network_location import NetworkLocationScreen
from tui.screens.new_repository import NewRepositoryDialog, RecoveryCodeDialog
from tui.screens.place_picker import NETWORK, TYPE_PATH, PlacePickerScreen
from tui.screens.plan import PlanScreen
from tui.screens.question import QuestionDialog
from tui.screens.result import ResultScreen
from tui.screens.snapshot_picker import ALL, SnapshotPickerScreen
from tui.session import default_name
from tui.widgets.disk_map import display_path, incomplete_words

BACKUP_CANCEL = (
    "Stop the backup?",
    "No snapshot is made. The repository and every earlier backup in it stay intact; running the same "
    "backup again reuses what was already stored.",
)
RESTORE_CANCEL = (
    "Stop the restore?",
    "The target disk then stays marked as an incomplete restore and will not start. Running the same "
    "restore again resumes it, keeping what is already written.",
)
CHECK_CANCEL = ("Stop the check?", "Nothing is changed by a check; it can be run again at any time.")


# -- shared steps ---------------------------------------------------------------------------------
async def pick_place(app, *, for_backup: bool, source=None, step: str = "", images: bool = False) -> Place | None:
    """A repository (or, for a backup, a place for a new one; with `images`, also a foreign
    image found on the disks); None when the person goes back."""
    s = app.session
    while True:
        if for_backup:
            places = [p for p in s.places if p.writable and (source is None or p.disk != source.path)]
            default = default_destination(places, source)
            title, hint = "Where should the backup go?", (
                "Found on the disks. The one with the most room is suggested; t types another folder, n a network location.")
        else:
            places, default = s.repositories() + (s.images() if images else []), None
            title, hint = "Which backups?", ("Repositories and images of other tools found on the disks of this "
                                             "computer." if images else "Repositories found on the disks of this "
                                             "computer.")
        from tui import netlocations

        remembered = await app.blocking(netlocations.load)
        choice = await app.push_screen_wait(PlacePickerScreen(title, hint, places, default, step=step,
                                                              remembered=remembered))
        if choice is None:
            return None
        if choice == NETWORK or isinstance(choice, netlocations.Remembered):
            place = await app.push_screen_wait(NetworkLocationScreen(
                for_backup, choice if choice != NETWORK else None, step=step))
            if place is None:
                continue
            return place
        if choice != TYPE_PATH:
            return choice
        path = await app.push_screen_wait(PathPrompt(
            "Type a folder", "A folder holding a Lifeboat repository" +
            (", or an empty folder for a new one." if for_backup else
             ", or an image another tool made (a file or folder)." if images else ".")))
        if not path:
            continue
        try:
            place = await app.blocking(s.add_directory, path)
        except LifeboatError as exc:
            await app.show_error(exc, "use that folder")
            continue
        if for_backup and place.is_image:
            await app.show_message("Not a place for backups", f"{path} is {place.image}; choose a Lifeboat "
                                   "repository or an empty folder.")
            continue
        if not for_backup and not place.is_repository and not (images and place.is_image):
            await app.show_message("No backups there", f"{path} holds no Lifeboat repository.")
            continue
        return place


async def open_repo(app, place: Place, writable: bool = False, encryption=None):
    """Open the repository at `place` (or make it, with `encryption` when given); an encrypted
    one asks for its passphrase (masked) until it is right or the person goes back. The
    passphrase lives only in this coroutine."""
    from recovery.errors import WrongPassphraseError
    from recovery.repo.keys import PassphraseNeeded

    passphrase, wrong = None, False
    while True:
        try:
            return await app.blocking(app.session.open_repository, place, writable, passphrase, encryption)
        except PassphraseNeeded:
            pass
        except WrongPassphraseError:
            wrong = True
        except LifeboatError as exc:
            await app.show_error(exc, "open the repository")
            return None
        passphrase = await app.push_screen_wait(PassphrasePrompt(place.describe(), wrong))
        if passphrase is None:
            return None


async def repo_with_snapshots(app, step: str, images: bool = False):
    """Pick a repository and open it; (place, repo, snapshots), or None when the person went back,
    it failed to open (the dialog was shown) or it holds nothing yet (said so). With `images`, a
    foreign image may be picked instead: (place, None, None)."""
    place = await pick_place(app, for_backup=False, step=step, images=images)
    if place is None:
        return None
    if place.is_image:
        return place, None, None
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
    from recovery.jobs import BackupJob
    from recovery.repo.repository import NewEncryption

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
            encryption = None
            if not place.is_repository:
                secret = await app.push_screen_wait(NewRepositoryDialog(place.describe()))
                if secret is None:
                    continue
                encryption = NewEncryption(secret) if secret else None
            repo = await open_repo(app, place, writable=True, encryption=encryption)
            encryption = None                       # the passphrase is not kept here any longer
            if repo is None:
                continue
            if repo.recovery_code:
                await app.push_screen_wait(RecoveryCodeDialog(repo.recovery_code))
                repo.recovery_code = None
            try:
                job = BackupJob(disk.path, repo, name, verify=True, zstd_level=s.zstd_level)
                plan = await app.blocking(job.plan)
                outcome = await app.push_screen_wait(JobScreen(
                    f"Backing up {display_path(disk.path)} as “{name}”",
                    lambda on_event, cancel: job.run(plan, on_event, cancel),
                    cancel_title=BACKUP_CANCEL[0], cancel_text=BACKUP_CANCEL[1],
                    intro=f"To {place.describe() if place.partition else display_path(str(repo.path))}"))
                if outcome.cancelled:
                    await app.show_message("Backup stopped", "The backup was stopped: no snapshot was made. "
                                           "The repository and its earlier backups are intact; running the "
                                           "same backup again reuses what was already stored.")
                elif outcome.error is not None:
                    await app.show_error(outcome.error, "back up the disk")
                else:
                    r = outcome.result
                    resumed = getattr(r, "bytes_resumed", 0) or 0
                    saved = (r.bytes_used - r.bytes_stored_new - resumed) / r.bytes_used if r.bytes_used else 0
                    lines = [
                        f"Snapshot {r.snapshot[:8]} of “{r.name}” is saved and was read back to check it.",
                        f"Data in use: {humanize.size(r.bytes_used)}; newly stored: "
                        f"{humanize.size(r.bytes_stored_new)} ({max(saved, 0):.0%} saved by compression and dedup)."
                        + (f" Reused from the interrupted backup: {humanize.size(resumed)}." if resumed else ""),
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
def without_cli_hint(message: str) -> str:
    """An engine message without its advice for the command line (`lifeboat ...`): the TUI
    offers that choice as a button instead. Unchanged when there is none."""
    cut = message.find("`lifeboat ")
    if cut <= 0:
        return message
    return message[:cut].rstrip(" .;,") + "."


def damage_lines(damaged: dict) -> list[str]:
    """What a salvaged restore could not bring back, one line each (RestoreResult.damaged)."""
    out = []
    for number, hit in sorted(damaged.items(), key=lambda kv: int(kv[0])):
        where = "Whole-disk filesystem" if int(number) == 0 else f"Partition {number}"
        out += [f"{where}, filesystem metadata: {m}" for m in hit.get("metadata") or []]
        out += [f"{where}: {f}" for f in hit.get("files") or []]
        unknown = hit.get("unknown") or []
        if unknown:
            out.append(f"{where}: {len(unknown)} damaged place(s) Lifeboat could not tie to a file")
    return out or ["No file was hit: the damaged pieces held no file Lifeboat could name."]


async def ask_salvage(app, damage: str) -> bool:
    """The snapshot is damaged (``damage`` says how): restore what is readable (True), or go
    back (False)."""
    damage = without_cli_hint(damage)
    return await app.push_screen_wait(QuestionDialog(
        "This backup is damaged",
        f"{damage[:1].upper()}{damage[1:]}\n\nLifeboat can restore everything that is readable: the damaged "
        "pieces are written as zeros, and afterwards it lists the files they hit.",
        yes="Restore what is readable (salvage)", no="Back", danger=True))


def check_found(snap, damaged: list[str]) -> str:
    return (f"the last check of snapshot {snap.id[:8]} (“{snap.name}”, {humanize.when(snap.created)}) found: "
            + "; ".join(damaged) + ".")


async def offer_resume(app, place, repo, snaps):
    """(snapshot, disk) of an interrupted restore from this repository that the person wants to
    resume, or None."""
    s = app.session
    by_id = {x.id: x for x in snaps}
    for disk in s.disks:
        snap = by_id.get(disk.incomplete_snapshot or "")
        if snap is None or await app.blocking(s.restore_refusal, disk, place, str(repo.path)):
            continue
        if await app.push_screen_wait(QuestionDialog(
                "An interrupted restore",
                f"{display_path(disk.path)} holds an incomplete restore of “{snap.name}” from "
                f"{humanize.when(snap.created)}. Resume it?\n\nWhat is already on the disk and intact is kept.",
                yes="Resume", no="No")):
            return snap, disk
    return None


async def restore(app) -> None:
    from recovery.errors import DamageError
    from recovery.jobs import RestoreJob

    await app.ready()
    s = app.session
    opened = await repo_with_snapshots(app, "1/5", images=True)
    if opened is None:
        return
    place, repo, snaps = opened
    if place.is_image:
        await restore_image(app, place)
        return
    try:
        names = sorted({x.name for x in snaps})
        step, name, snap, target, mode, salvage = (0 if len(names) > 1 else 1), names[0], None, None, "grow", False
        job = plan = None
        resume = await offer_resume(app, place, repo, snaps)
        if resume is not None:
            snap, target = resume
            name, step = snap.name, 3
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
                salvage = False
                if snap is None:
                    if len(names) > 1:
                        step = 0
                        continue
                    return
                damaged = getattr(snap, "damaged", None)
                if damaged:
                    if not await ask_salvage(app, check_found(snap, damaged)):
                        continue
                    salvage = True
                step = 2
            elif step == 2:
                refusals = await app.blocking(
                    lambda: {d.path: why for d in s.disks if (why := s.restore_refusal(d, place, str(repo.path)))})
                target = await app.push_screen_wait(DiskPickerScreen(
                    "Restore onto which disk?",
                    f"The disk will be erased and will hold “{name}” as it was on {humanize.when(snap.created)}.",
                    s.disks, refusals, step="3/5", usage=s.usage))
                step = 1 if target is None else 3
            elif step == 3:
                job = RestoreJob(repo, snap.id, target.path, name=name, layout=mode, salvage=salvage)
                try:
                    plan = await app.blocking(job.plan)
                except DamageError as exc:     # a chunk list is unreadable: the snapshot is damaged
                    if salvage:
                        await app.show_error(exc, f"restore onto {display_path(target.path)}")
                        step = 1
                    elif await ask_salvage(app, exc.message):
                        salvage = True
                    else:
                        step = 1
                    continue
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
                outcome = await confirm_and_restore(app, job, plan, name, "5/5",
                                                    "Every piece of the backup is checked before anything is written.")
                if outcome is None:
                    step = 3
                    continue
                if isinstance(outcome.error, DamageError) and not outcome.cancelled and not salvage:
                    chosen = await ask_salvage(app, outcome.error.message)
                    await rescan(app)        # a disk may carry the restore's mark now
                    if chosen:
                        salvage, step = True, 3
                    else:
                        step = 1
                    continue
                await restore_finished(app, outcome, name, snap, plan)
                return
    finally:
        repo.close()


async def restore_image(app, place: Place) -> None:
    """Restore an image another tool made (place.image says what it is): the same disk choice,
    plan, confirmation and progress as a snapshot, from recovery.sources."""
    from recovery.jobs import RestoreJob
    from recovery.sources.open import open_source

    s = app.session
    try:
        source = await app.blocking(lambda: open_source(str(s.mounts.path_of(place))))
    except LifeboatError as exc:
        await app.show_error(exc, "open the image")
        return
    try:
        step, target, mode, job, plan = 2, None, "grow", None, None
        when = humanize.when(source.created)
        while True:
            if step == 2:
                refusals = await app.blocking(
                    lambda: {d.path: why for d in s.disks if (why := s.restore_refusal(d, place, source.on_disk()))})
                target = await app.push_screen_wait(DiskPickerScreen(
                    "Restore onto which disk?",
                    f"The disk will be erased and will hold the {source.kind} “{source.name}” of {when}.",
                    s.disks, refusals, step="2/4", usage=s.usage))
                if target is None:
                    return
                step = 3
            elif step == 3:
                job = RestoreJob(None, source.id, target.path, layout=mode, source=source)
                try:
                    plan = await app.blocking(job.plan)
                except LifeboatError as exc:
                    await app.show_error(exc, f"restore onto {display_path(target.path)}")
                    step = 2
                    continue
                choice = await app.push_screen_wait(PlanScreen(plan, None, step="3/4"))
                if choice.startswith("layout:"):
                    mode = choice.split(":", 1)[1]
                    continue
                step = 2 if choice == "back" else 4
            else:
                outcome = await confirm_and_restore(app, job, plan, source.name, "4/4",
                                                    "The whole image is read and checked before anything is written.")
                if outcome is None:
                    step = 3
                    continue
                await restore_finished(app, outcome, source.name, source, plan)
                return
    finally:
        source.close()      # here, not in a worker: a flow cancelled as the app closes must still end
                            # the image's export (it takes well under a second)


async def confirm_and_restore(app, job, plan, name: str, step: str, checked: str):
    """The typed confirmation, then the restore with its progress; the job's outcome, or None
    when the person went back instead of confirming."""
    if not await app.push_screen_wait(ConfirmScreen(plan.target, step=step, name=job.confirm_name(plan))):
        return None
    return await app.push_screen_wait(JobScreen(
        f"Restoring “{name}” onto {display_path(plan.target.path)}",
        lambda on_event, cancel: job.run(plan, on_event, cancel),
        cancel_title=RESTORE_CANCEL[0], cancel_text=RESTORE_CANCEL[1],
        intro=f"Do not switch the computer off. {checked}"))


async def restore_finished(app, outcome, name: str, snap, plan) -> None:
    """Say how the restore ended (stopped, failed, done, done in part), then look at the disks again."""
    from recovery.probe.restore_mark import read_mark

    where = display_path(plan.target.path)
    if outcome.cancelled or outcome.error is not None:
        if outcome.cancelled:
            mark = await app.blocking(read_mark, plan.target.path)
            if mark is not None:
                await app.show_message(
                    "Restore stopped",
                    f"{where} is marked as an {incomplete_words(mark.describe())} and will not start. "
                    "Running the same restore again resumes it: what is already written and intact is kept.")
            else:
                await app.show_message("Restore stopped",
                                       f"The restore was stopped before anything was written: {where} is unchanged.")
        else:
            await app.show_error(outcome.error, "finish the restore")
        await rescan(app)
        return
    r = outcome.result
    partial = bool(getattr(r, "partial", False))
    back = f"“{name}” from {humanize.when(snap.created)} is back on {where}"
    lines = [
        back + (", except what was damaged in the backup: those pieces were written as zeros." if partial else "."),
        f"Written: {humanize.size(r.bytes_written)} in {humanize.duration(r.seconds)}"
        + (f"; {humanize.size(r.bytes_skipped)} was already there from the interrupted restore and was kept"
           if getattr(r, "bytes_skipped", 0) else "")
        + ("; every piece was checked against its hash before it was written." if not getattr(snap, "kind", "")
           else "; the whole image was read and checked before it was written."),
        "Next: remove the Lifeboat stick and restart the computer." if app.live else
        "Next: start the computer from the restored disk.",
    ]
    damaged = None
    if partial:
        lines.append("The damage hit these files and filesystem parts: check them, or take them from "
                     "another backup.")
        damaged = damage_lines(getattr(r, "damaged", {}) or {})
    choices = [("done", "Done")] + ([("reboot", "Restart now")] if app.live else [])
    choice = await app.push_screen_wait(ResultScreen(
        "Restore finished, in part" if partial else "Restore finished", lines, choices, ok=not partial,
        warnings=r.warnings, damaged=damaged))
    if choice == "reboot":
        await system_action(app, "reboot")
        return
    await rescan(app)


# -- check ----------------------------------------------------------------------------------------
async def run_check(app, repo, ids: list[str] | None) -> None:
    from recovery.jobs import VerifyJob

    job = VerifyJob(repo, ids)
    plan = await app.blocking(job.plan)
    outcome = await app.push_screen_wait(JobScreen(
        "Checking backups" if ids is None else f"Checking snapshot {ids[0][:8]}",
        lambda on_event, cancel: job.run(plan, on_event, cancel),
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


# -- manage backups: forget and prune ------------------------------------------------------------
MANAGE_CANCEL = ("Stop freeing space?", "Every backup kept stays whole. The backups already removed stay removed; "
                 "some space may stay used until the next time.")


async def manage(app) -> None:
    from recovery.repo.prune import References, forget, forget_preview, prune
    from tui.screens.manage import ManageScreen

    await app.ready()
    place = await pick_place(app, for_backup=False, step="1/3")
    if place is None:
        return
    repo = await open_repo(app, place, writable=True)
    if repo is None:
        return
    try:
        snaps = [x for x in await app.blocking(repo.snapshots) if x.name != "(damaged)"]
        if not snaps:
            await app.show_message("No backups", "This repository holds no snapshot yet.")
            return
        refs = References(repo)
        while True:
            screen = ManageScreen(snaps, lambda policy: forget_preview(repo, policy, refs), step="2/3")
            policy = await app.push_screen_wait(screen)
            if policy is None:
                return
            if await app.push_screen_wait(QuestionDialog(
                    "Remove old backups?",
                    f"{screen.removes} backup(s) will be removed for good ({policy.describe()}), and the space "
                    "only they use is freed. The backups kept are not changed.",
                    yes="Remove them", no="Back", danger=True)):
                break

        def run(on_event, cancel):
            forgot = forget(repo, policy, wait=60)
            return forgot, prune(repo, wait=600, on_event=on_event, cancel=cancel)

        outcome = await app.push_screen_wait(JobScreen(
            "Freeing space", run, cancel_title=MANAGE_CANCEL[0], cancel_text=MANAGE_CANCEL[1],
            intro=f"Removing {screen.removes} backup(s), then the data no backup uses any more.",
            phases={"repack": "Copying the pieces still used out of mostly unused packs"}))
        if outcome.cancelled:
            await app.show_message("Stopped", MANAGE_CANCEL[1])
        elif outcome.error is not None:
            await app.show_error(outcome.error, "free space")
        else:
            forgot, pruned = outcome.result
            await app.push_screen_wait(ResultScreen("Space freed", [
                f"Removed {len(forgot.removed)} backup(s); "
                f"{len(forgot.verdicts) - len(forgot.removed)} kept.",
                f"Freed {humanize.size(pruned.bytes_freed)} (read {humanize.size(pruned.bytes_read)}, "
                f"wrote {humanize.size(pruned.bytes_written)}) in {humanize.duration(pruned.seconds)}.",
            ], warnings=[f"kept {k}" for k in pruned.kept]))
    finally:
        repo.close()
    await rescan(app)


# -- the rest -------------------------------------------------------------------------------------
async def disks(app) -> None:
    await app.push_screen_wait(DisksScreen())


POWER_WORDS = {
    "reboot": ("Restart the computer?", "Remove the Lifeboat stick first if the computer should start "
               "from its own disk.", "Restart"),
    "poweroff": ("Switch the computer off?", "Everything Lifeboat mounted is unmounted first.", "Power off"),
}


async def network(app) -> None:
    from tui.screens.network import NetworkScreen

    await app.push_screen_wait(NetworkScreen())


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
