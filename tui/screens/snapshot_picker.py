"""A machine's history: its snapshots, newest first, with what is inside the highlighted one."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui import humanize
from tui.widgets.disk_map import DiskMap, from_snapshot

ALL = "all"


class SnapshotPickerScreen(Screen["object | None"]):
    """Dismisses with a SnapshotInfo, ALL (when ``offer_all``), or None (back)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, title: str, hint: str, snapshots: list, *, offer_all: bool = False, step: str = ""):
        super().__init__()
        self.title_text, self.hint = title, hint
        self.snapshots = list(reversed(snapshots))     # newest first
        self.offer_all = offer_all
        self.step = step

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text + (f"  [{self.step}]" if self.step else ""), classes="screen-title",
                     markup=False)
        yield Static(self.hint, classes="hint", markup=False)
        table = DataTable(id="history", cursor_type="row", zebra_stripes=False)
        table.add_columns("Date", "Name", "Id", "Size", "Stored", "Checked")
        if self.offer_all:
            table.add_row(Text("All snapshots", "bold"), "", "", "", "", "", key=ALL)
        for i, s in enumerate(self.snapshots):
            cells = [humanize.when(s.created), s.name, s.short_id, humanize.size(s.bytes_used),
                     humanize.size(s.bytes_stored_new)]
            if getattr(s, "damaged", None):
                # A damaged snapshot in red, whatever an earlier check said.
                table.add_row(*(Text(c, "bold red") for c in cells), Text("DAMAGED", "bold red"), key=str(i))
                continue
            checked = Text(humanize.when(s.verified), "green") if s.verified else Text("not yet", "yellow")
            table.add_row(*cells, checked, key=str(i))
        yield table
        damage = Static("", id="damage-detail", classes="error", markup=False)
        damage.display = False
        yield damage
        yield Static("Inside:", classes="label")
        yield DiskMap(id="inside", classes="map")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#history", DataTable).focus()
        self._show(0 if not self.offer_all else None)

    def _show(self, index: int | None) -> None:
        inside = self.query_one("#inside", DiskMap)
        detail = self.query_one("#damage-detail", Static)
        if index is None or not self.snapshots:
            inside.model = None
            detail.display = False
        else:
            inside.model = from_snapshot(self.snapshots[index])
            damaged = getattr(self.snapshots[index], "damaged", None)
            detail.display = bool(damaged)
            if damaged:
                detail.update("DAMAGED — the last check found: " + "; ".join(damaged))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        self._show(None if key in (None, ALL) else int(key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        self.dismiss(ALL if key == ALL else self.snapshots[int(key)])

    def action_back(self) -> None:
        self.dismiss(None)
