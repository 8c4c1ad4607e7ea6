"""The Lifeboat app: ``create_app`` (used by the CLI and the tests) and ``main``."""

from __future__ import annotations

import asyncio
import os
import sys

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerCancelled, WorkerFailed, get_current_worker

from recovery.errors import LifeboatError
from tui import errlog
from tui.session import Session, live_system


CONSOLE_TERMS = {"linux", "vt100", "vt102", "vt220", "ansi", "dumb"}


class LifeboatApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "Lifeboat"
    SUB_TITLE = "back up and restore whole disks"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help", show=False),
        Binding("ctrl+q", "request_quit", "Quit", show=False, priority=True),
    ]

    scan_generation: reactive[int] = reactive(0)

    def __init__(self, session: Session, *, live: bool | None = None, theme: str | None = None):
        super().__init__()
        if theme:
            self.theme = theme
        self.session = session
        self.live = live_system() if live is None else live
        self.scanning = False
        self.scan_error: str | None = None
        self._scan_worker: Worker | None = None
        self._stale_checked = False
        # Set by main(): SIGTERM and SIGHUP (the terminal gone) end the app as quitting does,
        # so a partition being browsed is unmounted on the way out.
        self.exit_on_signals = False
        # A job's threads left waiting where the kernel holds them (server_held): the process
        # then ends at once with the app, as they could never be joined.
        self.threads_held = False

    # -- start-up ---------------------------------------------------------------------------
    def on_mount(self) -> None:
        from recovery.storage import mounted, stall
        from tui.screens.home import HomeScreen

        mounted.ask_host_key = self.ask_host_key
        mounted.ask_password = self.ask_password
        stall.on_give_up = self.server_held
        self.push_screen(HomeScreen())
        if self.exit_on_signals:
            import asyncio
            import signal

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, self.stop_for_signal, sig)
        self.action_rescan()

    def server_held(self, message: str) -> None:
        """Called by the stall watch (on its thread) when the kernel holds the calls on a
        server that stopped answering for good (recovery/storage/stall.py): the running job
        ends with the line, as a failed one does, and the app goes on; its threads stay where
        the kernel holds them, and the process ends at once with the app (run_async). The
        places were let go of already (mounted.let_go_all)."""
        from recovery.storage.base import UnreachableError

        self.threads_held = True
        try:
            self.call_from_thread(self._end_held_jobs, UnreachableError(message))
        except RuntimeError:
            pass                         # the app is no longer running

    def _end_held_jobs(self, error: BaseException) -> None:
        from tui.screens.job import JobScreen

        for screen in list(self.screen_stack):
            if isinstance(screen, JobScreen) and screen.running:
                screen.give_up(error)

    async def run_async(self, *args, **kwargs):
        result = await super().run_async(*args, **kwargs)
        if self.threads_held:
            # The terminal is given back by now. Ending normally would wait for ever on the
            # threads the kernel holds (the executors join theirs at exit).
            sys.stdout.flush()
            os._exit(result if isinstance(result, int) else 0)
        return result

    def ask_host_key(self, server: str, fingerprints: list[str]) -> bool:
        """The engine asks (from a worker thread) whether to trust an SSH server it does not
        know yet: a yes/no question showing the key's fingerprints; waits for the answer."""
        from concurrent.futures import Future

        from tui.screens.question import QuestionDialog

        answer: Future = Future()
        dialog = QuestionDialog(
            "A new SSH server",
            f"{server} is not known yet. Its host key is:\n" + "\n".join(f"  {p}" for p in fingerprints)
            + "\nCheck that with the server's administrator. Trust this server from now on?",
            yes="Trust it", no="No")
        self.call_from_thread(self.push_screen, dialog, answer.set_result)
        return bool(answer.result())

    def ask_password(self, prompt: str, who: str = "", refused: int = 0) -> str | None:
        """The engine asks (from a worker thread) for a login's password, again after the
        server refused one: a masked field; None when the person cancels."""
        from concurrent.futures import Future

        from recovery.storage import mounted
        from tui.screens.password_prompt import PasswordPrompt

        answer: Future = Future()
        dialog = PasswordPrompt(who or prompt.rstrip(": "), refused, mounted.PASSWORD_TRIES)
        self.call_from_thread(self.push_screen, dialog, answer.set_result)
        return answer.result()

    def action_rescan(self) -> None:
        self.scanning = True
        self.scan_generation += 1
        self._scan_worker = self._scan()

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan(self) -> None:
        try:
            if not self._stale_checked:
                from recovery.browse.view import clean_stale

                # A browse view left by a Lifeboat that was killed (its FUSE server gone, the
                # filesystem beneath it still holding a loop device) goes before anything else.
                self._stale_checked = True
                clean_stale()
            self.session.refresh()
            error = None
            for problem in self.session.problems:
                errlog.write(f"looking for disks: {problem}")
        except Exception as exc:  # shown in the status line and logged, never a traceback
            path = errlog.record(exc, "looking for disks and backups")
            error = getattr(exc, "message", None) or str(exc)
            if path:
                error += f" (details in {path})"
        self.call_from_thread(self._scanned, error, get_current_worker())

    def _scanned(self, error: str | None, worker: Worker) -> None:
        if worker is not self._scan_worker:
            return          # a scan replaced by a newer one: its thread ran on, its result is old
        self.scanning = False
        self.scan_error = error
        self.scan_generation += 1

    async def ready(self) -> None:
        """Wait until the newest scan of disks and repositories has finished.

        The wait is shielded: when the flow waiting here is replaced by another (the flow group
        is exclusive), Textual's Worker.wait would otherwise cancel the scan itself and raise
        WorkerCancelled in the flow, which then showed as an "unexpected" error. A scan
        replaced by a newer one (F5, another flow's rescan) is followed to the newest."""
        while self._scan_worker is not None:
            worker = self._scan_worker
            try:
                await asyncio.shield(worker.wait())
            except (WorkerFailed, WorkerCancelled):
                pass
            if worker is self._scan_worker:
                return

    def status_text(self) -> str:
        if self.scanning:
            return "Looking for disks and backups…"
        if self.scan_error:
            return f"Could not look at the disks: {self.scan_error}"
        s = self.session
        repos = s.repositories()
        snaps = sum(p.snapshots or 0 for p in repos)
        disks = f"{len(s.disks)} disk" + ("" if len(s.disks) == 1 else "s")
        rep = f"{len(repos)} backup repositor" + ("y" if len(repos) == 1 else "ies")
        text = f"{disks} · {rep} ({snaps} snapshot{'' if snaps == 1 else 's'})"
        if s.problems:
            text += f" · {len(s.problems)} unreadable: {s.problems[0]}"
        if self.live:
            text += " · live system"
        return text

    # -- running engine calls off the UI thread -----------------------------------------------
    async def blocking(self, fn, *args, **kwargs):
        """Run a short engine call in a thread worker and return its result (re-raising its error)."""
        worker = self.run_worker(lambda: fn(*args, **kwargs), thread=True, exit_on_error=False, group="call")
        try:
            return await worker.wait()
        except WorkerFailed as failed:
            raise failed.error from None
        except WorkerCancelled:
            # Textual's way of saying the flow awaiting here was cancelled: go on cancelling it,
            # never an error dialog.
            raise asyncio.CancelledError from None

    # -- errors --------------------------------------------------------------------------------
    async def show_error(self, exc: BaseException, context: str) -> None:
        """A dialog with the engine's plain message; the traceback goes to the log."""
        from tui.screens.message import MessageDialog
        from tui.widgets.disk_map import display_path

        path = errlog.record(exc, context)
        if isinstance(exc, LifeboatError):
            message = exc.message
        else:
            message = f"Something unexpected went wrong: {type(exc).__name__}: {exc}"
        await self.push_screen_wait(
            MessageDialog(f"Could not {context}", message, log_path=display_path(str(path)) if path else None)
        )

    async def show_message(self, title: str, message: str) -> None:
        from tui.screens.message import MessageDialog

        await self.push_screen_wait(MessageDialog(title, message, error=False))

    # -- the flows -------------------------------------------------------------------------------
    def start(self, what: str) -> None:
        from tui import flows
        from tui.get_files import get_files

        if what == "quit":
            self.action_request_quit()
            return
        runner = {
            "backup": flows.backup,
            "restore": flows.restore,
            "check": flows.check,
            "manage": flows.manage,
            "files": get_files,
            "disks": flows.disks,
            "network": flows.network,
            "shell": flows.system_action,
            "reboot": flows.system_action,
            "poweroff": flows.system_action,
        }.get(what)
        if runner is None:
            return
        args = (self, what) if runner is flows.system_action else (self,)
        self.run_worker(self._guarded(runner, *args), exclusive=True, group="flow", exit_on_error=False)

    async def _guarded(self, runner, *args) -> None:
        try:
            await runner(*args)
        except Exception as exc:  # any slip in a flow becomes a dialog, never a traceback
            await self.show_error(exc, "finish that")

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_request_quit(self) -> None:
        from tui.screens.job import JobScreen

        if any(isinstance(s, JobScreen) and s.running for s in self.screen_stack):
            self.notify("A job is running: cancel it first.", severity="warning")
            return
        self.exit(0)

    def stop_for_signal(self, signum: int) -> None:
        """SIGTERM or SIGHUP: a running job is cancelled, as its Cancel button does (a copy
        removes the file it was writing, a restore leaves its mark), then the app ends; the
        flows' own clean-up (unmounting a browsed partition) runs on the way out, and the
        process ends once the job has stopped at its next safe point."""
        from tui.screens.job import JobScreen

        for screen in self.screen_stack:
            if isinstance(screen, JobScreen) and screen.running:
                screen.token.cancel()
        self.exit(128 + signum)

    def on_unmount(self) -> None:
        from recovery.storage import mounted, stall

        if mounted.ask_host_key == self.ask_host_key:
            mounted.ask_host_key = None
        if mounted.ask_password == self.ask_password:
            mounted.ask_password = None
        if stall.on_give_up == self.server_held:
            stall.on_give_up = None
        self.session.close()


