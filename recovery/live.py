"""Unattended restore on the live system, driven by the kernel command line.

A technician (or a test) boots the ISO with, for example::

    lifeboat.repo=LABEL=BACKUPS:/lifeboat lifeboat.snapshot=latest
    lifeboat.target=SERIAL123 lifeboat.yes=1 lifeboat.then=poweroff

(``lifeboat.name=PC`` picks the computer when the repository keeps several; ``latest`` is
otherwise the newest snapshot of the target disk's own serial, or of the only computer.)

The repository may be on the network (``lifeboat.repo=sftp://…``, ``smb://…``, ``nfs://…``,
``s3://…``): the live system brings wired Ethernet up by DHCP as it boots (or as
``lifeboat.net=`` says), and the secrets come from a file on a labelled partition,
``lifeboat.secrets=LABEL=KEYS:/lifeboat-secrets``, never from the command line: one
``NAME=value`` a line, NAME one of SECRET_NAMES.

An encrypted repository's passphrase is read from a file on a filesystem named the same way
(``lifeboat.passphrase=LABEL=KEYS:/lifeboat/passphrase.txt``: its first line), mounted
read-only just long enough to read it; it never travels on the command line. Without it, the
passphrase is asked on the console (masked), or the restore stops with one line.

The live system's init runs ``lifeboat live``: it finds and mounts (read-only) the filesystem
holding the repository, restores through the engine API, and prints one line on every
console::

    LIFEBOAT-RESULT ok snapshot=<id> target=<dev> seconds=<n>
    LIFEBOAT-RESULT error <plain message>

then powers off, reboots or leaves the consoles to a shell, as ``lifeboat.then`` says.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import Cancelled, DiskError, LifeboatError, RefusedError, UsageError
from recovery.host import mounts as host_mounts, tools

THEN_CHOICES = ("poweroff", "reboot", "shell")
LAYOUT_CHOICES = ("keep", "grow", "proportional")
RUN_DIR = Path("/run/lifeboat")
DEVICE_WAIT_SECONDS = 30


@dataclass(frozen=True)
class RepoLocator:
    """Which filesystem holds the repository, and where inside it."""

    kind: str        # "label", "uuid", "device", or "url" (a network location)
    value: str       # the label, the UUID, the device path or the URL
    path: str        # absolute path inside that filesystem ("" for a URL)

    def describe(self) -> str:
        if self.kind == "url":
            return f"the network repository {self.value}"
        what = {"label": f"the filesystem labelled {self.value!r}",
                "uuid": f"the filesystem with UUID {self.value}",
                "device": self.value}[self.kind]
        return f"{what}, folder {self.path}"


@dataclass(frozen=True)
class LiveRequest:
    repo: RepoLocator
    target: str
    snapshot: str = "latest"
    layout: str = "grow"
    yes: bool = False
    then: str = "shell"
    name: str | None = None      # the computer whose backups to use (needed when several are kept)
    secrets: RepoLocator | None = None   # a file of NAME=value lines on a partition (network secrets)
    passphrase: RepoLocator | None = None   # the file holding an encrypted repository's passphrase


# ----------------------------------------------------------------------------- parsing


def split_cmdline(text: str) -> list[str]:
    """Split a kernel command line the way the kernel does: on blanks, except inside
    double quotes, which are dropped (``a="b c"`` is one parameter ``a=b c``)."""
    params, cur, quoted, started = [], [], False, False
    for ch in text.strip():
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                params.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        params.append("".join(cur))
    return params


def lifeboat_params(text: str) -> dict[str, str]:
    """The ``lifeboat.*`` parameters, without the prefix; a later one wins, as in the kernel."""
    out = {}
    for param in split_cmdline(text):
        key, eq, value = param.partition("=")
        if key.startswith("lifeboat."):
            out[key[len("lifeboat."):]] = value if eq else "1"
    return out


def parse_repo_locator(text: str, param: str = "lifeboat.repo") -> RepoLocator:
    """``LABEL=NAME:/path``, ``UUID=...:/path`` or ``/dev/...:/path``; no path means the
    filesystem's top folder. For lifeboat.repo also a network location (``s3://``, ...)."""
    from recovery.storage import location

    if not text:
        raise UsageError(f"{param} is empty; give LABEL=NAME:/path, UUID=...:/path or /dev/...:/path")
    if param == "lifeboat.repo" and location.is_url(text):
        try:
            location.parse(text)             # a mistyped URL is refused here, before anything
        except UsageError as exc:
            raise UsageError(f"{param}: {exc.message}") from None
        return RepoLocator("url", text, "")
    # The first ":/" separates the two halves: by-id device names may contain ':' but
    # never ":/".
    where, sep, path = text.partition(":/")
    path = "/" + path if sep else "/"
    path = os.path.normpath(path)
    if where.upper().startswith("LABEL="):
        kind, value = "label", where[6:]
    elif where.upper().startswith("UUID="):
        kind, value = "uuid", where[5:].lower()
    elif where.startswith("/dev/"):
        kind, value = "device", where
    else:
        raise UsageError(
            f"{param}={text} is not understood; give LABEL=NAME:/path, UUID=...:/path or /dev/...:/path")
    if not value:
        raise UsageError(f"{param}={text} names no filesystem")
    return RepoLocator(kind, value, path)


