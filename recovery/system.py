"""Power and shell actions of the live system (the TUI's Shell, Reboot and Power off).

Only on the Lifeboat live system (LIFEBOAT_LIVE=1): run anywhere else, the same buttons
would shut down a developer's own machine.
"""

from __future__ import annotations

import os
from recovery.errors import RefusedError
from recovery.host import tools


def is_live() -> bool:
    return os.environ.get("LIFEBOAT_LIVE") == "1"


def _require_live(what: str) -> None:
    if not is_live():
        raise RefusedError(f"{what} is only available on the Lifeboat live system")


def shell() -> int:
    """An interactive root shell on the current terminal; returns when it exits."""
    _require_live("the shell")
    print("\nLifeboat shell. Type 'exit' to go back to Lifeboat.\n", flush=True)
    return tools.interactive([os.environ.get("SHELL", "/bin/bash"), "-l"])


def _power(command: str) -> None:
    _require_live(command)
    os.sync()
    # busybox's poweroff/reboot signal init, which runs the shutdown script (unmounts)
    # before switching off.
    tools.interactive([command])


def reboot() -> None:
    _power("reboot")


def poweroff() -> None:
    _power("poweroff")
