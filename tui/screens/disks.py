"""Disks: every disk found, drawn as a map. Read only."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui.widgets.disk_map import DiskMap, from_disk


class DisksScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f5", "rescan", "Look again"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Disks on this computer", classes="screen-title")
        yield VerticalScroll(id="disk-maps", can_focus=True)
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "scan_generation", self._fill)
        self.query_one("#disk-maps").focus()

    def _fill(self, _gen: int) -> None:
        maps = self.query_one("#disk-maps", VerticalScroll)
        maps.remove_children()
        if self.app.scanning:
            maps.mount(Static("Looking for disks…"))
            return
        disks = self.app.session.disks
        if not disks:
            maps.mount(Static("No disks found."))
        maps.mount_all(DiskMap(from_disk(d, used=self.app.session.usage.get(d.path)), classes="map") for d in disks)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_rescan(self) -> None:
        self.app.action_rescan()
