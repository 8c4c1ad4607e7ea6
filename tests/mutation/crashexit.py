"""Runs the test command given as arguments and ends with its exit code, except that a run the
kernel ended by a signal (a mutant that crashes the interpreter, e.g. a NULL pointer handed to
a C library through ctypes, or one that signals its own process) ends with 1: mutmut 2 counts
only exit code 1 as a killed mutant, and a test run that crashed did not pass.

mutmut ends a run that overstays its time by killing this process only; the tests die with it
(PR_SET_PDEATHSIG), or they would hold mutmut's terminal open and it would wait for ever."""

import ctypes
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


code = subprocess.run(sys.argv[1:], preexec_fn=die_with_parent).returncode
if code < 0:
    print(f"crashexit: the test run was ended by signal {-code}", flush=True)
    sys.exit(1)
sys.exit(code)
