"""The end of a flow: what was done, what to do next, and a choice of next steps."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static


class ResultScreen(Screen[str]):
    """Dismisses with the id of the chosen button ("done" on Esc). ``damaged``: lines shown in
    red in a scrollable box (what a salvage could not restore), after ``lines``."""

    BINDINGS = [Binding("escape", "choose('done')", "Done")]

    def __init__(self, title: str, lines: list[str], choices: list[tuple[str, str]] | None = None,
                 *, ok: bool = True, warnings: list[str] | None = None, damaged: list[str] | None = None):
        super().__init__()
        self.title_text, self.lines, self.ok = title, lines, ok
        self.damaged = damaged or []
        self.choices = choices or [("done", "Done")]
        self.warnings = warnings or []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text, classes="screen-title " + ("-ok" if self.ok else "-bad"), markup=False)
        with Vertical(id="result"):
            for line in self.lines:
                yield Static(line, classes="result-line", markup=False)
            for w in self.warnings:
                yield Static(f"Note: {w}", classes="warning", markup=False)
            if self.damaged:
                with VerticalScroll(id="damaged"):
                    yield Static(Text("\n".join(self.damaged), "red"))
            with Horizontal(classes="buttons"):
                for i, (key, label) in enumerate(self.choices):
                    yield Button(label, compact=True, id=key, variant="primary" if i == 0 else "default")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "done")

    def action_choose(self, key: str) -> None:
        self.dismiss(key)
