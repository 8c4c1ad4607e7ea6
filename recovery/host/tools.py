"""Running external tools (sfdisk, mkfs.*, resize2fs, ntfs-3g, debugfs, ...) with plain errors."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from recovery.errors import ToolError

log = logging.getLogger("recovery.host.tools")
Failed = subprocess.CalledProcessError      # what run(check=True) raises when a tool fails
Result = subprocess.CompletedProcess


def require(tool: str, hint: str = "") -> None:
    if shutil.which(tool) is None:
        raise ToolError(f"the tool {tool} is missing{f' ({hint})' if hint else ''}; install it and try again")


def run(args: list[str], stdin: str | None = None, check: bool = True, env: dict | None = None,
        timeout: float | None = None, pass_fds: tuple[int, ...] = (),
        errors: str | None = None, dies_with_us: bool = False) -> subprocess.CompletedProcess:
    """Run a tool with text I/O. A missing tool is a ToolError; a failing one raises
    CalledProcessError when `check` (callers turn that into the domain error that says what
    was being done). `dies_with_us`: the kernel kills the tool if Lifeboat dies first (setpriv
    --pdeathsig), for a tool whose finishing alone would undo a promise, like sfdisk replacing
    the incomplete-restore mark with a table while the boot code is still to be written."""
    require(args[0])
    if dies_with_us:
        require("setpriv")
        args = ["setpriv", "--pdeathsig", "KILL", "--", *args]
    log.debug("run %s", " ".join(args))
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=check,
                          env={**os.environ, **env} if env else None, timeout=timeout,
                          pass_fds=pass_fds, errors=errors)


def run_daemon(args: list[str], env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a tool that leaves a process behind holding its output open (sshfs's ssh): its
    output goes through a file, not a pipe, so the call returns when the tool does."""
    import tempfile

    require(args[0])
    log.debug("run %s", " ".join(args))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False,
                              env={**os.environ, **env} if env else None, timeout=timeout)
        out.seek(0)
        said = out.read()
    return subprocess.CompletedProcess(args, proc.returncode, said, said)


def run_bytes(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Like run, for tools whose output is binary (ntfscat, mtype)."""
    require(args[0])
    log.debug("run %s", " ".join(args))
    return subprocess.run(args, capture_output=True, check=check)


def output(args: list[str], what: str, stdin: str | None = None) -> str:
    """A tool's standard output; ToolError saying `what` failed, with the tool's last words."""
    require(args[0], what)
    proc = run(args, stdin=stdin, check=False)
    if proc.returncode != 0:
        raise ToolError(f"{what} failed: {args[0]}: {last_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def quiet(args: list[str]) -> int:
    """Run a clean-up step whose failure changes nothing (umount, losetup -d, partx -d)."""
    if shutil.which(args[0]) is None:
        return 127
    return subprocess.run(args, capture_output=True).returncode


def interactive(args: list[str]) -> int:
    """A program that owns the terminal (a shell) or ends the system (poweroff)."""
    return subprocess.run(args, check=False).returncode


def first_line(text: str) -> str:
    """The first non-empty line of a tool's stderr: enough for a one-line error message."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return "no message"


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def why(result: subprocess.CompletedProcess, words: tuple[str, ...] = ()) -> str:
    """The line of a failed tool's output that says what went wrong (the first that reads
    like an error), else its first line."""
    text = (result.stderr or "") + "\n" + (result.stdout or "")
    telling = ("error", "fail", "cannot", "can't", "corrupt", "invalid", "smaller than", "no space") + words
    for line in text.splitlines():
        if any(w in line.lower() for w in telling):
            return line.strip()
    return first_line(text)


def step(args: list[str]) -> subprocess.CompletedProcess:
    """Run a tool whose exit code the caller judges (a resize, a check), logged at info with
    its exit code, time and first words, so a failed restore can be followed in the log."""
    import time

    log.info("run %s", " ".join(args))
    started = time.monotonic()
    res = run(args, check=False)
    log.info("%s exited %d after %.1f s: %s", args[0], res.returncode, time.monotonic() - started,
             first_line(res.stderr or res.stdout))
    return res


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this machine (one we may not signal counts as alive:
    a lock or scratch file is never taken from a living writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
