"""This machine's network as a repository on the network needs it: the IPv4 addresses of its
interfaces, and a bounded wait for one (the live system asks DHCP in the background while it
boots: iso-build/rootfs/usr/lib/lifeboat/net-up)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from recovery.errors import RefusedError
from recovery.host import tools

NETWORK_WAIT_SECONDS = 60


@dataclass(frozen=True)
class Address:
    interface: str
    cidr: str            # "192.168.1.20/24"


def addresses() -> list[Address]:
    """IPv4 addresses of every interface but loopback (empty when `ip` is missing or says nothing)."""
    try:
        proc = tools.run(["ip", "-j", "-4", "addr", "show"], check=False, timeout=10)
        entries = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    except (OSError, ValueError):
        return []
    found = []
    for entry in entries:
        if entry.get("ifname") == "lo" or "LOOPBACK" in entry.get("flags", []):
            continue
        for info in entry.get("addr_info", []):
            if info.get("family") == "inet" and info.get("local"):
                found.append(Address(entry["ifname"], f"{info['local']}/{info.get('prefixlen', 32)}"))
    return found


def wait_for_address(say, seconds: float = NETWORK_WAIT_SECONDS) -> list[Address]:
    """Wait until some interface has an address; RefusedError naming the remedy when none
    comes in time."""
    deadline = time.monotonic() + seconds
    told = False
    while True:
        found = addresses()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise RefusedError(f"no network: no wired interface got an address in {round(seconds)} s; "
                               "check the cable, or give a fixed one with lifeboat.net=ADDRESS/PREFIX,GATEWAY,DNS")
        if not told:
            say("lifeboat: waiting for the network (DHCP)")
            told = True
        time.sleep(1)
