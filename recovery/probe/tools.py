"""Running the external tools probing and applying rely on (sfdisk, blkid, partx, ...)."""

from __future__ import annotations

import logging
import shutil
import subprocess

from recovery.errors import ToolError

log = logging.getLogger("recovery.probe.tools")


def run_tool(args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool with text I/O; a missing tool is a ToolError, a failing one CalledProcessError
    (callers turn that into the domain error that says what was being done)."""
    if shutil.which(args[0]) is None:
        raise ToolError(f"the tool {args[0]} is missing; install it (util-linux) and try again")
    log.debug("run %s", " ".join(args))
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=check)


def first_line(text: str) -> str:
    """The first non-empty line of a tool's stderr: enough for a one-line error message."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return "no message"
