"""Manage backups: every machine's snapshots with size and age, a retention policy to pick (a
preset or the numbers), and a preview of what it removes and frees. Dismisses with the Policy
to apply, or None (back)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from recovery.repo.retention import DEFAULT_POLICY, RULES, Policy
from tui import humanize

PRESETS = {
    "standard": DEFAULT_POLICY,
    "fewer": Policy(last=3, daily=3),
    "more": Policy(last=5, daily=14, weekly=8, monthly=24, yearly=5),
}
PRESET_LABELS = {"standard": "Standard", "fewer": "Fewer", "more": "More"}


class ManageScreen(Screen["Policy | None"]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, snapshots: list, preview, step: str = ""):
        """``preview(policy) -> (verdicts, bytes freed)``, run on a worker thread."""
        super().__init__()
        self.snapshots = sorted(snapshots, key=lambda s: (s.name, s.created), reverse=True)
        self.preview = preview
        self.step = step
        self.policy: Policy | None = None
        self.removes = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Manage backups" + (f"  [{self.step}]" if self.step else ""), classes="screen-title")
        yield Static("Choose how many backups of each computer to keep. The others are removed, and the "
                     "space only they use is freed.", classes="hint")
        with Horizontal(id="presets", classes="buttons"):
            for key, label in PRESET_LABELS.items():
                yield Button(label, compact=True, id=f"preset-{key}")
        with Horizontal(id="rules"):
            for rule in RULES:
                yield Label(f"{rule}:")
                yield Input(str(getattr(DEFAULT_POLICY, rule)), id=f"keep-{rule}", type="integer",
                            compact=True, max_length=3)
        table = DataTable(id="snapshots", cursor_type="row", zebra_stripes=False)
        table.add_columns("Computer", "Date", "Age", "Size", "Stored", "Kept because")
        yield table
        yield Static("", id="preview", markup=False)
        with Horizontal(classes="buttons"):
            yield Button("Back", compact=True, id="back")
            yield Button("Remove and free the space", compact=True, id="apply", variant="error", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill({})
        self._changed()
        self.query_one("#preset-standard", Button).focus()

    def _typed(self) -> Policy | None:
        values = {}
        for rule in RULES:
            text = self.query_one(f"#keep-{rule}", Input).value.strip() or "0"
            try:
                values[rule] = int(text)
            except ValueError:
                return None
        try:
            return Policy(**values)
        except Exception:          # a negative number: no policy until it is fixed
            return None

    def _fill(self, verdicts: dict) -> None:
        table = self.query_one("#snapshots", DataTable)
        table.clear()
        for s in self.snapshots:
            v = verdicts.get(s.id)
            why = Text("?") if v is None else (Text(", ".join(v.reasons)) if v.keep else Text("REMOVE", "bold red"))
            table.add_row(s.name, humanize.when(s.created), humanize.age(s.created), humanize.size(s.bytes_used),
                          humanize.size(s.bytes_stored_new), why, key=s.id)

    def _changed(self) -> None:
        policy = self._typed()
        apply = self.query_one("#apply", Button)
        self.policy = None
        apply.disabled = True
        if policy is None or policy.empty:
            self.query_one("#preview", Static).update(
                "Keep at least one backup by some rule (numbers of 0 or more)." if policy is None or policy.empty
                else "")
            self._fill({})
            return
        self.query_one("#preview", Static).update("Working out what this keeps…")
        self._compute(policy)

    @work(thread=True, exclusive=True, group="preview")
    def _compute(self, policy: Policy) -> None:
        try:
            verdicts, freed = self.preview(policy)
        except Exception as exc:        # noqa: BLE001 - shown; nothing is removed
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self._show, policy, verdicts, freed)

    def _show_error(self, message: str) -> None:
        self.query_one("#preview", Static).update(f"Cannot work out what would be freed: {message}")

    def _show(self, policy: Policy, verdicts, freed: int) -> None:
        if policy != self._typed():
            return                      # typed on meanwhile: the newer preview will come
        self._fill({v.id: v for v in verdicts})
        self.removes = sum(1 for v in verdicts if not v.keep)
        if not self.removes:
            self.query_one("#preview", Static).update(f"{policy.describe().capitalize()}: every backup is kept; "
                                                      "nothing to remove.")
            return
        self.policy = policy
        self.query_one("#preview", Static).update(
            f"{policy.describe().capitalize()}: {self.removes} of {len(verdicts)} backups are removed, "
            f"freeing about {humanize.size(freed)}.")
        self.query_one("#apply", Button).disabled = False

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        bid = event.button.id or ""
        if bid.startswith("preset-"):
            policy = PRESETS[bid[len("preset-"):]]
            with self.prevent(Input.Changed):
                for rule in RULES:
                    self.query_one(f"#keep-{rule}", Input).value = str(getattr(policy, rule))
            self._changed()
        elif bid == "apply" and self.policy is not None:
            self.dismiss(self.policy)
        elif bid == "back":
            self.dismiss(None)

    def action_back(self) -> None:
        self.dismiss(None)
