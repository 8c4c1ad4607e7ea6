"""A fixed address set by hand (the Network screen's engine part) on a real interface: a veth
pair the test makes inside a network namespace of its own, so the machine's own interfaces and
routes are never touched. The addresses are from 192.0.2.0/24 (kept for documentation); a veth
with no peer beyond the namespace sends nothing anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (network namespaces)")


@pytest.fixture
def netns():
    name = f"lbtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "lbtest0", "type", "veth",
                        "peer", "name", "lbtest1"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lbtest1", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_ns(ns: str, code: str) -> subprocess.CompletedProcess:
    """Run engine code inside the namespace (its `ip` sees only the test's interfaces)."""
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def listing(ns: str) -> dict:
    out = in_ns(ns, "import json; from recovery import network as n; "
                    "print(json.dumps({i.name: [list(i.addresses), i.gateway, i.describe()] for i in n.interfaces()}))")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def set_fixed(ns: str, tmp_path, *args) -> subprocess.CompletedProcess:
    call = ", ".join(repr(a) for a in args)
    return in_ns(ns, "import sys; from pathlib import Path; from recovery import network as n; "
                     "from recovery.errors import LifeboatError\n"
                     f"try: n.set_fixed_address({call}, resolv_conf=Path({str(tmp_path / 'resolv.conf')!r}), "
                     f"status_dir=Path({str(tmp_path / 'status')!r}))\n"
                     "except LifeboatError as e: print(e.message, file=sys.stderr); sys.exit(e.exit_code)")


def test_fixed_address_gateway_and_dns_on_a_real_interface(netns, tmp_path):
    before = listing(netns)
    assert before["lbtest0"][0] == [] and before["lbtest0"][1] is None
    out = set_fixed(netns, tmp_path, "lbtest0", "192.0.2.20/24", "192.0.2.1", "192.0.2.53")
    assert out.returncode == 0, out.stderr
    after = listing(netns)
    assert after["lbtest0"][:2] == [["192.0.2.20/24"], "192.0.2.1"]
    assert after["lbtest0"][2] == "192.0.2.20/24 via 192.0.2.1"
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert (tmp_path / "status" / "lbtest0").read_text() == "192.0.2.20/24 192.0.2.1\n"
    # A second fixed address replaces the first (not added beside it).
    out = set_fixed(netns, tmp_path, "lbtest0", "192.0.2.30/25", "", "")
    assert out.returncode == 0, out.stderr
    assert listing(netns)["lbtest0"][0] == ["192.0.2.30/25"]


@pytest.mark.parametrize("args, words", [
    (("lbtest0", "192.0.2.20", "", ""), "write ADDRESS/PREFIX"),
    (("lbtest0", "192.0.2.300/24", "", ""), "not a usable address"),
    (("lbtest0", "192.0.2.0/24", "", ""), "the network itself"),
    (("lbtest0", "192.0.2.20/24", "198.51.100.1", ""), "not in the network 192.0.2.0/24"),
    (("lbtest0", "192.0.2.20/24", "192.0.2.1", "dns.example"), "not a usable DNS server"),
    (("nosuch9", "192.0.2.20/24", "", ""), "there is no network interface 'nosuch9'"),
])
def test_bad_values_are_one_plain_line_and_change_nothing(netns, tmp_path, args, words):
    out = set_fixed(netns, tmp_path, *args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert listing(netns)["lbtest0"][0] == []
    assert not (tmp_path / "resolv.conf").exists()
