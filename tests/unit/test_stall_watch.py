"""The watch over a network mount's calls (recovery/storage/stall.py): it ends the calls
waiting on a server that has stopped answering, and leaves a slow or idle one alone. The
server's progress is a counter the test moves, as the NFS client's count of replies moves."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

from recovery.storage.stall import StallWatch, nfs_replies


class Server:
    def __init__(self):
        self.replies = 0
        self.cuts: list[float] = []
        self.waiting = threading.Event()        # set by a cut: the calls waiting on it end

    def cut(self):
        self.cuts.append(time.monotonic())
        self.waiting.set()

    def cut_in_vain(self):
        """A cut the kernel ignores: the calls waiting go on waiting."""
        self.cuts.append(time.monotonic())


@contextmanager
def watching(server: Server, seconds: float, cuts_end_calls: bool = True, **give_up):
    watch = StallWatch(lambda: server.replies, server.cut if cuts_end_calls else server.cut_in_vain,
                       seconds=seconds, poll=0.05, **give_up)
    try:
        yield watch
    finally:
        watch.stop()


def call_in(watch: StallWatch, server: Server, seconds: float) -> threading.Thread:
    """A call of ours that waits on the server for `seconds`, or until a cut ends it."""
    def run():
        with watch.call():
            server.waiting.wait(seconds)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_call_waiting_on_a_silent_server_is_cut_after_the_stall_time():
    server = Server()
    with watching(server, 0.5) as watch:
        start = time.monotonic()
        call = call_in(watch, server, 30)
        call.join(10)
        assert not call.is_alive()
        assert len(server.cuts) == 1 and 0.5 <= server.cuts[0] - start < 2.0
        assert watch.cuts == 1


def test_a_slow_server_that_keeps_answering_is_not_cut():
    server = Server()
    with watching(server, 0.5) as watch:
        call = call_in(watch, server, 1.5)          # three stall times long, with replies all along
        while call.is_alive():
            server.replies += 1
            time.sleep(0.1)
        assert server.cuts == []


def test_no_call_under_way_is_no_stall_however_long_the_server_is_silent():
    server = Server()
    with watching(server, 0.3) as watch:
        time.sleep(1.0)                              # idle: nothing of ours waits
        assert server.cuts == []
        start = time.monotonic()
        call_in(watch, server, 30).join(10)          # the idle time before does not count
        assert len(server.cuts) == 1 and server.cuts[0] - start >= 0.3


def test_a_server_still_silent_is_cut_again_each_stall_time():
    server = Server()
    with watching(server, 0.3, cuts_end_calls=False) as watch:
        with watch.call():
            time.sleep(1.2)
        assert len(server.cuts) >= 3
        gaps = [b - a for a, b in zip(server.cuts, server.cuts[1:])]
        assert all(g >= 0.3 for g in gaps), gaps


def test_a_call_the_cuts_do_not_end_is_given_up_once_after_the_window():
    server, gave_up = Server(), []
    with watching(server, 0.2, cuts_end_calls=False, give_up=gave_up.append, give_up_after=0.6) as watch:
        with watch.call():                          # the cuts do not end this call
            time.sleep(1.6)
        assert len(gave_up) == 1 and gave_up[0] >= 0.8   # the window after the first cut, and the stall before it


def test_a_server_that_answers_again_before_the_window_is_not_given_up():
    server, gave_up = Server(), []
    with watching(server, 0.2, cuts_end_calls=False, give_up=gave_up.append, give_up_after=0.6) as watch:
        with watch.call():
            time.sleep(0.4)                         # silent: cut once
            server.replies += 1                     # then it answers, and keeps answering
            for _ in range(10):
                time.sleep(0.1)
                server.replies += 1
        assert server.cuts and gave_up == []


def test_a_wait_in_the_kernel_outside_our_calls_is_cut_and_given_up_too():
    """A thread of ours the kernel shows waiting in the NFS client, in a call the storage does
    not wrap (closing a file, a look at the mount point): counted from when it was first seen."""
    server, gave_up, held = Server(), [], threading.Event()
    with watching(server, 0.2, cuts_end_calls=False, give_up=gave_up.append, give_up_after=0.6,
                  held=held.is_set) as watch:
        time.sleep(0.5)                             # nothing waits: no cut
        assert server.cuts == []
        seen = time.monotonic()
        held.set()
        time.sleep(1.4)
        assert server.cuts and server.cuts[0] - seen >= 0.2
        assert len(gave_up) == 1
        assert watch.cuts >= 2


def test_a_wait_in_the_kernel_on_a_server_that_answers_is_not_cut():
    server, held = Server(), threading.Event()
    with watching(server, 0.3, held=held.is_set):
        held.set()
        for _ in range(12):
            time.sleep(0.1)
            server.replies += 1
        assert server.cuts == []


def test_no_thread_of_a_process_without_nfs_waits_in_the_nfs_client():
    """Read from this machine's kernel: a thread sleeping in a plain wait is not in the NFS
    client (the live system's own NFS wait is checked in QEMU, tests/vm/test_live_network.py)."""
    from recovery.storage.stall import threads_in_nfs, waits_in_nfs

    sleeper = threading.Thread(target=time.sleep, args=(1.0,))
    sleeper.start()
    try:
        assert not threads_in_nfs()
    finally:
        sleeper.join()
    stack = Path(f"/proc/self/task/{threading.get_native_id()}/stack").read_text()
    assert stack and not waits_in_nfs(stack)


# Lines of /proc/self/mountstats as the live system's kernel wrote them for an NFSv4.2 mount
# (captured in QEMU; the per-operation table that follows is left out), after two others.
MOUNTSTATS = """device /dev/loop0 mounted on /run/lifeboat/lower with fstype squashfs
device tmpfs mounted on /tmp with fstype tmpfs
device 10.0.2.2:/backups mounted on /mnt/n with fstype nfs4 statvers=1.1
\tevents:\t2 0 0 0 1 0 1 0 0 0 0 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 
\tbytes:\t0 0 0 0 0 0 0 0 
\tRPC iostats version: 1.1  p/v: 100003/4 (nfs)
\txprt:\ttcp 0 0 2 0 0 26 26 0 26 0 2 0 0
\tper-op statistics
\t        NULL: 1 1 0 44 24 43 16 61 0
device proc mounted on /proc with fstype proc
"""


def test_the_replies_are_read_from_the_nfs_mounts_transport_line():
    assert nfs_replies(Path("/mnt/n"), MOUNTSTATS) == 26
    moved = MOUNTSTATS.replace("tcp 0 0 2 0 0 26 26 0", "tcp 0 0 2 0 0 31 29 0")
    assert nfs_replies(Path("/mnt/n"), moved) == 29          # recvs, not sends


def test_a_place_that_is_not_an_nfs_mount_has_no_replies():
    assert nfs_replies(Path("/tmp"), MOUNTSTATS) is None      # mounted, but not NFS
    assert nfs_replies(Path("/mnt"), MOUNTSTATS) is None      # not a mount point
