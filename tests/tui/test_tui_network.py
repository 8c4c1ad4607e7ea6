"""Repositories on the network in the TUI, driven with Pilot: a backup into and a restore from
an S3 location on a real SeaweedFS server on loopback (every file compared), the engine's own
line for a wrong secret, the location remembered without its secret, and the Network screen."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Static

from recovery.repo.repository import Repository
from tests import fsimages as fi
from tests.netservers import (ACCESS_KEY, PASSWORD, PASSWORD_USER, SECRET_KEY,  # noqa: F401 - the fixtures
                              password_sshd, seaweedfs, sshd)
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen, to_place_picker

pytestmark = pytest.mark.tui
SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LIFEBOAT_S3_ENDPOINT", "LIFEBOAT_S3_PATH_STYLE",
               "LIFEBOAT_PASSWORD")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def netenv(machine, monkeypatch):
    """No secret in the environment to begin with (the screen puts them there; monkeypatch
    takes them away after the test); remembered locations in the test's own data folder."""
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(machine / "data"))
    monkeypatch.setenv("LIFEBOAT_LOG_DIR", str(machine / "logs"))
    yield machine / "data"
    for var in SECRET_VARS:        # put there by the screen or the engine during the test
        os.environ.pop(var, None)
    from recovery.storage import mounted

    mounted._unmount_all()         # what the app mounted goes at its process's exit: here, now


async def fill(screen, pilot, **values) -> None:
    for wid, value in values.items():
        field = screen.query_one(f"#{wid}", Input)
        field.value = value
    await pilot.pause(0.05)


async def press_button(pilot, screen, wid: str) -> None:
    screen.query_one(f"#{wid}").press()
    await pilot.pause(0.05)


def outcome(screen) -> str:
    return str(screen.query_one("#outcome", Static).content)


