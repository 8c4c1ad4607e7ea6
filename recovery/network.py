"""This machine's network as a repository on the network needs it: the IPv4 addresses of its
interfaces, and a bounded wait for one (the live system asks DHCP in the background while it
boots: iso-build/rootfs/usr/lib/lifeboat/net-up); for the Network screen, each interface with
its gateway, and a fixed address set by hand."""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import LifeboatError, RefusedError, ToolError, UsageError
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


OFFLINE = ("this machine is not on a network (no interface has an address): check the cable; the "
           "Network screen (key n on the home screen) shows each interface and sets a fixed address")


def offline() -> str | None:
    """Why no server beyond this machine can be reached at all, in one line: no interface but
    loopback has an address (IPv4, or IPv6 beyond the link). None when one has, or when `ip`
    cannot say. Asked only once a connection failed, to name the cause a person can fix."""
    try:
        proc = tools.run(["ip", "-j", "addr", "show"], check=False, timeout=10)
        entries = json.loads(proc.stdout or "[]") if proc.returncode == 0 else None
    except (OSError, ValueError, LifeboatError):
        return None
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if entry.get("ifname") == "lo" or "LOOPBACK" in entry.get("flags", []):
            continue
        for info in entry.get("addr_info", []):
            if info.get("family") == "inet" or (info.get("family") == "inet6" and info.get("scope") == "global"):
                return None
    return OFFLINE


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


# -- the Network screen: what each interface has, and a fixed address set by hand ----------------
STATUS_DIR = Path("/run/lifeboat/network")


@dataclass(frozen=True)
class Interface:
    name: str
    up: bool                      # the link is up
    carrier: bool                 # a cable is in (the link has a carrier)
    addresses: tuple[str, ...]    # IPv4 "ADDRESS/PREFIX"
    gateway: str | None           # the default route through it

    def describe(self) -> str:
        """One line for a person: its address and gateway, or why it has none."""
        if self.addresses:
            text = ", ".join(self.addresses)
            return text + (f" via {self.gateway}" if self.gateway else " (no gateway)")
        if not self.carrier:
            return "no cable"
        return "DHCP…" if self.up else "down"


def _ip_json(args: list[str]) -> list:
    try:
        proc = tools.run(["ip", "-j", *args], check=False, timeout=10)
        return json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    except (OSError, ValueError, LifeboatError):
        return []


def gateways() -> dict[str, str]:
    """Interface name -> the gateway of its default route (IPv4), from `ip -j route`."""
    found: dict[str, str] = {}
    for route in _ip_json(["-4", "route", "show", "default"]):
        if route.get("gateway") and route.get("dev"):
            found.setdefault(route["dev"], route["gateway"])
    return found


def interfaces() -> list[Interface]:
    """Every interface but loopback, with its IPv4 addresses and default gateway."""
    routes = gateways()
    found = []
    for entry in _ip_json(["addr", "show"]):
        name = entry.get("ifname", "")
        if name == "lo" or "LOOPBACK" in entry.get("flags", []):
            continue
        flags = entry.get("flags", [])
        cidrs = tuple(f"{i['local']}/{i.get('prefixlen', 32)}" for i in entry.get("addr_info", [])
                      if i.get("family") == "inet" and i.get("local"))
        found.append(Interface(name, "UP" in flags, "NO-CARRIER" not in flags and "UP" in flags,
                               cidrs, routes.get(name)))
    return found


def _address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise UsageError(f"{text.strip()!r} is not a usable {what}: write it as four numbers, like 192.168.1.1") from None


@dataclass(frozen=True)
class FixedAddress:
    interface: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    dns: tuple[ipaddress.IPv4Address, ...]


def check_fixed_address(interface: str, cidr: str, gateway: str = "", dns: str = "") -> FixedAddress:
    """The values of a fixed address, checked (UsageError, one line, for the first bad one)."""
    names = {i.name for i in interfaces()}
    if interface not in names:
        raise UsageError(f"there is no network interface {interface!r} (there are: {', '.join(sorted(names)) or 'none'})")
    text = cidr.strip()
    if "/" not in text:
        raise UsageError(f"{text!r} is not a usable address: write ADDRESS/PREFIX, like 192.168.1.20/24")
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a usable address: write ADDRESS/PREFIX, like 192.168.1.20/24") from None
    if iface.network.prefixlen < 31 and iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise UsageError(f"{text} names the network itself or its broadcast address, not a machine on it")
    gw = _address(gateway, "gateway") if gateway.strip() else None
    if gw is not None and gw not in iface.network:
        raise UsageError(f"the gateway {gw} is not in the network {iface.network} of the address")
    servers = tuple(_address(s, "DNS server") for s in dns.replace(",", " ").split())
    return FixedAddress(interface, iface, gw, servers)


def set_fixed_address(interface: str, cidr: str, gateway: str = "", dns: str = "",
                      resolv_conf: Path = Path("/etc/resolv.conf"), status_dir: Path | None = None) -> None:
    """Give `interface` the fixed IPv4 address `cidr` ("ADDRESS/PREFIX") in place of what it had,
    `gateway` as the default route and `dns` as the name server, as lifeboat.net= does at boot.
    UsageError for a malformed value (nothing is changed then); ToolError when `ip` refuses."""
    fixed = check_fixed_address(interface, cidr, gateway, dns)
    iface, gw, servers = fixed.address, fixed.gateway, fixed.dns
    steps = [["ip", "link", "set", interface, "up"],
             ["ip", "-4", "addr", "flush", "dev", interface],
             ["ip", "addr", "add", str(iface), "dev", interface]]
    if gw is not None:
        steps.append(["ip", "route", "replace", "default", "via", str(gw), "dev", interface])
    for args in steps:
        proc = tools.run(args, check=False, timeout=10)
        if proc.returncode != 0:
            raise ToolError(f"setting the address of {interface} failed: {' '.join(args)}: "
                            f"{tools.last_line(proc.stderr or proc.stdout)}")
    if servers:
        try:
            resolv_conf.write_text("".join(f"nameserver {s}\n" for s in servers))
        except OSError as exc:
            raise ToolError(f"cannot write the name server to {resolv_conf}: {exc.strerror}") from exc
    try:
        status_dir = status_dir or STATUS_DIR
        status_dir.mkdir(parents=True, exist_ok=True)
        (status_dir / interface).write_text(f"{iface} {gw or ''}\n")
    except OSError:
        pass                        # only the live system's boot status; the address is set
