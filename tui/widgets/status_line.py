"""One line at the bottom of Home: what was found (disks, repositories, snapshots)."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "scan_generation", self._update)

    def _update(self, _generation: int) -> None:
        self.update(self.app.status_text())