def create_app(repo: str | None = None, disks: list[str] | None = None, *,
               system_disks: bool | None = None, scan_partitions: bool = True,
               live: bool | None = None, demo: bool | None = None,
               zstd_level: int | None = None, theme: str | None = None) -> LifeboatApp:
    """The app for ``repo`` (a folder, may be None) and extra disks (image files or devices).

    ``system_disks``: also list the machine's own disks (default: yes, unless
    LIFEBOAT_ONLY_GIVEN_DISKS=1, which the demo and tests set). ``zstd_level``: compression of
    new backups (default 3, or $LIFEBOAT_ZSTD_LEVEL).
    """
    if system_disks is None:
        system_disks = os.environ.get("LIFEBOAT_ONLY_GIVEN_DISKS") != "1"
    if demo is None:
        demo = os.environ.get("LIFEBOAT_DEMO") == "1"
    session = Session(repo=repo, disk_paths=[os.path.abspath(d) for d in disks or []],
                      system_disks=system_disks, scan_partitions=scan_partitions, demo=demo)
    if zstd_level is not None:
        session.zstd_level = zstd_level
    return LifeboatApp(session, live=live, theme=theme)


def main(repo: str | None = None, disks: list[str] | None = None) -> int:
    """Entry point for ``lifeboat tui``: runs the app, returns the exit status."""
    # The Linux console and serial terminals have 8 or 16 colours: use the terminal's own.
    theme = "ansi-dark" if os.environ.get("TERM", "") in CONSOLE_TERMS else None
    app = create_app(repo, disks, theme=theme)
    app.exit_on_signals = True
    result = app.run()
    return result if isinstance(result, int) else 0
