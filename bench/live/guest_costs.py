"""What the live system costs under emulation, in QEMU's own CPU seconds: booting to the boot
line, starting the TUIs (one on the screen, one on the serial line), sitting idle, and each
command given, run in the live shell. The VM tests are CI's dearest time; this tells which part
of a boot or a shell step to spend less on.

    .venv/bin/python bench/live/guest_costs.py                    # shell only, a few commands
    .venv/bin/python bench/live/guest_costs.py --tui              # boot to both TUIs, then idle
    .venv/bin/python bench/live/guest_costs.py "lifeboat disks" "lifeboat --version"

Builds the ISO first when it is missing or older than its sources (as the VM tests do)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.vm.qemu import Disk  # noqa: E402
from tests.vm.test_iso import BOOT_LINE, TUI_DRAWN, blank, ensure_iso, live_machine  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("commands", nargs="*", default=["true", "lifeboat --version", "lifeboat --version",
                                                   "lifeboat disks", "python3 -c pass"])
    p.add_argument("--tui", action="store_true", help="boot to the TUIs instead of a shell")
    p.add_argument("--idle", type=float, default=20, help="seconds to watch the idle system")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifeboat-guest-costs-") as work:
        work = Path(work)
        disks = [Disk(blank(work / "disk.img", 64 << 20), bus="virtio", serial="BENCH")]
        append = "" if a.tui else "lifeboat.console=shell"
        with live_machine(ensure_iso(), disks, append, work / "console.log") as vm:
            pid = vm._proc.pid
            vm.wait_for(BOOT_LINE, 600)
            print(f"boot line: {vm.elapsed():6.1f} s after start, QEMU CPU {cpu_seconds(pid):6.1f} s")
            if a.tui:
                vm.wait_for(TUI_DRAWN, 600)
                print(f"TUI drawn: {vm.elapsed():6.1f} s after start, QEMU CPU {cpu_seconds(pid):6.1f} s")
            # the shell's start settles; the TUI on the other console (started second) is drawn
            settle = 40 if a.tui else 10
            time.sleep(settle)
            print(f"after {settle} s more: QEMU CPU {cpu_seconds(pid):6.1f} s")
            before = cpu_seconds(pid)
            time.sleep(a.idle)
            print(f"idle {a.idle:.0f} s: QEMU CPU {cpu_seconds(pid) - before:.2f} s")
            if not a.tui:
                for n, command in enumerate(a.commands):
                    began, before = time.monotonic(), cpu_seconds(pid)
                    vm.send(f"{command} >/dev/null 2>&1; echo DONE-{n}-$?\r")
                    status = vm.wait_for(rf"DONE-{n}-(\d+)", 900)[1]
                    print(f"{command!r}: {time.monotonic() - began:5.1f} s, QEMU CPU "
                          f"{cpu_seconds(pid) - before:5.1f} s, exit {status}")
                vm.send("poweroff -f\r")
                vm.wait_exit(120)
            # with the TUIs up, leaving the block stops QEMU


if __name__ == "__main__":
    main()
