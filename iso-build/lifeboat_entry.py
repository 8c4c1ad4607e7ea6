"""Entry point of the frozen bundle.

`lifeboat live ...` runs the unattended-restore driver of the live system (recovery.live);
every other command line goes to the normal CLI, so the bundle behaves like the source tree.
"""

import sys


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "live":
        from recovery.live import main as live_main

        return live_main(sys.argv[2:])
    from recovery.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
