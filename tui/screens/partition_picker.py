"""Pick a partition of a snapshot to look inside: label, filesystem, size."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from recovery.browse.saved import browsable, fs_name, shown_name
from tui import humanize


def partition_prompt(part, letter: str | None = None) -> Text:
    t = Text(shown_name(part, letter), "bold")
    t.append(f"  {fs_name(part.fs)}  {humanize.size(part.size)}")
    t.append(f"\n  partition {part.number}, {humanize.size(part.used_bytes)} in use", "dim")
    if not browsable(part):
        t.append(" · Lifeboat cannot look inside this filesystem", "italic")
    return t


class PartitionPickerScreen(Screen["object | None"]):
    """Dismisses with a SourcePartition, or None (back)."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, title: str, partitions: list, step: str = "", letters: dict[int, str] | None = None):
        super().__init__()
        self.title_text, self.partitions, self.step = title, partitions, step
        self.letters = letters or {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text + (f"  [{self.step}]" if self.step else ""), classes="screen-title",
                     markup=False)
        yield Static("Which partition holds the files? Windows is usually the largest NTFS one.",
                     classes="hint", markup=False)
        yield OptionList(*[Option(partition_prompt(p, self.letters.get(p.number)), id=str(i), disabled=not browsable(p))
                           for i, p in enumerate(self.partitions)], id="partitions")
        yield Footer()

    def on_mount(self) -> None:
        ol = self.query_one("#partitions", OptionList)
        ol.focus()
        choosable = [i for i, p in enumerate(self.partitions) if browsable(p)]
        if choosable:     # the largest readable one: where a person's files usually are
            ol.highlighted = max(choosable, key=lambda i: self.partitions[i].size)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id is not None:
            self.dismiss(self.partitions[int(event.option_id)])

    def action_back(self) -> None:
        self.dismiss(None)