def partition_trees(image: Path) -> list[dict[str, str]]:
    """Every file of each partition of a demo-pc disk image (FAT32 ESP, ext4), with its hash."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    trees = []
    for p, reader in zip(table["partitions"], (fi.vfat_tree, fi.ext_tree)):
        trees.append(reader(image, p["start"] * 512, p["size"] * 512))
    return trees


def test_backup_into_and_restore_from_s3(machine, netenv, seaweedfs):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.home import HomeScreen
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    seaweedfs.bucket("tuinet")
    url = "s3://tuinet/office/pc"

    async def backup():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            assert "A network location…" in screen_text(app)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url=url)
            # The fields the scheme needs, and only those, are shown; secrets are masked.
            assert form.query_one("#aws_secret_access_key", Input).display
            assert form.query_one("#aws_secret_access_key", Input).password
            assert not form.query_one("#lifeboat_password", Input).display
            await fill(form, pilot, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                       endpoint=seaweedfs.endpoint)
            await press_button(pilot, form, "test")
            await wait_for(pilot, lambda: outcome(form).startswith("Works"), 60, "the test of the location")
            assert outcome(form) == "Works: empty, a new repository will be made there."
            assert SECRET_KEY not in screen_text(app)
            await press_button(pilot, form, "use")
            await wait_screen(pilot, BackupSummaryScreen, timeout=60)
            assert url in screen_text(app) and "a new one will be made here" in screen_text(app)
            await pilot.press("f10")
            from tui.screens.new_repository import NewRepositoryDialog
            await wait_screen(pilot, NewRepositoryDialog, timeout=60)
            await pilot.press("enter")                                   # not encrypted
            await wait_screen(pilot, ResultScreen, timeout=180)
            assert "Backup finished" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, HomeScreen)

    run(backup())
    repo = Repository.open(url)
    try:
        assert [s.name for s in repo.snapshots()] == ["demo-pc"]
    finally:
        repo.close()
    # Remembered without its secret: the location and endpoint only.
    saved = (netenv / "locations.json").read_text()
    entry = json.loads(saved)["locations"][0]
    assert entry["url"] == url and entry["endpoint"] == seaweedfs.endpoint and entry["last_used"]
    assert SECRET_KEY not in saved and ACCESS_KEY not in saved

    # Next time (a new process: no secret in the environment) it is listed; choosing it asks
    # only for the keys.
    for var in SECRET_VARS:
        os.environ.pop(var, None)

    async def restore():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            picker = await wait_screen(pilot, PlacePickerScreen)
            assert f"Network: {url}" in screen_text(app) and "last used" in screen_text(app)
            options = picker.query_one(OptionList)
            options.highlighted = next(i for i in range(options.option_count)
                                       if options.get_option_at_index(i).id == "net-0")
            await pilot.press("enter")
            form = await wait_screen(pilot, NetworkLocationScreen)
            assert form.query_one("#url", Input).value == url
            assert form.query_one("#endpoint", Input).value == seaweedfs.endpoint
            assert form.focused is form.query_one("#aws_access_key_id", Input)
            assert form.query_one("#aws_access_key_id", Input).value == ""
            await pilot.press(*ACCESS_KEY)
            await fill(form, pilot, aws_secret_access_key=SECRET_KEY)
            await pilot.press("enter")                                   # Enter in a field: use it
            await wait_screen(pilot, SnapshotPickerScreen, timeout=60)
            assert "demo-pc" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("down", "enter")                           # new-disk.img
            await wait_screen(pilot, PlanScreen, timeout=60)
            await pilot.press("enter")
            await wait_screen(pilot, ConfirmScreen)
            await pilot.press(*"new-disk.img", "enter")
            await wait_screen(pilot, ResultScreen, timeout=180)
            assert "Restore finished" in screen_text(app)

    run(restore())
    restored, original = partition_trees(machine / "new-disk.img"), partition_trees(machine / "demo-pc.img")
    assert all(restored) and restored == original


def test_wrong_secret_is_the_engines_one_line_and_nothing_is_remembered(machine, netenv, seaweedfs):
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.place_picker import PlacePickerScreen

    seaweedfs.bucket("tuinet")

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url="s3://tuinet/office/pc", aws_access_key_id=ACCESS_KEY,
                       aws_secret_access_key="not-the-secret", endpoint=seaweedfs.endpoint)
            await press_button(pilot, form, "use")
            await wait_for(pilot, lambda: outcome(form) and not outcome(form).startswith("Trying"), 60,
                           "the answer")
            said = outcome(form)
            assert app.screen is form                  # still on the form, to correct it
            assert "\n" not in said and "Traceback" not in said and "not-the-secret" not in said
            return said

    said = run(scenario())
    print(said)
    assert "refused the credentials" in said, said
    assert not (netenv / "locations.json").exists()


@pytest.mark.parametrize("key, words", [
    ("b", "s3://tuinet/other holds other files and no Lifeboat repository"),
    ("r", "s3://tuinet/other holds no Lifeboat repository"),
])
def test_a_location_holding_something_else_is_refused(machine, netenv, seaweedfs, key, words):
    import io

    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.place_picker import PlacePickerScreen

    seaweedfs.bucket("tuinet")
    seaweedfs.client().put_object("tuinet", "other/notes.txt", io.BytesIO(b"not a repository"), 16)

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press(key)
            if key == "b":
                await wait_screen(pilot, DiskPickerScreen)
                await pilot.press("enter")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url="s3://tuinet/other", aws_access_key_id=ACCESS_KEY,
                       aws_secret_access_key=SECRET_KEY, endpoint=seaweedfs.endpoint)
            await press_button(pilot, form, "use")
            await wait_for(pilot, lambda: words in outcome(form), 60, "the refusal")
            assert app.screen is form

    run(scenario())
    names = [o.object_name for o in seaweedfs.client().list_objects("tuinet", prefix="other/", recursive=True)]
    assert names == ["other/notes.txt"]                    # nothing was written there


@pytest.mark.parametrize("typed, words", [
    ("ftp://host/x", "Lifeboat knows folders and s3://"),
    ("sftp://host/backups", "say which user to log in as"),
    ("/media/usb", "is a folder, not a network location"),
])
def test_a_malformed_location_is_one_line(machine, netenv, typed, words):
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.place_picker import PlacePickerScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url=typed)
            await press_button(pilot, form, "test")
            await wait_for(pilot, lambda: words in outcome(form), 30, "the message")
            assert "\n" not in outcome(form)
            await pilot.press("escape")
            await wait_screen(pilot, PlacePickerScreen)

    run(scenario())


def test_an_unknown_ssh_server_is_a_question_showing_its_fingerprint(machine, netenv, sshd, monkeypatch):
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.question import QuestionDialog

    monkeypatch.setenv("LIFEBOAT_SSH_KEY", str(sshd.client_key))
    monkeypatch.delenv("LIFEBOAT_SSH_HOST_KEY", raising=False)
    (machine / "sftp-home").mkdir()
    url = f"sftp://root@127.0.0.1:{sshd.port}{machine / 'sftp-home' / 'repo'}"

    async def ask(pilot, form):
        await press_button(pilot, form, "test")
        dialog = await wait_screen(pilot, QuestionDialog, timeout=60)
        message = str(dialog.query_one("#message", Static).content)
        assert sshd.fingerprint() in message and f"127.0.0.1 port {sshd.port}" in message
        return dialog

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url=url)
            await ask(pilot, form)
            await pilot.press("escape")                                  # no
            await wait_for(pilot, lambda: "is not known yet" in outcome(form), 60, "the refusal")
            assert not (netenv / "known_hosts").exists()
            dialog = await ask(pilot, form)
            dialog.query_one("#yes").press()                             # trust it
            await wait_for(pilot, lambda: outcome(form).startswith("Works"), 60, "the location")
            assert outcome(form) == "Works: empty, a new repository will be made there."

    run(scenario())
    assert "127.0.0.1" in (netenv / "known_hosts").read_text()


# -- the Network screen -------------------------------------------------------------------------
async def open_network(app, pilot):
    from tui.screens.network import NetworkScreen

    await ready(pilot)
    await pilot.press("n")
    screen = await wait_screen(pilot, NetworkScreen)
    await wait_for(pilot, lambda: "Looking" not in str(screen.query_one("#interfaces", Static).content),
                   30, "the interfaces")
    return screen


def test_network_screen_lists_each_interface_and_refuses_off_the_live_system(machine, netenv):
    from recovery import network
    from tui.screens.home import HomeScreen

    found = network.interfaces()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            screen = await open_network(app, pilot)
            listed = str(screen.query_one("#interfaces", Static).content)
            for i in found:                        # read only: the machine's interfaces are not changed
                assert i.name in listed and i.describe() in listed
            if found:                              # proposed: the first with a cable in, else the first
                assert screen.query_one("#interface", Input).value == next(
                    (i.name for i in found if i.carrier), found[0].name)
            await fill(screen, pilot, address="192.0.2.300/24")
            await press_button(pilot, screen, "set")
            await wait_for(pilot, lambda: "not a usable address" in outcome(screen), 30, "the error")
            await fill(screen, pilot, address="192.0.2.20/24", gateway="198.51.100.1")
            await press_button(pilot, screen, "set")
            await wait_for(pilot, lambda: "is not in the network 192.0.2.0/24" in outcome(screen), 30, "the error")
            await fill(screen, pilot, gateway="192.0.2.1")
            await press_button(pilot, screen, "set")
            await wait_for(pilot, lambda: "only on the Lifeboat live system" in outcome(screen), 30, "the refusal")
            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)

    run(scenario())
    assert network.interfaces() == found


NETNS_VAR = "LIFEBOAT_TEST_IN_NETNS"


def _fixed_address_from_the_screen(machine, netenv, monkeypatch):
    """Run by the test below inside its network namespace (collected there only)."""
    from recovery import network

    monkeypatch.setattr(network, "STATUS_DIR", machine / "status")

    async def scenario():
        app = make_app(machine, live=True)
        async with app.run_test(size=(80, 25)) as pilot:
            screen = await open_network(app, pilot)
            assert "lbtest0" in str(screen.query_one("#interfaces", Static).content)
            await fill(screen, pilot, interface="nosuch9", address="192.0.2.20/24")
            await press_button(pilot, screen, "set")
            await wait_for(pilot, lambda: "there is no network interface 'nosuch9'" in outcome(screen), 30, "error")
            await fill(screen, pilot, interface="lbtest0", gateway="192.0.2.1", dns="192.0.2.53")
            await press_button(pilot, screen, "set")
            await wait_for(pilot, lambda: outcome(screen) == "lbtest0 now has 192.0.2.20/24 via 192.0.2.1.", 30,
                           "the address set")
            await wait_for(pilot, lambda: "192.0.2.20/24 via 192.0.2.1" in str(
                screen.query_one("#interfaces", Static).content), 30, "the listing updated")

    run(scenario())
    lb = {i.name: i for i in network.interfaces()}["lbtest0"]
    assert lb.addresses == ("192.0.2.20/24",) and lb.gateway == "192.0.2.1"
    assert Path("/etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"   # the namespace's own copy
    assert (machine / "status" / "lbtest0").read_text() == "192.0.2.20/24 192.0.2.1\n"


if os.environ.get(NETNS_VAR) == "1":       # only inside the namespace the test below makes
    test_in_netns_fixed_address_from_the_screen = _fixed_address_from_the_screen


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_network_screen_sets_a_fixed_address_in_a_namespace(tmp_path):
    """The screen applied for real, on a veth pair inside a network namespace made here (its
    own /etc/resolv.conf through /etc/netns): the machine's interfaces are never touched."""
    import uuid

    from tests.conftest import ROOT

    ns = f"lbtest-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc/netns") / ns
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("")
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "add", "lbtest0", "type", "veth", "peer", "name",
                        "lbtest1"], check=True)
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, os.sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--basetemp={tmp_path / 'inner'}", "tests/tui/test_tui_network.py::test_in_netns_fixed_address_from_the_screen"],
            cwd=ROOT, env={**os.environ, NETNS_VAR: "1"}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", str(etc)], check=False)


