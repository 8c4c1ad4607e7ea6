"""What a check found: every snapshot checked, the damaged ones in red with what is affected."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from tui import humanize


class CheckReportScreen(Screen[None]):
    BINDINGS = [Binding("escape", "done", "Done")]

    def __init__(self, report, snapshots: list):
        super().__init__()
        self.report = report
        self.snapshots = {s.id: s for s in snapshots}

    def compose(self) -> ComposeResult:
        r = self.report
        damaged: dict[str, list] = {}
        for d in r.damaged:
            damaged.setdefault(d.snapshot, []).append(d)
        yield Header(show_clock=False, icon="")
        if r.ok:
            yield Static(f"All {len(r.checked)} checked snapshot(s) are intact", classes="screen-title -ok")
        else:
            yield Static(f"{len(damaged)} of {len(r.checked)} snapshot(s) are DAMAGED", classes="screen-title -bad")
        table = DataTable(id="report", cursor_type="row")
        table.add_columns("Snapshot", "Name", "Date", "Result")
        for sid in r.checked:
            s = self.snapshots.get(sid)
            name = s.name if s else ""
            date = humanize.when(s.created) if s else ""
            if sid in damaged:
                parts = ", ".join(sorted({f"partition {d.partition}" if d.partition is not None else "metadata"
                                          for d in damaged[sid]}))
                style = "bold red"
                table.add_row(Text(sid[:8], style), Text(name, style), Text(date, style),
                              Text(f"DAMAGED: {parts}", style))
            else:
                table.add_row(sid[:8], name, date, Text("intact", "green"))
        yield table
        if r.damaged:
            lines = Text()
            for d in r.damaged[:8]:
                where = f"partition {d.partition}" if d.partition is not None else "snapshot"
                lines.append(f"✗ {d.snapshot[:8]} {where}: {d.message}\n", "red")
            if len(r.damaged) > 8:
                lines.append(f"… and {len(r.damaged) - 8} more (see the log)\n", "red")
            lines.append("A damaged snapshot cannot be restored in full; older or newer intact ones can.")
            yield Static(lines, id="damage")
        if r.repairs:
            # Damage the parity repaired (or could not): said even when every snapshot is intact.
            lines = Text()
            for x in r.repairs[:8]:
                lines.append(f"{'✓' if x.repaired else '✗'} {x.message()}\n", "yellow" if x.repaired else "red")
            if len(r.repairs) > 8:
                lines.append(f"… and {len(r.repairs) - 8} more (see the log)\n", "yellow")
            yield Static(lines, id="repairs")
        with Horizontal(classes="buttons"):
            yield Button("Done", compact=True, id="done", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_done(self) -> None:
        self.dismiss(None)