def parse_yes(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "true", "y"):
        return True
    if v in ("0", "no", "false", "n", ""):
        return False
    raise UsageError(f"lifeboat.yes={value} is not understood; use lifeboat.yes=1")


def parse_request(cmdline: str) -> LiveRequest | None:
    """The unattended restore the command line asks for, or None when it asks for none."""
    p = lifeboat_params(cmdline)
    if "repo" not in p:
        return None
    repo = parse_repo_locator(p["repo"])
    target = p.get("target", "").strip()
    if not target:
        raise UsageError("lifeboat.target is missing: name the disk to restore onto "
                         "(a /dev path, a /dev/disk/by-id name or a serial number)")
    snapshot = p.get("snapshot", "latest").strip() or "latest"
    layout = p.get("layout", "grow").strip().lower() or "grow"
    if layout not in LAYOUT_CHOICES:
        raise UsageError(f"lifeboat.layout={layout} is not one of {', '.join(LAYOUT_CHOICES)}")
    then = p.get("then", "shell").strip().lower() or "shell"
    if then not in THEN_CHOICES:
        raise UsageError(f"lifeboat.then={then} is not one of {', '.join(THEN_CHOICES)}")
    name = p.get("name", "").strip() or None
    secrets = parse_repo_locator(p["secrets"], "lifeboat.secrets") if p.get("secrets") else None
    if secrets is not None and secrets.path == "/":
        raise UsageError(f"lifeboat.secrets={p['secrets']} names no file; give LABEL=NAME:/path/to/file")
    passphrase = parse_passphrase_locator(p["passphrase"]) if "passphrase" in p else None
    return LiveRequest(repo, target, snapshot, layout, parse_yes(p.get("yes", "0")), then, name,
                       secrets=secrets, passphrase=passphrase)


# What a secrets file may set: the names the storage layer reads for each protocol.
SECRET_NAMES = ("LIFEBOAT_PASSWORD", "LIFEBOAT_SSH_KEY", "LIFEBOAT_SSH_HOST_KEY", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LIFEBOAT_S3_ENDPOINT", "LIFEBOAT_S3_REGION",
                "LIFEBOAT_S3_PATH_STYLE", "LIFEBOAT_S3_VIRTUAL_HOST")