# -- an SSH server that takes a password ---------------------------------------------------------
def test_a_refused_password_is_asked_again_masked_and_cancel_leaves_cleanly(machine, netenv, password_sshd,
                                                                            monkeypatch):
    """Against a private sshd taking passwords only: the password typed in the form is refused,
    so a masked prompt asks again saying so; a second wrong one is refused again (try 3 of 3);
    the right one opens the location and is the one kept for the session. Then, for another
    location, Cancel on the prompt leaves the form with the engine's one line, nothing made."""
    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.password_prompt import PasswordPrompt

    monkeypatch.setenv("LIFEBOAT_SSH_HOST_KEY", password_sshd.fingerprint())
    monkeypatch.delenv("LIFEBOAT_SSH_KEY", raising=False)
    srv = machine / "sftp-srv"
    srv.mkdir()
    base = f"sftp://{PASSWORD_USER}@127.0.0.1:{password_sshd.port}"

    async def prompt_for(pilot, refused_line: str | None):
        dialog = await wait_screen(pilot, PasswordPrompt, timeout=60)
        field = dialog.query_one("#password", Input)
        assert field.password and dialog.focused is field                    # masked, ready to type
        said = dialog.query("#refused")
        if refused_line is None:
            assert not said
        else:
            assert refused_line in str(said.first(Static).content)
        return dialog

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            await pilot.press("n")
            form = await wait_screen(pilot, NetworkLocationScreen)
            await fill(form, pilot, url=f"{base}{srv / 'repo'}", lifeboat_password="wrong-1")
            await press_button(pilot, form, "test")
            await prompt_for(pilot, "the password is wrong. Type it again (try 2 of 3)")
            await pilot.press(*"wrong-2", "enter")
            dialog = await prompt_for(pilot, "(try 3 of 3)")
            assert "wrong-2" not in screen_text(app)
            dialog.query_one("#password", Input).value = PASSWORD
            dialog.query_one("#login").press()
            await wait_for(pilot, lambda: outcome(form).startswith("Works"), 60, "the login")
            assert outcome(form) == "Works: empty, a new repository will be made there."
            assert form.query_one("#lifeboat_password", Input).value == PASSWORD   # the one that worked
            assert PASSWORD not in screen_text(app)
            # Another place: the prompt's Cancel leaves the form with the refusal, nothing made.
            await fill(form, pilot, url=f"{base}{srv / 'other'}", lifeboat_password="wrong-3")
            await press_button(pilot, form, "test")
            dialog = await prompt_for(pilot, "(try 2 of 3)")
            dialog.query_one("#cancel").press()
            await wait_for(pilot, lambda: "refused the login" in outcome(form), 60, "the refusal")
            assert app.screen is form and "\n" not in outcome(form) and "wrong-3" not in outcome(form)
            # Three refusals in all end in the same line, without a fourth question.
            await press_button(pilot, form, "test")
            for n in (2, 3):
                await prompt_for(pilot, f"(try {n} of 3)")
                await pilot.press(*f"bad-{n}", "enter")
            await wait_for(pilot, lambda: "refused the login" in outcome(form), 60, "the last refusal")
            assert app.screen is form

    run(scenario())
    assert list(srv.iterdir()) == []                         # a test writes nothing
    assert not (netenv / "locations.json").exists()          # only Use it remembers
