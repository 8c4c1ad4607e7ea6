"""The host: external tools, mounts, loop devices and direct (uncached) reads.

The only package that runs subprocesses. Everything else asks it, so each rule (how a
read-only mount avoids replaying a journal, how a missing tool is reported, when O_DIRECT
falls back to cached reads) lives once.
"""