def parse_secrets(text: str, where: str) -> dict[str, str]:
    """NAME=value lines (blank lines and # comments skipped). A line that is not understood is
    named by its number only: its value may be a secret."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or name not in SECRET_NAMES:
            raise UsageError(f"line {number} of {where} is not NAME=value with NAME one of {', '.join(SECRET_NAMES)}")
        found[name] = value.strip()
    return found


def parse_passphrase_locator(text: str) -> RepoLocator:
    """``LABEL=NAME:/file``, ``UUID=...:/file`` or ``/dev/...:/file``: the file holding the
    passphrase (a path is required: a filesystem's top folder is not a file)."""
    if ":/" not in text:
        raise UsageError(f"lifeboat.passphrase={text} is not understood; give LABEL=NAME:/path/to/file "
                         "(or UUID=...:/file, /dev/...:/file)")
    try:
        loc = parse_repo_locator(text, "lifeboat.passphrase")
    except UsageError:
        raise UsageError(f"lifeboat.passphrase={text} is not understood; give LABEL=NAME:/path/to/file "
                         "(or UUID=...:/file, /dev/...:/file)") from None
    if loc.path == "/":
        raise UsageError(f"lifeboat.passphrase={text} names no file")
    return loc


def read_passphrase(loc: RepoLocator) -> str:
    """The passphrase kept at `loc`: its filesystem is mounted read-only, the file's first
    line read, and the filesystem unmounted again before anything else happens."""
    from recovery.repo.keys import read_secret_file

    device = locate_device(loc)
    mountpoint = RUN_DIR / "passphrase" / Path(device).name
    mount_readonly(device, mountpoint)
    try:
        path = mountpoint / loc.path.lstrip("/")
        if not path.is_file():
            raise RefusedError(f"the passphrase file {loc.path} is not on {loc.describe().rsplit(', folder', 1)[0]}")
        return read_secret_file(str(path), "passphrase")
    finally:
        host_mounts.unmount(mountpoint)


def unlock_for(req: LiveRequest, ask_secret=None):
    """How the live restore unlocks an encrypted repository: the passphrase file the command
    line names, else a masked question on the console when someone is there."""
    from recovery.repo.keys import Unlock

    if req.passphrase is not None:
        return Unlock(passphrase=read_passphrase(req.passphrase), terminal=False)
    return Unlock(ask=ask_secret, terminal=False)


def then_after_error(cmdline: str) -> str:
    """What to do after a failure. Never reboot: the same command line would run the same
    failing restore again, forever."""
    then = lifeboat_params(cmdline).get("then", "shell").strip().lower()
    return "poweroff" if then == "poweroff" else "shell"


# ----------------------------------------------------------------------------- resolving


def resolve_target(name: str, disks) -> str:
    """The disk a technician named: a /dev path, a /dev/disk/by-id name (with or without
    the folder), or a serial number. Exactly one disk must match."""
    if name.startswith("/dev/") and not name.startswith("/dev/disk/"):
        return os.path.realpath(name)
    base = name.rsplit("/", 1)[-1]
    matches = []
    for d in disks:
        by_id = (d.by_id or "").rsplit("/", 1)[-1]
        if base == by_id or name == d.serial or (d.serial and base == d.serial):
            matches.append(d.path)
    if not matches and name.startswith("/dev/disk/") and os.path.exists(name):
        return os.path.realpath(name)
    matches = sorted(set(matches))
    if not matches:
        known = ", ".join(f"{d.path} ({d.serial or d.by_id or 'no serial'})" for d in disks) or "none"
        raise RefusedError(f"no disk matches lifeboat.target={name}; disks seen: {known}")
    if len(matches) > 1:
        raise RefusedError(f"lifeboat.target={name} matches several disks ({', '.join(matches)}); "
                           "give a /dev/disk/by-id name instead")
    return matches[0]


def locate_device(loc: RepoLocator, wait: float = DEVICE_WAIT_SECONDS) -> str:
    """The block device of the repository's filesystem, waiting a little for slow USB."""
    deadline = time.monotonic() + wait
    while True:
        dev = _find_device(loc)
        if dev:
            return dev
        if time.monotonic() >= deadline:
            raise RefusedError(f"cannot find {loc.describe()}: is the backup disk plugged in?")
        time.sleep(1)
        tools.quiet(["udevadm", "settle", "--timeout=5"])


def _find_device(loc: RepoLocator) -> str | None:
    if loc.kind == "device":
        return loc.value if os.path.exists(loc.value) else None
    link = Path("/dev/disk") / ("by-label" if loc.kind == "label" else "by-uuid") / loc.value
    if link.exists():
        return os.path.realpath(link)
    flag = "-L" if loc.kind == "label" else "-U"
    out = tools.run(["blkid", flag, loc.value], check=False)
    dev = out.stdout.strip().splitlines()
    return dev[0] if out.returncode == 0 and dev else None


def mount_readonly(device: str, mountpoint: Path) -> None:
    try:
        host_mounts.mount(device, mountpoint)
    except DiskError as exc:
        raise RefusedError(exc.message) from exc


# ----------------------------------------------------------------------------- consoles


class Consoles:
    """Writes each line to every active kernel console (screen and serial), so whoever
    watches any of them sees it."""

    def __init__(self, paths: list[str] | None = None):
        self.files = []
        for path in paths if paths is not None else self._active():
            try:
                self.files.append(open(path, "w", buffering=1, encoding="utf-8", errors="replace"))
            except OSError:
                pass
        if not self.files:
            self.files.append(sys.stdout)

    @staticmethod
    def _active() -> list[str]:
        try:
            names = Path("/sys/class/tty/console/active").read_text().split()
        except OSError:
            return []
        return [f"/dev/{n}" for n in names]

    def say(self, line: str) -> None:
        for f in self.files:
            try:
                f.write(line + "\n")
                f.flush()
            except OSError:
                pass


def progress_printer(say, every: float = 5.0):
    """An engine event sink that prints a line every few seconds, and at each phase's end."""
    from recovery.events import Progress, Warning_
    from recovery.units import human_size

    last = {"t": 0.0}
    sink_warnings: list[str] = []

    def sink(event) -> None:
        if isinstance(event, Warning_):
            sink_warnings.append(event.message)
            say(f"lifeboat: warning: {event.message}")
            return
        if not isinstance(event, Progress):
            return
        now = time.monotonic()
        finished = event.total and event.done >= event.total
        if now - last["t"] < every and not finished:
            return
        last["t"] = now
        pct = f"{100 * event.done // event.total}%" if event.total else human_size(event.done)
        part = f" partition {event.partition}" if event.partition else ""
        say(f"lifeboat: {event.phase}{part}: {pct} ({human_size(event.rate)}/s)")

    sink.warnings = sink_warnings
    return sink


# ----------------------------------------------------------------------------- running


def restore(req: LiveRequest, say, ask=None, ask_secret=None) -> tuple[str, str, float]:
    """Do the restore. Returns (snapshot id, target device, seconds)."""
    from recovery.jobs import RestoreJob, run_job
    from recovery.probe.disks import list_disks
    from recovery.repo.repository import Repository

    say(f"lifeboat: unattended restore from {req.repo.describe()}")
    unlock = unlock_for(req, ask_secret)
    if req.secrets is not None:
        load_secrets(req.secrets)
    if req.repo.kind == "url":
        from recovery.network import wait_for_address

        found = wait_for_address(say)
        say(f"lifeboat: network: {', '.join(f'{a.interface} {a.cidr}' for a in found)}")
        mountpoint = None
        repo = Repository.open(req.repo.value, unlock)
    else:
        device = locate_device(req.repo)
        mountpoint = RUN_DIR / "repos" / Path(device).name
        mount_readonly(device, mountpoint)
    try:
        if mountpoint is not None:
            repo = Repository.open(str(mountpoint / req.repo.path.lstrip("/")), unlock)
        target = resolve_target(req.target, list_disks())
        job = RestoreJob(repo, req.snapshot, target, name=req.name, layout=req.layout)

        def confirm(plan) -> bool:
            for line in plan.lines():
                say(f"lifeboat: {line}")
            if req.yes:
                return True
            if ask is None:
                raise RefusedError("lifeboat.yes=1 is not set and no one can confirm here; nothing was written")
            answer = ask(f"Type the target's name ({plan.target.name}) to erase it and restore: ")
            if answer.strip() != plan.target.name:
                raise Cancelled("nothing was written: the name typed does not match the target")
            return True

        sink = progress_printer(say)
        result = run_job(job, confirm=confirm, on_event=sink).result
        for w in result.warnings:
            if w not in sink.warnings:
                say(f"lifeboat: note: {w}")
        return result.snapshot, result.target, result.seconds
    finally:
        if mountpoint is not None:
            host_mounts.unmount(mountpoint)
        else:
            repo.close()


def load_secrets(loc: RepoLocator) -> None:
    """Read the secrets file from its partition (mounted read-only for the moment it takes)
    into this process's environment. An SSH key named in it (LIFEBOAT_SSH_KEY, a path on the
    same filesystem) is copied to a root-only file first."""
    device = locate_device(loc)
    mountpoint = RUN_DIR / "secrets-mount"
    mount_readonly(device, mountpoint)
    try:
        path = mountpoint / loc.path.lstrip("/")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RefusedError(f"cannot read the secrets file {loc.path} on {device}: {exc.strerror}") from exc
        secrets = parse_secrets(text, f"the secrets file {loc.path}")
        key = secrets.get("LIFEBOAT_SSH_KEY")
        if key:
            source = mountpoint / key.lstrip("/")
            copy = RUN_DIR / "ssh-key"
            try:
                data = source.read_bytes()
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as exc:
                raise RefusedError(f"cannot read the SSH key {key} named in the secrets file: {exc.strerror}") from exc
            secrets["LIFEBOAT_SSH_KEY"] = str(copy)
        os.environ.update(secrets)
    finally:
        host_mounts.unmount(mountpoint)


def run_then(then: str, say) -> None:
    if then == "shell":
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "console-mode").write_text("shell\n")
        say("lifeboat: the consoles now offer a shell")
        return
    say(f"lifeboat: {then} now")
    os.sync()
    # busybox's poweroff/reboot signal init, which unmounts and then switches off.
    tools.interactive([then])


