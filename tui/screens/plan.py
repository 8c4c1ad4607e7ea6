"""The restore plan, before anything is written: the target now and after, the engine's own
sentences for what happens to the layout and each step (plan.layout_changes, plan.actions), and
what is lost. Engine sentences are shown as they are; only the heading names the target."""

from __future__ import annotations

from dataclasses import replace

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from tui import humanize
from tui.widgets.disk_map import DiskMap, display_path, from_disk, from_layout

LAYOUTS = ("grow", "keep", "proportional")
LAYOUT_WORDS = {
    "grow": "the largest data partition grows to fill the disk, those after it move to the end",
    "keep": "partitions exactly where they were",
    "proportional": "data partitions grow in proportion",
}


def _hanging(rows) -> Table:
    """Marker and sentence in two columns, so a wrapped sentence stays indented under itself."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column()
    for marker, sentence in rows:
        grid.add_row(marker, Text(sentence))
    return grid


class PlanScreen(Screen[str]):
    """Dismisses with "continue", "back", or "layout:<mode>" (plan again with another layout)."""

    BINDINGS = [
        Binding("escape", "choose('back')", "Back"),
        Binding("l", "next_layout", "Other layout"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, plan, snapshot=None, step: str = ""):
        super().__init__()
        self.plan, self.snapshot, self.step = plan, snapshot, step

    def _after_info(self) -> dict:
        info = {}
        parts = {p.get("number"): p for p in (self.snapshot.partitions if self.snapshot else [])}
        for number, fs in (self.plan.fs or {}).items():
            p = parts.get(number, {})
            info[number] = (fs or p.get("fs"), p.get("label"), p.get("used"))
        return info

    def compose(self) -> ComposeResult:
        plan = self.plan
        target = plan.target
        where = display_path(target.path)
        yield Header(show_clock=False, icon="")
        yield Static("The plan: nothing has been written yet" + (f"  [{self.step}]" if self.step else ""),
                     classes="screen-title")
        origin = plan.origin
        what = (f"the {origin.kind} {display_path(origin.location)}" if origin is not None and not
                hasattr(origin, "manifest") else f"snapshot {plan.snapshot[:8]}")
        yield Static(
            f"Restore “{plan.name}” from {humanize.when(plan.created)} ({what})\n"
            f"onto {where}: {humanize.size(target.size)}"
            + (f", {target.model}" if target.model else "")
            + (f", serial {target.serial}" if target.serial else ""),
            id="plan-head", markup=False, classes="-volatile")
        if plan.resume:
            yield Static(Text("This disk holds an incomplete restore of this backup: it is resumed. "
                              "What is already written and intact is kept; the rest is written.",
                              "bold yellow"), id="resume")
        if plan.salvage:
            yield Static(Text("The backup is damaged: what is readable is restored, damaged pieces are "
                              "written as zeros, and the files they hit are listed at the end.",
                              "bold red"), id="salvage")
        with Horizontal(id="maps"):
            now = from_disk(target, used=self.app.session.usage.get(target.path))
            yield DiskMap(replace(now, title="Now", details=humanize.size(target.size)), classes="map half")
            after = from_layout(plan.after, "After", fs_info=self._after_info())
            yield DiskMap(after, classes="map half")
        with VerticalScroll(id="plan"):
            lost = Text("Everything now on this disk will be destroyed:\n", "bold red")
            lost.append("\n".join(f"✗ {d}" for d in plan.destroyed), "red")
            yield Static(lost, id="destroyed")
            yield Static(f"Layout “{plan.layout_mode}” (l changes it): {LAYOUT_WORDS.get(plan.layout_mode, '')}. "
                         f"{humanize.size(plan.bytes_to_write)} to write.", markup=False)
            if plan.layout_changes:
                yield Static(_hanging(("•", c) for c in plan.layout_changes), id="changes")
            yield Static("Steps:", markup=False)
            yield Static(_hanging((f"{i}.", a.describe()) for i, a in enumerate(plan.actions, 1)), id="actions")
        with Horizontal(classes="buttons"):
            yield Button("Back", compact=True, id="back")
            yield Button("Continue", compact=True, id="continue", variant="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#continue", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "back")

    def action_choose(self, what: str) -> None:
        self.dismiss(what)

    def action_next_layout(self) -> None:
        i = LAYOUTS.index(self.plan.layout_mode) if self.plan.layout_mode in LAYOUTS else 0
        self.dismiss(f"layout:{LAYOUTS[(i + 1) % len(LAYOUTS)]}")
