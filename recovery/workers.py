"""The hot path's thread pool: C code (BLAKE3, zstd, preadv/pwrite) runs without the GIL, so
a few threads keep both cores busy while Python only orchestrates."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from recovery.events import CancelToken

T = TypeVar("T")
R = TypeVar("R")


def worker_count(io_bound: bool = False, cores: int | None = None, readers: int = 2) -> int:
    """Threads for the pool: one per core (or `cores` when the user chose), and `readers` more
    when each item also waits on a read the page cache does not prefetch (O_DIRECT), so a core
    never idles on I/O."""
    cores = cores or max(2, min(os.cpu_count() or 2, 8))
    return cores + readers if io_bound else cores


def ordered_map(fn: Callable[[T], R], items: Iterable[T], cancel: CancelToken,
                io_bound: bool = False, cores: int | None = None, readers: int = 2) -> Iterator[R]:
    """fn(item) for every item on a thread pool, results in the items' order. At most a few
    items per worker are in flight, so memory stays bounded whatever the disk size; the
    cancel token is checked before each new item."""
    workers = worker_count(io_bound, cores, readers)
    pending: deque = deque()
    with ThreadPoolExecutor(workers) as pool:
        try:
            for item in items:
                cancel.check()
                pending.append(pool.submit(fn, item))
                if len(pending) > 2 * workers + 2:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
