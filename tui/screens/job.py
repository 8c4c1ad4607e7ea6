"""A long job (backup, restore, check) running in a thread worker, with progress and Cancel.

The job is a callable ``job(on_event, cancel_token) -> result`` that calls the engine (a
``recovery.jobs`` job's ``run(plan, on_event, cancel)``). Progress
events arrive on the worker thread and are posted as messages that coalesce (only the newest
waits in the queue), at most ten a second. The screen dismisses with a ``JobOutcome``; the flow
that pushed it decides what to show next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, ProgressBar, Static

from recovery.errors import Cancelled
from recovery.events import CancelToken, Progress, Warning_
from tui import humanize

PHASES = {
    "proof": "Checking every piece of the backup before writing",
    "backup": "Copying the used blocks",
    "verify": "Reading and checking every piece",
    "restore": "Writing to the target disk",
    "check": "Reading back what was written",
    "table": "Writing the partition table",
    "resize": "Growing the filesystems",
}


@dataclass
class JobOutcome:
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


class JobProgress(Message):
    def __init__(self, event: Progress):
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgress)


class JobWarning(Message):
    def __init__(self, text: str):
        super().__init__()
        self.text = text


def describe(event: Progress, phases: dict[str, str] | None = None) -> tuple[str, str]:
    """(headline, detail line) for a progress event."""
    head = (phases or PHASES).get(event.phase, event.phase.capitalize())
    if event.partition is not None:
        head += f" · partition {event.partition}"
    if event.message:
        head += f" · {event.message}"
    bits = [humanize.size(event.done) + (f" of {humanize.size(event.total)}" if event.total else "")]
    if event.rate:
        bits.append(humanize.rate(event.rate))
    if event.eta is not None:
        bits.append(f"{humanize.duration(event.eta)} left")
    detail = " · ".join(bits)
    if event.phase == "backup" and event.done:
        saved = max(0.0, 1 - event.stored_new / event.done)
        detail += (f"\nNewly stored: {humanize.size(event.stored_new)} "
                   f"({saved:.0%} saved by compression and deduplication)")
    return head, detail


class JobScreen(Screen[JobOutcome]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, job: Callable[[Callable, CancelToken], Any], *,
                 cancel_title: str, cancel_text: str, intro: str = "", phases: dict[str, str] | None = None):
        """``phases`` names this job's phases where they differ from PHASES."""
        super().__init__()
        self.title_text, self.job, self.intro = title, job, intro
        self.phases = {**PHASES, **(phases or {})}
        self.cancel_title, self.cancel_text = cancel_title, cancel_text
        self.token = CancelToken()
        self.running = False
        self.warnings: list[str] = []
        self._last_post = 0.0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text, classes="screen-title", markup=False)
        with Vertical(id="job"):
            if self.intro:
                yield Static(self.intro, classes="hint", markup=False)
            yield Static("Starting…", id="phase", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="bar")
            yield Static("", id="detail", markup=False)
            yield Static("", id="warnings", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", compact=True, id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        self.running = True
        self.query_one("#cancel", Button).focus()
        self._run()

    # -- worker thread -------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="job", exit_on_error=False)
    def _run(self) -> None:
        try:
            result = self.job(self._on_event, self.token)
        except BaseException as exc:  # handed to the flow, which shows a dialog
            outcome = JobOutcome(error=exc, cancelled=isinstance(exc, Cancelled))
        else:
            outcome = JobOutcome(result=result)
        self.app.call_from_thread(self._finish, outcome)

    def _on_event(self, event) -> None:
        """Called by the engine on the worker thread."""
        if isinstance(event, Warning_):
            self.post_message(JobWarning(event.message))
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last_post >= 0.1 or (event.total and event.done >= event.total):
                self._last_post = now
                self.post_message(JobProgress(event))

    # -- UI thread ----------------------------------------------------------------------------
    def on_job_progress(self, message: JobProgress) -> None:
        event = message.event
        head, detail = describe(event, self.phases)
        if self.token.cancelled:
            head = "Stopping… " + head
        self.query_one("#phase", Static).update(head)
        self.query_one("#detail", Static).update(detail)
        self.query_one("#bar", ProgressBar).update(total=event.total or None, progress=event.done)

    def on_job_warning(self, message: JobWarning) -> None:
        self.warnings.append(message.text)
        self.query_one("#warnings", Static).update("\n".join(f"Warning: {w}" for w in self.warnings[-3:]))

    def give_up(self, error: BaseException) -> None:
        """The job's threads are held where they wait, for good (a server the kernel waits on):
        the screen ends as for a failed job; should the worker ever return, it is ignored."""
        self._finish(JobOutcome(error=error))

    def _finish(self, outcome: JobOutcome) -> None:
        if not self.running:
            return                       # given up already
        self.running = False
        while self.app.screen is not self and len(self.app.screen_stack) > 1:
            self.app.pop_screen()        # a Cancel question still open: the job ended anyway
        self.dismiss(outcome)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_cancel()

    def action_cancel(self) -> None:
        from tui.screens.question import QuestionDialog

        if not self.running or self.token.cancelled:
            return

        def answered(yes: bool | None) -> None:
            if yes and self.running:
                self.token.cancel()
                self.query_one("#phase", Static).update("Stopping at the next safe point…")
                self.query_one("#cancel", Button).disabled = True

        self.app.push_screen(
            QuestionDialog(self.cancel_title, self.cancel_text, yes="Stop", no="Keep going", danger=True),
            answered,
        )
