"""The command-line arguments of mount, umount, ls and get, apart from their code, so that
building the parser for any command (a backup, say) does not import the snapshot reader."""

from __future__ import annotations


def add_parsers(sub, repo_arg) -> None:
    m = sub.add_parser("mount", help="mount a snapshot read-only: partitions as images, filesystems beneath")
    m.add_argument("snapshot")
    m.add_argument("mountpoint")
    repo_arg(m, required=False)
    m.add_argument("--name")
    u = sub.add_parser("umount", help="unmount a mounted snapshot")
    u.add_argument("mountpoint")
    ls = sub.add_parser("ls", help="list a snapshot's partitions, or a folder in one")
    ls.add_argument("snapshot")
    ls.add_argument("where", nargs="?", metavar="PARTITION:PATH")
    repo_arg(ls, required=False)
    ls.add_argument("--name")
    ls.add_argument("--json", action="store_true")
    g = sub.add_parser("get", help="copy a file or folder out of a snapshot")
    g.add_argument("snapshot")
    g.add_argument("where", metavar="PARTITION:PATH")
    g.add_argument("dest")
    repo_arg(g, required=False)
    g.add_argument("--name")
    g.add_argument("--json", action="store_true")