def console_ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise RefusedError("lifeboat.yes=1 is not set and no one can confirm here; nothing was written")
    return input(prompt)


def console_ask_secret(prompt: str) -> str:
    """A passphrase typed on the console, not echoed."""
    if not sys.stdin.isatty():
        raise RefusedError("the repository is encrypted and no lifeboat.passphrase=LABEL=NAME:/file is given; "
                           "nothing was written")
    import getpass

    return getpass.getpass(prompt)


def main(argv: list[str] | None = None) -> int:
    """``lifeboat live [--cmdline TEXT]``: run the unattended restore the kernel command line
    (or TEXT) asks for. Exit status 0 on success or when nothing is asked."""
    argv = list(argv or [])
    cmdline = None
    if len(argv) == 2 and argv[0] == "--cmdline":
        cmdline = argv[1]
    elif argv:
        print("usage: lifeboat live [--cmdline TEXT]", file=sys.stderr)
        return 2
    if cmdline is None:
        cmdline = Path("/proc/cmdline").read_text()
    from recovery.storage import stall

    consoles = Consoles()
    say = consoles.say

    def held(message: str) -> None:      # a server holds the restore for good: as any error
        say(f"LIFEBOAT-RESULT error {message}")
        run_then(then_after_error(cmdline), say)

    stall.end_when_held(held)
    try:
        req = parse_request(cmdline)
        if req is None:
            return 0
        from recovery.logsetup import start_log

        start_log("live-restore")
        snapshot, target, seconds = restore(req, say, console_ask, console_ask_secret)
    except LifeboatError as exc:
        say(f"LIFEBOAT-RESULT error {exc.message}")
        run_then(then_after_error(cmdline), say)
        return exc.exit_code
    except Exception as exc:  # a bug: the technician still gets the one line, the log the rest
        for line in traceback.format_exc().splitlines():
            say(f"lifeboat: {line}")
        say(f"LIFEBOAT-RESULT error internal error: {type(exc).__name__}: {exc}")
        run_then(then_after_error(cmdline), say)
        return 1
    say(f"LIFEBOAT-RESULT ok snapshot={snapshot} target={target} seconds={round(seconds)}")
    run_then(req.then, say)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
