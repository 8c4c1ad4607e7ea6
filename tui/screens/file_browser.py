"""Browse a saved filesystem and mark what to copy out.

Folders first, then files, with sizes and dates. Enter opens a folder, Backspace goes up,
Space marks (or unmarks) the highlighted file or folder, typing a name jumps to it, F2 copies
what is marked. The running total of what is marked is kept at the bottom; a folder's size is
counted on a thread, so a big one does not stop the screen.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from recovery.browse import files
from tui import humanize

TYPE_AHEAD_RESET = 1.0      # seconds without a key before a new search starts


class FileBrowserScreen(Screen["tuple[list[Path], int] | None"]):
    """Dismisses with (marked paths, their total bytes), or None (back)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("space", "mark", "Mark", key_display="Space"),
        Binding("backspace", "up", "Up a folder"),
        Binding("f2", "copy", "Copy marked"),
    ]

    def __init__(self, title: str, root: Path, step: str = ""):
        super().__init__()
        self.title_text, self.root, self.step = title, root, step
        self.folder = root
        self.entries: list[files.Entry] = []
        self.marked: dict[Path, int | None] = {}      # path -> bytes (None while a folder is counted)
        self.typed, self.typed_at = "", 0.0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text + (f"  [{self.step}]" if self.step else ""),
                     classes="screen-title -volatile", markup=False)
        yield Static("", id="where", classes="hint", markup=False)
        table = DataTable(id="files", cursor_type="row", zebra_stripes=False)
        table.add_column(" ", key="mark", width=1)
        table.add_column("Name", key="name")
        table.add_column("Size", key="size", width=10)
        table.add_column("Date", key="date", width=16)
        yield table
        yield Static("", id="total", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#files", DataTable).focus()
        self.show(self.root)

    # -- the listing ---------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        r = str(path.relative_to(self.root))
        return "/" if r == "." else "/" + r

    def show(self, folder: Path, select: str | None = None) -> None:
        try:
            entries = files.list_dir(folder)
        except OSError as exc:
            self.notify(f"Cannot open {self.rel(folder)}: {exc.strerror}", severity="error")
            return
        self.folder, self.entries = folder, entries
        table = self.query_one("#files", DataTable)
        table.clear()
        for i, e in enumerate(entries):
            table.add_row(*self.cells(e), key=str(i))
        self.query_one("#where", Static).update(
            f"{self.rel(folder)}  ·  {len(entries)} item{'' if len(entries) == 1 else 's'}")
        if select is not None:
            names = [e.name for e in entries]
            if select in names:
                table.move_cursor(row=names.index(select))
        self.update_total()

    def cells(self, e: files.Entry) -> list:
        mark = Text("✓", "bold green") if self.folder / e.name in self.marked else " "
        if e.kind == "dir":
            name, size = Text(e.name + "/", "bold"), ""
        elif e.kind == "link":
            name, size = Text(f"{e.name} → {e.target}", "italic"), "link"
        else:
            name, size = Text(e.name), humanize.size(e.size) if e.kind == "file" else e.kind
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
        return [mark, name, size, when]

    def current(self) -> files.Entry | None:
        table = self.query_one("#files", DataTable)
        if not self.entries or table.cursor_row is None or table.cursor_row >= len(self.entries):
            return None
        return self.entries[table.cursor_row]

    # -- marking ---------------------------------------------------------------------------
    def update_total(self) -> None:
        counting = any(v is None for v in self.marked.values())
        total = sum(v or 0 for v in self.marked.values())
        n = len(self.marked)
        text = (f"Marked: {n} item{'' if n == 1 else 's'}, {humanize.size(total)}" + (" (counting…)" if counting else "")
                if n else "Nothing marked yet: Space marks a file or folder, F2 copies what is marked.")
        if self.typed and time.monotonic() - self.typed_at < TYPE_AHEAD_RESET:
            text += f"   ·   find: {self.typed}"
        self.query_one("#total", Static).update(text)

    def action_mark(self) -> None:
        e = self.current()
        if e is None:
            return
        path = self.folder / e.name
        table = self.query_one("#files", DataTable)
        row = table.cursor_row
        if path in self.marked:
            del self.marked[path]
        elif e.kind == "dir":
            self.marked[path] = None
            self.run_worker(lambda: self._count(path), thread=True, group="count")
        else:
            self.marked[path] = e.size if e.kind == "file" else 0
        table.update_cell(str(row), "mark", self.cells(e)[0])
        if row + 1 < len(self.entries):
            table.move_cursor(row=row + 1)
        self.update_total()

    def _count(self, path: Path) -> None:
        size = files.total_bytes([path])
        self.app.call_from_thread(self._counted, path, size)

    def _counted(self, path: Path, size: int) -> None:
        if path in self.marked:
            self.marked[path] = size
            self.update_total()

    # -- moving around ------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        e = self.current()
        if e is None:
            return
        if e.kind == "dir":
            self.show(self.folder / e.name)
        else:
            self.action_mark()

    def action_up(self) -> None:
        if self.folder != self.root:
            self.show(self.folder.parent, select=self.folder.name)

    def on_key(self, event) -> None:
        """Type-ahead: printable keys jump to the first name that starts with what was typed."""
        ch = event.character
        if not ch or not ch.isprintable() or ch == " " or event.key in ("space", "backspace"):
            return
        now = time.monotonic()
        self.typed = (self.typed if now - self.typed_at < TYPE_AHEAD_RESET else "") + ch
        self.typed_at = now
        want = self.typed.casefold()
        for i, e in enumerate(self.entries):
            if e.name.casefold().startswith(want):
                self.query_one("#files", DataTable).move_cursor(row=i)
                break
        self.update_total()
        event.stop()
        event.prevent_default()

    def action_copy(self) -> None:
        if not self.marked:
            self.notify("Mark a file or folder first (Space).", severity="warning")
            return
        if any(v is None for v in self.marked.values()):
            self.notify("Still counting the marked folders…", severity="information")
            return
        self.dismiss((sorted(self.marked), sum(self.marked.values())))

    def action_back(self) -> None:
        if self.folder != self.root:
            self.action_up()
            return
        self.dismiss(None)
