"""Runs the test command given as arguments and ends with its exit code, except that a run the
kernel ended by a signal (a mutant that crashes the interpreter, e.g. a NULL pointer handed to
a C library through ctypes, or one that signals its own process) ends with 1: mutmut 2 counts
only exit code 1 as a killed mutant, and a test run that crashed did not pass."""

import subprocess
import sys

code = subprocess.run(sys.argv[1:]).returncode
if code < 0:
    print(f"crashexit: the test run was ended by signal {-code}", flush=True)
    sys.exit(1)
sys.exit(code)
