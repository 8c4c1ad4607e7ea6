"""Home: what Lifeboat can do, and what it found on this machine."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from tui.widgets.status_line import StatusLine

INTRO = (
    "Lifeboat keeps whole-disk backups of this computer and puts them back,\n"
    "on the same disk or on a new one. Choose what to do:"
)


DEMO_NOTE = (
    "Demo: the disks here are image files in ./demo. To pretend the PC died, quit and "
    "run  scripts/demo --crash  then come back and restore it."
)
DEMO_CRASHED = (
    "Demo: the demo PC's disk ({name}) is blank: it has “crashed”. "
    "Choose Restore a backup to bring it back."
)


class HomeScreen(Screen[None]):
    BINDINGS = [
        Binding("b", "choose('backup')", "Back up", show=False),
        Binding("r", "choose('restore')", "Restore", show=False),
        Binding("c", "choose('check')", "Check", show=False),
        Binding("m", "choose('manage')", "Manage backups", show=False),
        Binding("g", "choose('files')", "Get files back", show=False),
        Binding("d", "choose('disks')", "Disks", show=False),
        Binding("n", "choose('network')", "Network", show=False),
        Binding("f5", "app.rescan", "Look again"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("q", "app.request_quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        with Vertical(id="home"):
            yield Static(INTRO, id="intro")
            options = [
                Option("[b]B[/b]ack up a disk", id="backup"),
                Option("[b]R[/b]estore a backup", id="restore"),
                Option("[b]G[/b]et files back", id="files"),
                Option("[b]C[/b]heck backups", id="check"),
                Option("[b]M[/b]anage backups (free space)", id="manage"),
                Option("[b]D[/b]isks", id="disks"),
                Option("[b]N[/b]etwork", id="network"),
            ]
            if self.app.live:
                options += [
                    None,
                    Option("Shell", id="shell"),
                    Option("Reboot", id="reboot"),
                    Option("Power off", id="poweroff"),
                ]
            options += [None, Option("Quit", id="quit")]
            yield OptionList(*options, id="menu")
            if self.app.session.demo:
                yield Static(DEMO_NOTE, id="demo-note")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#menu", OptionList).focus()
        if self.app.session.demo:
            self.watch(self.app, "scan_generation", self._demo_note)

    def _demo_note(self, _generation: int) -> None:
        blank = [d for d in self.app.session.disks if d.name.startswith("demo-pc") and not d.partitions]
        note = DEMO_CRASHED.format(name=blank[0].name) if blank else DEMO_NOTE
        self.query_one("#demo-note", Static).update(note)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id:
            self.action_choose(event.option_id)

    def action_choose(self, what: str) -> None:
        self.app.start(what)
