"""The Network screen: each interface with its address and gateway (or why it has none), and
a fixed address typed by hand for a network without DHCP. The engine does the work
(recovery.network); setting an address changes this machine, so only the live system does it."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from recovery.errors import LifeboatError

NOT_LIVE = ("not changed: a fixed address is set only on the Lifeboat live system (here, use the "
            "system's own network settings)")


def interfaces_text(found) -> Text:
    t = Text()
    if not found:
        t.append("No network interface was found.", "italic")
    for i in found:
        t.append(f"{i.name:<12}", "bold")
        t.append(i.describe() + "\n")
    return t


class NetworkScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f5", "look", "Look again"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Network", classes="screen-title", markup=False)
        with VerticalScroll(id="netform"):
            yield Static("Looking…", id="interfaces", markup=False)
            yield Static("A fixed address, for a network without DHCP:", classes="field-label", markup=False)
            yield Input(placeholder="interface, such as eth0", id="interface", compact=True)
            yield Input(placeholder="ADDRESS/PREFIX, such as 192.168.1.20/24", id="address", compact=True)
            yield Input(placeholder="gateway, such as 192.168.1.1 (may stay empty)", id="gateway", compact=True)
            yield Input(placeholder="DNS server, such as 192.168.1.1 (may stay empty)", id="dns", compact=True)
            yield Static("", id="outcome", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Set it", compact=True, id="set", variant="primary")
                yield Button("Look again", compact=True, id="look")
                yield Button("Back", compact=True, id="back")
        yield Footer()

    def on_mount(self) -> None:
        self.action_look()

    def action_back(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="network", exit_on_error=False)
    async def action_look(self) -> None:
        from recovery import network

        found = await self.app.blocking(network.interfaces)
        self.query_one("#interfaces", Static).update(interfaces_text(found))
        field = self.query_one("#interface", Input)
        if not field.value and found:          # the first with a cable in, else the first
            field.value = next((i.name for i in found if i.carrier), found[0].name)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "back":
            self.dismiss(None)
        elif event.button.id == "look":
            self.action_look()
        else:
            self._set()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._set()

    @work(exclusive=True, group="network-set", exit_on_error=False)
    async def _set(self) -> None:
        from recovery import network

        values = [self.query_one(f"#{w}", Input).value.strip() for w in ("interface", "address", "gateway", "dns")]
        outcome = self.query_one("#outcome", Static)
        outcome.set_classes("")
        try:
            fixed = await self.app.blocking(network.check_fixed_address, *values)
            if not self.app.live:
                outcome.set_classes("error")
                outcome.update(NOT_LIVE)
                return
            await self.app.blocking(network.set_fixed_address, *values)
        except LifeboatError as exc:
            outcome.set_classes("error")
            outcome.update(exc.message)
            return
        outcome.update(f"{fixed.interface} now has {fixed.address}"
                       + (f" via {fixed.gateway}" if fixed.gateway else "") + ".")
        self.action_look()
