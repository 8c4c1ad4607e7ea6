"""A network repository asked for on a machine with no network: inside a network namespace of
the test's own (only loopback, or one interface with an address and no route), each kind of
location is one plain line that names the cause a person can fix, exit 5, at once (never the
retry time, never the client's own words such as a name that does not resolve)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (network namespaces)")

# Addresses from the documentation ranges (192.0.2.0/24, 198.51.100.0/24): nothing answers there.
LOCATIONS = {
    "s3": ["s3://backups/pc", "--s3-endpoint", "http://192.0.2.10:9000"],
    "s3 at aws": ["s3://backups/pc"],
    "sftp": ["sftp://me@nas.example.com/srv/backups"],
    "nfs": ["nfs://192.0.2.10/export/backups"],
    "smb": ["smb://me@192.0.2.10/backups/pc"],
}


@pytest.fixture
def netns():
    name = f"lbtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def snapshots_in(ns: str, tmp_path, *where) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
           "LIFEBOAT_PASSWORD": "secret", "LIFEBOAT_DATA_DIR": str(tmp_path / "data"),
           "LIFEBOAT_RETRY_SECONDS": "300"}
    env.pop("LIFEBOAT_S3_ENDPOINT", None)
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "recovery", "snapshots",
                           "--repo", *where], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 5 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("kind", sorted(LOCATIONS))
def test_no_interface_with_an_address_is_said_for_every_kind(netns, tmp_path, kind):
    started = time.monotonic()
    line = one_line(snapshots_in(netns, tmp_path, *LOCATIONS[kind]))
    assert "this machine is not on a network" in line and "check the cable" in line, line
    assert "secret" not in line
    assert time.monotonic() - started < 60               # not retried as a server gone away


def test_an_address_without_a_route_says_the_network_is_unreachable(netns, tmp_path):
    """Connected (an address on a link) but nowhere to send: the S3 line says so, and does not
    claim the machine is off the network."""
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "add", "lbtest0", "type", "veth",
                    "peer", "name", "lbtest1"], check=True)
    for cmd in (["ip", "addr", "add", "192.0.2.1/24", "dev", "lbtest0"], ["ip", "link", "set", "lbtest0", "up"],
                ["ip", "link", "set", "lbtest1", "up"]):
        subprocess.run(["ip", "netns", "exec", netns, *cmd], check=True)
    line = one_line(snapshots_in(netns, tmp_path, "s3://backups/pc", "--s3-endpoint", "http://198.51.100.7:9000"))
    assert "network is unreachable" in line and "not on a network" not in line, line
