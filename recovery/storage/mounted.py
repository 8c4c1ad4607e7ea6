"""sftp://, smb:// and nfs:// repositories: the place is mounted with the system's own client
(sshfs over OpenSSH, the kernel's cifs and nfs), and is then a local folder.

Why mounts: sshfs and the kernel clients are C, fast, and maintained with the systems that
serve them; on the live system they cost ~0.2 MB (sshfs) plus the OpenSSH client, against
~15 MB for paramiko and its cryptography wheels. What a mount changes for the repository:
a dropped connection shows as EIO/ENOTCONN, so each call is retried for a bounded time
(storage/retry.py), and objects are gathered in memory and written whole, so a write cut
in the middle is simply made again.

SFTP trusts only host keys kept in DATA_DIR/known_hosts: a server not in it has its key's
fingerprint shown and is used only once the person accepts it (or LIFEBOAT_SSH_HOST_KEY
names that fingerprint, for unattended use). The password comes from LIFEBOAT_PASSWORD or is
asked on the terminal; a key from LIFEBOAT_SSH_KEY or the usual ~/.ssh files.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from recovery.errors import NoSpaceError, RefusedError, RepositoryError
from recovery.host import netmounts
from recovery.storage import stall
from recovery.storage.base import BufferWriter, NoPermissionError, ObjectInfo, StorageError, UnreachableError
from recovery.storage.local import FULL, LocalStorage
from recovery.storage.location import Location
from recovery.storage.retry import Retrier

log = logging.getLogger(__name__)

# Set by the user interface: ask_host_key(server, fingerprints) -> accept?;
# ask_password(prompt, who="user@host", refused=passwords refused so far) -> str (None or
# empty: the person gave up). A refused password is asked again, PASSWORD_TRIES in all.
PASSWORD_TRIES = 3
ask_host_key: Callable[[str, list[str]], bool] | None = None
ask_password: Callable[..., str | None] | None = None

# The kernel's own restart codes (ERESTARTSYS and kin, 512-516) reach a program when an NFS
# request is ended by a forced unmount (storage/stall.py): a request cut off, read as EIO.
_CUT_OFF = {512, 513, 514, 516}
_TRANSIENT = {errno.EIO, errno.ENOTCONN, errno.ECONNABORTED, errno.ECONNRESET, errno.ETIMEDOUT,
              errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ESTALE} | _CUT_OFF
_mounted: dict[str, "MountedStorage"] = {}
_lock = threading.Lock()


def data_dir() -> Path:
    """Where Lifeboat keeps what it must remember (known SSH host keys): LIFEBOAT_DATA_DIR
    (on the live system, the stick's data partition), else /var/lib/lifeboat as root."""
    env = os.environ.get("LIFEBOAT_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/lifeboat")
    return Path.home() / ".local" / "share" / "lifeboat"


def _mount_root() -> Path:
    root = Path("/run/lifeboat/net") if os.geteuid() == 0 else Path(tempfile.gettempdir()) / "lifeboat-net"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _transient(exc) -> bool:
    if isinstance(exc, NoSpaceError):
        return False             # full, whatever the mount said first: no waiting makes room
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _TRANSIENT:
            return True
        seen = seen.__cause__
    return False


class MountedStorage(LocalStorage):
    parallelism = 8
    remote = True
    atomic_create = False     # O_EXCL is only as good as the server's and the client's support
    # A server's refusals: EACCES (a share or folder this account may not write) and EROFS (an
    # export served read-only); not EPERM, which sshfs also gives for SFTP's bare "failure", a
    # full disk among others.
    refusals = (errno.EACCES, errno.EROFS)

    def __init__(self, loc: Location, mountpoint: Path, folder: Path):
        super().__init__(folder)
        self.loc = loc
        self.mountpoint = mountpoint
        self.retrier = Retrier()
        self.retrier.reached = True          # mounting it needed the server
        self._inflight = 0                   # bytes of the writes under way
        self._inflight_lock = threading.Lock()
        self.watch: stall.StallWatch | None = None
        self._pin: int | None = None
        self._let_go = False                 # let_go(): detached after its server held calls for good
        if loc.scheme == "nfs":
            # the one client here whose requests can wait for ever (see storage/stall.py). The
            # mount is held open, so a forced unmount only ends the requests waiting on it,
            # never takes it away (the calls after it would write into the folder beneath).
            self._pin = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            window = self.retrier.seconds + stall.stall_seconds()
            self.watch = stall.StallWatch(lambda: stall.nfs_replies(mountpoint), self._cut,
                                          give_up=self._held, give_up_after=window, held=stall.threads_in_nfs)

    # -- where ---------------------------------------------------------------------------
    def describe(self) -> str:
        return self.loc.display()

    def where(self, name: str) -> str:
        return f"{self.loc.display()}/{name}"

    @classmethod
    def mount(cls, loc: Location) -> "MountedStorage":
        key = loc.display()
        with _lock:
            known = _mounted.get(key)
            if known is not None and os.path.ismount(known.mountpoint):
                return known
            tag = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
            mountpoint = _mount_root() / f"{loc.scheme}-{tag}-{os.getpid()}"
            if os.path.ismount(mountpoint):
                netmounts.unmount(mountpoint)
            try:
                folder = _mount(loc, mountpoint)
            except BaseException:
                # A refused or failed mount leaves no empty folder behind (one per attempt).
                if not os.path.ismount(mountpoint):
                    with contextlib.suppress(OSError):
                        mountpoint.rmdir()
                raise
            storage = cls(loc, mountpoint, folder)
            _mounted[key] = storage
            return storage

    # -- the server refuses this account ---------------------------------------------
    def _no_permission(self, action: str, exc) -> NoPermissionError:
        """The server let us in but refuses to read or write the repository's folder (EACCES:
        sshfs's answer to SFTP's "permission denied", the kernel clients' to a refusal)."""
        loc = self.loc
        place = f"/{loc.share}/{loc.path}".rstrip("/") if loc.scheme == "smb" else (loc.path or "~")
        said = os.strerror(_errno(exc)).lower()
        if loc.user:
            fix = (f"{loc.user} may log in but not {action} there ({said}); ask the server's administrator "
                   f"to let {loc.user} {action} that folder, or choose one {loc.user} may {action}")
        else:
            fix = (f"the export does not let this machine {action} there ({said}); check the export's "
                   "rights on the server (root squash), or choose another folder")
        return NoPermissionError(f"no permission to {action} {place} on {loc.host}: {fix}")

    def _checked(self, action: str, fn):
        try:
            return fn()
        except (RepositoryError, OSError) as exc:
            if _denied(exc):
                raise self._no_permission(action, exc) from exc
            raise

    def check_new(self, config_name: str) -> None:
        self._checked("read", lambda: self._watched(lambda: super(MountedStorage, self).check_new(config_name)))

    def make_folders(self, names) -> None:
        self._checked("write", lambda: self._watched(lambda: super(MountedStorage, self).make_folders(names)))

    def check_present(self, config_name: str) -> None:
        self._checked("read", lambda: self._watched(lambda: super(MountedStorage, self).check_present(config_name)))

    # -- a server that stopped answering ---------------------------------------------
    def _watched(self, fn):
        if self.watch is None:
            return fn()
        with self.watch.call():
            return fn()

    # calls that answer for themselves when the server is away, watched all the same
    def place_problem(self) -> str | None:
        return self._watched(super().place_problem)

    def missing_folders(self, names) -> list[str]:
        return self._watched(lambda: super(MountedStorage, self).missing_folders(names))

    def remove_folder(self, prefix: str) -> None:
        self._watched(lambda: super(MountedStorage, self).remove_folder(prefix))

    def free_space(self) -> int | None:
        return self._watched(super().free_space)

    def scratch_clean(self, keep=None) -> None:
        self._watched(lambda: super(MountedStorage, self).scratch_clean(keep))

    def _held(self, waited: float) -> None:
        """The server has held our calls past every window and the kernel does not let go."""
        self.retrier.gave_up = True
        error = self._unreachable("no answer, and the system's NFS client still waits on it", waited)
        log.error("%s", error.message)
        if stall.on_give_up is not None:
            let_go_all()                 # whatever the program does next, no call waits on them again
            stall.on_give_up(error.message)

    def _cut(self) -> None:
        """The watch saw our calls wait on a silent server: end them (EIO); the mount stays."""
        netmounts.force_unmount(self.mountpoint)

    # -- every call retried while the connection is away -------------------------------
    def _again(self, fn, action: str = "read"):
        return self._checked(action, lambda: self._retried(fn))

    def _unreachable(self, why: str, waited: float) -> UnreachableError:
        head = f"{self.loc.display()} stopped answering ({why}); gave up after {int(waited)} s"
        return UnreachableError(f"{head} — nothing already saved is lost; run it again when the server is "
                                "back (LIFEBOAT_RETRY_SECONDS sets how long to wait)", head)

    def _retried(self, fn):
        def fail(exc, waited):
            return self._unreachable(os.strerror(_errno(exc)), waited)

        def attempt():
            try:
                return self._watched(fn)
            except Exception as exc:
                if _transient(exc):
                    self._forget_fds()       # descriptors from before a reconnect are dead
                raise

        return self.retrier.call(attempt, _transient, fail)

    def _forget_fds(self) -> None:
        with self._fd_lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self._again(lambda: super(MountedStorage, self).list(prefix))

    def read(self, name, offset=0, length=None) -> bytes:
        return self._again(lambda: super(MountedStorage, self).read(name, offset, length))

    def read_into(self, name, offset, view) -> int:
        return self._again(lambda: super(MountedStorage, self).read_into(name, offset, view))

    def size(self, name) -> int:
        return self._again(lambda: super(MountedStorage, self).size(name))

    def write(self, name, data) -> None:
        def attempt():
            with self._inflight_lock:
                self._inflight += len(data)
            try:
                super(MountedStorage, self).write(name, data)
            except StorageError as exc:
                # SFTP has no "disk full" answer: OpenSSH's server says only "failure", which
                # sshfs hands on as EIO (or EPERM), and EIO is also what a dropped connection
                # gives. The server, asked how much room is left, tells the two apart: when the
                # writes under way (several packs go up at once) do not fit in it, the place is
                # full, said at once instead of being retried as a server gone away.
                if _errno(exc) in (errno.EIO, errno.EPERM) and self._too_full():
                    raise NoSpaceError(FULL) from exc
                raise
            finally:
                with self._inflight_lock:
                    self._inflight -= len(data)

        self._again(attempt, "write")

    def write_new(self, name, data) -> bool:
        return self._again(lambda: super(MountedStorage, self).write_new(name, data), "write")

    def _too_full(self) -> bool:
        try:
            free = self.free_space()
        except OSError:
            return False                  # the server is away: not a question of room
        with self._inflight_lock:
            wanted = self._inflight
        return free is not None and free < wanted + (1 << 20)

    def create(self) -> BufferWriter:
        return BufferWriter(self)

    def delete(self, name) -> None:
        self._again(lambda: super(MountedStorage, self).delete(name), "write")

    def read_back_digest(self, name) -> bytes:
        return self._again(lambda: super(MountedStorage, self).read_back_digest(name))

    def read_back(self, name, size=None) -> tuple[bytes, bytes]:
        return self._again(lambda: super(MountedStorage, self).read_back(name, size))

    def read_back_samples(self, name, size) -> bytes:
        return self._again(lambda: super(MountedStorage, self).read_back_samples(name, size))

    def let_go(self) -> None:
        """Detach the place and leave its open files as they are: a thread the kernel holds
        there may hold the descriptors' lock, and closing one would ask the server again."""
        self._let_go = True
        self._fds = {}
        if self.watch is not None:
            self.watch.halt()            # called from the watch's own thread: not joined
        netmounts.force_unmount(self.mountpoint, detach=True)

    def close(self) -> None:
        if not self._let_go:
            super().close()

    def unmount(self) -> None:
        if self._let_go:
            return                       # detached already; its files left as they are
        self.close()
        with _lock:
            _mounted.pop(self.loc.display(), None)
        if self.watch is not None:
            self.watch.stop()
        if self._pin is not None:
            os.close(self._pin)
            self._pin = None
        # after the server stopped answering, a plain unmount would wait on it to write back
        forced = self.retrier.gave_up or (self.watch is not None and self.watch.cuts > 0)
        netmounts.unmount(self.mountpoint, force=forced)


def _denied(exc) -> bool:
    """A refusal of the server's (MountedStorage.refusals), wherever it is in the chain (a
    chain without an errno reads as EIO, which is none)."""
    return _errno(exc) in MountedStorage.refusals


def _errno(exc) -> int:
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return errno.EIO if seen.errno in _CUT_OFF else seen.errno
        seen = seen.__cause__
    return errno.EIO


def _split(path: str) -> tuple[str, str]:
    """(folder to mount, the repository's folder inside it): the parent is mounted, so a new
    repository's last folder can be created as on a local disk."""
    path = path.rstrip("/")
    if not path:
        return "", ""
    parent, _, last = path.rpartition("/")
    return parent or "/", last


def _mount(loc: Location, mountpoint: Path) -> Path:
    if loc.scheme == "sftp":
        parent, last = _split(loc.path)
        _sftp(loc, parent, mountpoint)
        return mountpoint / last if last else mountpoint
    if loc.scheme == "smb":
        netmounts.cifs(loc.host, loc.share, mountpoint, loc.user, loc.domain, os.environ.get("LIFEBOAT_PASSWORD"))
        return mountpoint / loc.path if loc.path else mountpoint
    parent, last = _split(loc.path)
    netmounts.nfs(loc.host, parent, mountpoint, loc.port)
    return mountpoint / last


def _sftp(loc: Location, path: str, mountpoint: Path) -> None:
    port = loc.port or 22
    known_hosts = data_dir() / "known_hosts"
    scanned = netmounts.scan_host_keys(loc.host, port)
    accepted = set(netmounts.known_keys(known_hosts, loc.host, port))
    offered = {" ".join(line.split()[1:3]) for line in scanned}
    if not accepted & offered:
        prints = netmounts.fingerprints(scanned)
        server = f"{loc.host} port {port}" if port != 22 else loc.host
        if accepted:
            raise RefusedError(f"the SSH server {server} shows a different host key from the one accepted "
                               "before: someone may be intercepting the connection; if the server was "
                               f"reinstalled, remove its line from {known_hosts} and accept the new key")
        wanted = os.environ.get("LIFEBOAT_SSH_HOST_KEY", "").strip()
        ok = bool(wanted) and any(p.split()[0] == wanted for p in prints)
        if not ok and ask_host_key is not None:
            ok = ask_host_key(server, prints)
        if not ok:
            raise RefusedError(f"the SSH server {server} is not known yet; its host key is {', '.join(prints)} — "
                               "check that with the server's administrator, then accept it on a terminal, or "
                               "set LIFEBOAT_SSH_HOST_KEY to that SHA256 fingerprint")
        netmounts.remember_keys(known_hosts, loc.host, port, scanned)
    password = os.environ.get("LIFEBOAT_PASSWORD")
    key = os.environ.get("LIFEBOAT_SSH_KEY")
    tried = 0                     # passwords the server refused
    while True:
        try:
            netmounts.sshfs(loc.user, loc.host, port, path, mountpoint, known_hosts, password, key)
            break
        except StorageError as exc:
            if "refused the login" not in exc.message:
                raise
            tried += password is not None
            if ask_password is None or tried >= PASSWORD_TRIES:
                raise
            # A person is there: ask (again), saying why when a password was refused.
            prompt = f"password for {loc.user}@{loc.host}: "
            if tried:
                prompt = f"the SSH server refused the login of {loc.user} (try {tried + 1} of {PASSWORD_TRIES}); " + prompt
            answer = ask_password(prompt, who=f"{loc.user}@{loc.host}", refused=tried)
            if not answer:             # gave up: the refusal stands, nothing was done
                raise
            password = answer
    if password is not None and password != os.environ.get("LIFEBOAT_PASSWORD"):
        # The password that worked serves the rest of this session (a reconnect, the next
        # mount of the same place); it lives in this process's environment only.
        os.environ["LIFEBOAT_PASSWORD"] = password


def let_go_all() -> None:
    """When a server holds calls for good (stall.on_give_up), before the process ends at once or
    the app goes on without its places: each detached, forced, and forgotten, with no call on
    its server (closing a file there could wait on it again)."""
    with _lock:
        held = list(_mounted.values())
        _mounted.clear()                 # a later use mounts the place afresh
    for storage in held:
        storage.let_go()


@atexit.register
def _unmount_all() -> None:
    for storage in list(_mounted.values()):
        try:
            storage.unmount()
        except Exception:              # noqa: BLE001 - leaving; nothing more to do
            pass
