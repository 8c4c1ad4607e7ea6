"""The keys, and what Lifeboat does, in a few lines."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]Keys[/b]
  Up/Down  move                Enter   choose, go on
  Tab      next field, button  Esc     back (a job: asks to cancel)
  F1, ?    this help           F5      look for disks again (Home)
  b r g c m d n  Home: Back up, Restore, Get files, Check, Manage, Disks,
               Network
  t / n    a folder / network  l       restore plan: another layout
  q        quit (Home)         Ctrl+Q  quit from anywhere

[b]What happens[/b]
  Back up: pick the disk, where to keep it, a name. Only the blocks the
  files use are stored, compressed; a second backup stores only changes.
  Restore: pick a backup and a target disk. You see the plan first, and
  nothing is written until you type the target's name. A stopped
  restore leaves the disk marked "incomplete"; running it again resumes.
  Get files back: pick a backup and a partition, mark files (Space),
  F2 copies them to another drive; nothing is restored or changed.
  Check: re-reads every piece of a backup and names anything damaged.
  Manage backups: pick a policy (how many to keep), see what goes and
  what it frees, then remove old backups and free their space.
  A disk marked SYSTEM DISK or HOLDS BACKUPS is never a restore target.\
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q,enter", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="-info help"):
            yield Static("Help", classes="dialog-title")
            yield Static(HELP, id="help-text")
            yield Static("Esc: close", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
