"""Pick where backups are: repositories found on the disks (and homes for a new one)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from recovery.discover import Place
from tui import humanize
from tui.widgets.disk_map import display_path

TYPE_PATH = "type-path"
NETWORK = "network"            # "A network location…": type one
REMEMBERED = "net-"            # + index: a network location used before


def is_network(place: Place) -> bool:
    from recovery.storage.location import is_url

    return place.partition is None and bool(place.path) and is_url(place.path or "")


def remembered_prompt(r) -> Text:
    t = Text("Network: ", "bold")
    t.append(r.url, "bold")
    t.append(f"\n  last used {r.when()}; asks for its {'keys' if r.scheme == 's3' else 'password'} again"
             if r.scheme != "nfs" else f"\n  last used {r.when()}")
    return t


def place_prompt(place: Place, default: bool = False) -> Text:
    t = Text()
    network = is_network(place)
    where = (place.path or "?") if network else place.describe() if place.partition else display_path(place.path or "?")
    t.append(where, "bold")
    if default:
        t.append("  (suggested)", "italic")
    t.append("\n  ")
    if place.is_image:
        t.append(place.image or "")
    elif place.is_repository:
        n = place.snapshots or 0
        t.append(f"Lifeboat repository · {n} snapshot{'' if n == 1 else 's'}")
        if place.names:
            t.append(" of " + ", ".join(place.names[:3]) + ("…" if len(place.names) > 3 else ""))
    else:
        t.append("no repository yet: a new one will be made here")
    if network:
        t.append(" · on the network")
    elif not place.is_image:
        t.append(f" · {humanize.size(place.free)} free")
    if place.disk and place.partition:
        t.append(f" · on {display_path(place.disk)}")
    return t


class ChoosesAPlace:
    """The keys of a screen listing `self.places` (option ids are their indexes) above a
    "Type the path of a folder…" option: dismisses with the Place, TYPE_PATH, or None (back);
    with network options, NETWORK or a remembered location (`self.remembered`)."""

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id in (TYPE_PATH, NETWORK):
            self.dismiss(event.option_id)
        elif event.option_id and event.option_id.startswith(REMEMBERED):
            self.dismiss(self.remembered[int(event.option_id[len(REMEMBERED):])])
        elif event.option_id is not None:
            self.dismiss(self.places[int(event.option_id)])

    def action_type_path(self) -> None:
        self.dismiss(TYPE_PATH)

    def action_back(self) -> None:
        self.dismiss(None)


class PlacePickerScreen(ChoosesAPlace, Screen["object | None"]):
    """Dismisses with a Place, TYPE_PATH when the user wants to type a folder, NETWORK for a
    network location, a Remembered one, or None (back)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("t", "type_path", "Type a folder"),
        Binding("n", "network", "Network location"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, title: str, hint: str, places: list[Place], default: Place | None = None,
                 step: str = "", remembered: list | None = None):
        super().__init__()
        self.title_text, self.hint, self.places, self.default = title, hint, places, default
        self.step = step
        self.remembered = remembered or []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text + (f"  [{self.step}]" if self.step else ""), classes="screen-title",
                     markup=False)
        yield Static(self.hint, classes="hint", markup=False)
        options: list = [Option(place_prompt(p, p == self.default), id=str(i)) for i, p in enumerate(self.places)]
        if not options:
            options.append(Option(Text("No backups were found on the disks.", "italic"), disabled=True))
        options += [Option(remembered_prompt(r), id=f"{REMEMBERED}{i}") for i, r in enumerate(self.remembered)]
        options += [None, Option("Type the path of a folder…", id=TYPE_PATH),
                    Option("A network location…", id=NETWORK)]
        yield OptionList(*options, id="places")
        yield Footer()

    def action_network(self) -> None:
        self.dismiss(NETWORK)

    def on_mount(self) -> None:
        ol = self.query_one("#places", OptionList)
        ol.focus()
        if self.default is not None and self.default in self.places:
            ol.highlighted = self.places.index(self.default)
