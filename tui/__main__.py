"""``python -m tui [--repo REPO] [--disk IMAGE ...]``: the same as ``lifeboat tui``."""

import argparse

from tui.app import main

parser = argparse.ArgumentParser(prog="python -m tui")
parser.add_argument("--repo")
parser.add_argument("--disk", action="append", default=[])
args = parser.parse_args()
raise SystemExit(main(args.repo, args.disk))
