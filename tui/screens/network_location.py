"""A repository on the network: type its location and the secrets its kind needs, test it,
use it. Dismisses with a Place (its ``path`` is the location's text) or None (back)."""

from __future__ import annotations

import os

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from recovery.discover import Place
from recovery.errors import LifeboatError
from tui import errlog, netlocations
from tui.netlocations import FIELDS, Remembered

HINT = ("Where the backups are kept on the network, such as\n"
        "  s3://bucket/prefix · sftp://user@host/path\n"
        "  smb://[domain;]user@host/share/path · nfs://host/export/path\n"
        "Passwords and keys are used by this session only: never saved, never shown.")


def outcome_words(place: Place) -> str:
    if place.is_repository:
        n = place.snapshots or 0
        return f"Works: a Lifeboat repository with {n} snapshot{'' if n == 1 else 's'}."
    return "Works: empty, a new repository will be made there."


class NetworkLocationScreen(Screen["Place | None"]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+t", "test", "Test"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, for_backup: bool, remembered: Remembered | None = None, step: str = ""):
        super().__init__()
        self.for_backup, self.remembered, self.step = for_backup, remembered, step
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("A network location" + (f"  [{self.step}]" if self.step else ""), classes="screen-title",
                     markup=False)
        with VerticalScroll(id="netform"):
            yield Static(HINT, classes="hint", markup=False)
            yield Input(self.remembered.url if self.remembered else "", placeholder="s3://bucket/prefix",
                        id="url", compact=True)
            seen: set[str] = set()
            for scheme, fields in FIELDS.items():
                for var, label, masked in fields:
                    if var in seen:
                        continue
                    seen.add(var)
                    yield Static(label, classes=f"field-label {var}", markup=False)
                    yield Input(os.environ.get(var, ""), password=masked, id=var.lower(), classes=f"secret {var}", compact=True)
            endpoint = (self.remembered.endpoint if self.remembered else "") or os.environ.get("LIFEBOAT_S3_ENDPOINT", "")
            yield Static("Endpoint (empty: Amazon S3)", classes="field-label endpoint", markup=False)
            yield Input(endpoint, placeholder="https://s3.example.net:9000", id="endpoint", classes="endpoint", compact=True)
            yield Static("", id="outcome", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Test", compact=True, id="test")
                yield Button("Use it", compact=True, id="use", variant="primary")
                yield Button("Back", compact=True, id="back")
        yield Footer()

    def on_mount(self) -> None:
        self._show_fields()
        scheme = netlocations.scheme_of(self.query_one("#url", Input).value)
        first = [var for var, _l, _m in FIELDS.get(scheme or "", [])]
        if self.remembered and first:
            self.query_one(f"#{first[0].lower()}", Input).focus()
        else:
            self.query_one("#url", Input).focus()

    def _show_fields(self) -> None:
        scheme = netlocations.scheme_of(self.query_one("#url", Input).value)
        wanted = {var for var, _l, _m in FIELDS.get(scheme or "", [])}
        for var in {v for fields in FIELDS.values() for v, _l, _m in fields}:
            for widget in self.query(f".{var}"):
                widget.display = var in wanted
        for widget in self.query(".endpoint"):
            widget.display = scheme == "s3"

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "url":
            self._show_fields()
            self.query_one("#outcome", Static).update("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._check(use=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self._check(use=event.button.id == "use")

    def action_test(self) -> None:
        self._check(use=False)

    def action_back(self) -> None:
        self.dismiss(None)

    def _values(self) -> tuple[str, str, dict[str, str], str]:
        url = self.query_one("#url", Input).value.strip()
        scheme = netlocations.scheme_of(url) or ""
        secrets = {var: self.query_one(f"#{var.lower()}", Input).value for var, _l, _m in FIELDS.get(scheme, [])}
        endpoint = self.query_one("#endpoint", Input).value.strip() if scheme == "s3" else ""
        return url, scheme, secrets, endpoint

    @work(exclusive=True, group="location", exit_on_error=False)
    async def _check(self, use: bool) -> None:
        """Open the location in a thread (a server can take seconds to answer); say in one
        line what is wrong, or what is there; with `use`, remember it and go on."""
        if self.busy:
            return
        outcome = self.query_one("#outcome", Static)
        url, scheme, secrets, endpoint = self._values()
        if not url:
            outcome.update("Type a location first, such as s3://bucket/prefix.")
            return
        self.busy = True
        outcome.set_classes("")
        outcome.update("Trying " + url + " …")
        try:
            if scheme:
                netlocations.apply(scheme, secrets, endpoint)
            place = await self.app.blocking(self.app.session.check_location, url, self.for_backup)
        except LifeboatError as exc:
            errlog.record(exc, "open a network location")
            outcome.set_classes("error")
            outcome.update(exc.message)
            return
        except Exception as exc:        # noqa: BLE001 - any slip is one line here, the log has the rest
            path = errlog.record(exc, "open a network location")
            outcome.set_classes("error")
            outcome.update(f"Something unexpected went wrong: {type(exc).__name__}: {exc}"
                           + (f" (details in {path})" if path else ""))
            return
        finally:
            self.busy = False
        outcome.update(outcome_words(place))
        for var in secrets:          # a password typed again when asked is the one that worked
            if os.environ.get(var, "") != secrets[var]:
                self.query_one(f"#{var.lower()}", Input).value = os.environ.get(var, "")
        if use:
            try:
                note = await self.app.blocking(netlocations.remember, url, endpoint)
                if note:
                    self.app.notify(f"The location is {note}.", severity="warning")
            except (OSError, LifeboatError) as exc:   # remembering is a convenience: say so, go on
                errlog.record(exc, "remember a network location")
                self.app.notify(f"The location could not be remembered for next time: {exc}", severity="warning")
            self.dismiss(place)
