"""Backup, last step before starting: what is copied where, under which name."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from recovery.discover import Place
from recovery.model.disk import DiskInfo
from tui import humanize
from tui.screens.place_picker import place_prompt
from tui.widgets.disk_map import DiskMap, from_disk

NAME_HINT = "Backups of one computer share a name; the list of its snapshots is its history."


class BackupSummaryScreen(Screen[str | None]):
    """Dismisses with the machine name to file the backup under, or None (back)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f10", "start", "Start backup"),
    ]

    def __init__(self, disk: DiskInfo, place: Place, name: str, step: str = ""):
        super().__init__()
        self.disk, self.place, self.name_default, self.step = disk, place, name, step

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Ready to back up" + (f"  [{self.step}]" if self.step else ""), classes="screen-title")
        with Vertical(id="summary"):
            yield Static("This disk:", classes="label")
            yield DiskMap(from_disk(self.disk, used=self.app.session.usage.get(self.disk.path)), classes="map")
            yield Static("will be copied to:", classes="label")
            yield Static(place_prompt(self.place), id="destination")
            size = sum(p.size for p in self.disk.partitions)
            yield Static(
                f"Only the blocks in use are read and stored (partitions total {humanize.size(size)}). "
                "Nothing on the disk is changed.", classes="hint")
            yield Static("Name of this computer:", classes="label")
            yield Input(self.name_default, id="name")
            yield Static(NAME_HINT, classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Back", compact=True, id="back")
                yield Button("Start backup", compact=True, id="start", variant="success")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#start", Button).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_back()

    def action_start(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.notify("Give the computer a name first.", severity="warning")
            self.query_one("#name", Input).focus()
            return
        self.dismiss(name)

    def action_back(self) -> None:
        self.dismiss(None)
