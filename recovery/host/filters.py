"""A tool used as a streaming filter (lz4 -dc, lzop -dc): bytes in, bytes out, bounded memory.

A thread feeds the tool's stdin from an iterator while the caller reads its stdout, so neither
side waits for the other to finish and nothing is held whole in memory.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Iterable

from recovery.host import tools

log = logging.getLogger("recovery.host.filters")


class Filter:
    def __init__(self, args: list[str], source: Iterable[bytes]):
        tools.require(args[0])
        log.debug("filter %s", " ".join(args))
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.feed_error: BaseException | None = None
        self._stderr = b""
        self._feeder = threading.Thread(target=self._feed, args=(source,), daemon=True)
        self._feeder.start()
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()

    def _feed(self, source: Iterable[bytes]) -> None:
        try:
            for data in source:
                self.proc.stdin.write(data)
        except BrokenPipeError:
            pass                    # the tool stopped reading (it failed, or it is done)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader in finish()
            self.feed_error = exc
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _drain_stderr(self) -> None:
        self._stderr = self.proc.stderr.read()

    def read(self, n: int) -> bytes:
        """Up to n bytes, as soon as the tool has written some (b"" at its end)."""
        return self.proc.stdout.read1(n)

    def finish(self) -> str:
        """Wait for the tool; "" when it succeeded, else its words saying why it failed.
        An error raised while reading its input (a missing piece) is raised here."""
        self.proc.stdout.close()
        self.proc.wait()
        self._feeder.join()
        self._reader.join()
        if self.feed_error is not None:
            raise self.feed_error
        if self.proc.returncode != 0:
            text = self._stderr.decode(errors="replace")
            return f"{tools.last_line(text)} (exit {self.proc.returncode})"
        return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc.wait()
        self._feeder.join(timeout=5)
        self._reader.join(timeout=5)

    def __enter__(self) -> "Filter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
