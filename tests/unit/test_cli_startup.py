"""A backup starts reading within a fraction of a second of its launch; part of that is not
importing what the command does not use. Building the parser (every command's arguments)
must not load the snapshot reader, FUSE views or the TUI."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("recovery.browse.saved", "recovery.browse.view", "recovery.repo.reader", "textual")


def test_building_the_parser_loads_no_browsing_or_tui_code():
    code = ("import sys; from recovery.cli import build_parser; build_parser(); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_loading_the_repository_code_loads_no_cipher_key_stretching_or_parity_decoder():
    """cryptography and Argon2 are needed only by an encrypted repository, pyeclib's decoder only
    to repair (ISA-L makes parity without it): a plain backup's start does not pay for loading
    them (cryptography's library alone is 14 MB to read on a cold start, OpenSSL's, behind
    hashlib, 4 MB)."""
    code = ("import sys; import recovery.backup, recovery.repo.repository; "
            "print(' '.join(m for m in ('cryptography', 'argon2', 'pyeclib.ec_iface', '_hashlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
