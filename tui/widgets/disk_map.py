"""A disk drawn as a bar: its partitions to scale, with filesystem, label, size and use.

``MapModel`` is what is drawn (built from a probed disk, a planned layout or a snapshot);
``DiskMapRenderable`` draws it at any width (it also serves as an OptionList prompt);
``DiskMap`` is the widget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui import humanize

# Colours from the 16 every terminal has (the Linux console included).
FS_STYLES = {
    "vfat": "black on blue",
    "fat32": "black on blue",
    "fat16": "black on blue",
    "ext2": "black on green",
    "ext3": "black on green",
    "ext4": "black on green",
    "ext2/3/4": "black on green",
    "ntfs": "black on cyan",
    "swap": "black on magenta",
}
OTHER_STYLE = "black on yellow"
FREE_STYLE = "dim"
MARK_STYLE = "bold white on red"
WARNING_STYLE = "bold yellow"


@dataclass(frozen=True)
class Segment:
    number: int | None          # None: unallocated space
    start: int
    size: int
    fs: str | None = None
    label: str | None = None
    used: int | None = None     # bytes in use, when known


@dataclass(frozen=True)
class MapModel:
    title: str
    details: str
    size: int
    segments: tuple[Segment, ...] = ()
    marks: tuple[str, ...] = ()     # "SYSTEM DISK", "HOLDS BACKUPS", ...
    note: str = ""
    warning: str = ""               # drawn under the title, in the warning colour


def display_path(path: str) -> str:
    """Image files under the current directory are shown relative to it (short and stable)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") or os.path.isabs(rel) else rel


def incomplete_words(mark: str) -> str:
    """The engine's "incomplete restore of <name> <date>" with the date as people read it
    (unchanged when its last word is not a date)."""
    head, _, date = mark.rpartition(" ")
    return f"{head} {humanize.when(date)}" if head and date else mark


def _with_gaps(parts: list[Segment], size: int) -> list[Segment]:
    out: list[Segment] = []
    pos = 0
    threshold = max(size // 100, 1024 * 1024)
    for p in sorted(parts, key=lambda s: s.start):
        if p.start - pos > threshold:
            out.append(Segment(None, pos, p.start - pos))
        out.append(p)
        pos = max(pos, p.start + p.size)
    if size - pos > threshold:
        out.append(Segment(None, pos, size - pos))
    return out


def from_disk(disk, *, marks: tuple[str, ...] = (), used: dict[int, int] | None = None) -> MapModel:
    """A probed ``recovery.model.disk.DiskInfo``."""
    used = used or {}
    segs = [
        Segment(p.number, p.start, p.size, p.fs, p.label, used.get(p.number, getattr(p, "used", None)))
        for p in disk.partitions
    ]
    bits = [humanize.size(disk.size)]
    if disk.is_image:
        bits.append("disk image")
    if disk.model:
        bits.append(disk.model)
    if disk.serial:
        bits.append(f"serial {disk.serial}")
    if disk.transport and disk.transport != "file":
        bits.append(disk.transport)
    if disk.table:
        bits.append(disk.table.upper() if disk.table == "gpt" else "MBR" if disk.table == "dos" else disk.table)
    elif not disk.partitions:
        bits.append("no partition table")
    all_marks = list(marks)
    if disk.is_system and "SYSTEM DISK" not in all_marks:
        all_marks.insert(0, "SYSTEM DISK")
    if disk.holds_repository and "HOLDS BACKUPS" not in all_marks:
        all_marks.append("HOLDS BACKUPS")
    mark = getattr(disk, "incomplete_restore", None)
    warning = f"{incomplete_words(mark)} — not usable" if mark else ""
    return MapModel(display_path(disk.path), " · ".join(bits), disk.size,
                    tuple(_with_gaps(segs, disk.size)), tuple(all_marks), warning=warning)


def from_layout(layout, title: str, details: str = "", fs_info: dict | None = None) -> MapModel:
    """A ``recovery.model.layout.Layout``; ``fs_info`` maps partition number to
    (fs, label, used) since a layout alone does not know its filesystems."""
    fs_info = fs_info or {}
    segs = []
    for p in layout.data_partitions():
        fs, label, used = fs_info.get(p.number, (None, p.name, None))
        segs.append(Segment(p.number, p.start, p.size, fs, label, used))
    det = details or humanize.size(layout.disk_size)
    return MapModel(title, det, layout.disk_size, tuple(_with_gaps(segs, layout.disk_size)))


def from_snapshot(info) -> MapModel:
    """A snapshot (``SnapshotInfo``): partitions in order, sizes to scale, used known."""
    segs, pos = [], 0
    for p in info.partitions:
        segs.append(Segment(p.get("number"), pos, p.get("size") or 0, p.get("fs"), p.get("label"), p.get("used")))
        pos += p.get("size") or 0
    bits = [humanize.size(info.disk_size)]
    if getattr(info, "disk_model", None):
        bits.append(info.disk_model)
    return MapModel(info.name, " · ".join(bits), max(info.disk_size or 0, pos), tuple(segs))


def _widths(segments: tuple[Segment, ...], total: int, width: int) -> list[int]:
    """Cells per segment: to scale, each partition at least 3 cells, summing to ``width``."""
    n = len(segments)
    if n == 0 or width <= 0:
        return []
    minimum = [3 if s.number is not None else 1 for s in segments]
    if sum(minimum) > width:
        minimum = [1] * n
    exact = [width * s.size / max(total, 1) for s in segments]
    cells = [max(m, int(e)) for m, e in zip(minimum, exact)]
    # Hand out what is left by the largest remainders; take back from the widest.
    order = sorted(range(n), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(cells) < width:
        cells[order[i % n]] += 1
        i += 1
    while sum(cells) > width:
        widest = max(range(n), key=lambda k: cells[k] - minimum[k])
        if cells[widest] <= minimum[widest]:
            break
        cells[widest] -= 1
    return cells


def _bar(model: MapModel, width: int) -> Text:
    bar = Text()
    for seg, cells in zip(model.segments, _widths(model.segments, model.size, width)):
        if seg.number is None:
            bar.append("·" * cells, FREE_STYLE)
            continue
        style = FS_STYLES.get((seg.fs or "").lower(), OTHER_STYLE)
        short = f"{seg.number} {seg.fs or '?'}"
        names = [f"{short} {seg.label}" if seg.label else short, short, f"{seg.number}"]
        label = next((n for n in names if len(n) < cells), names[-1][:cells])   # keep a cell free
        if seg.used is not None and seg.size:
            # Used cells on the colour; free cells in the colour on the plain background,
            # the padding after the label drawn as ░.
            split = max(1, min(cells, round(cells * seg.used / seg.size)))
            free_style = style.split(" on ")[-1]
            for i in range(cells):
                ch = label[i] if i < len(label) else (" " if i < split else "░")
                bar.append(ch, style if i < split else free_style)
        else:
            bar.append(label.ljust(cells), style)
    return bar


def _legend(model: MapModel) -> list[Text]:
    items = []
    for seg in model.segments:
        if seg.number is None:
            continue
        t = Text()
        t.append(f"{seg.number}", "bold")
        t.append(f" {seg.fs or 'unknown'}")
        if seg.label:
            t.append(f" “{seg.label}”")
        t.append(f" {humanize.size(seg.size)}")
        if seg.used is not None:
            t.append(f" {humanize.percent(seg.used, seg.size)} used")
        items.append(t)
    return items


class DiskMapRenderable:
    """Rich renderable: title line, the bar, then a legend wrapped to the width."""

    def __init__(self, model: MapModel, *, dim: bool = False):
        self.model = model
        self.dim = dim

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, 10)
        m = self.model
        head = Text()
        head.append(m.title, "bold")
        for mark in m.marks:          # marks first: they must never be cut off
            head.append(" ")
            head.append(f" {mark} ", MARK_STYLE)
        head.append("  " + m.details)
        yield head
        if m.warning:
            yield Text(m.warning, WARNING_STYLE)
        yield _bar(m, width) if m.segments else Text("(no partitions)" if m.size else "", FREE_STYLE)
        line = Text()
        for item in _legend(m):
            if line.cell_len and line.cell_len + 3 + item.cell_len > width:
                yield line
                line = Text()
            if line.cell_len:
                line.append("   ")
            line.append_text(item)
        if line.cell_len:
            yield line
        if m.note:
            yield Text(m.note, "italic")


class DiskMap(Widget):
    """One disk (or a planned layout) as a map."""

    DEFAULT_CSS = """
    DiskMap { height: auto; }
    """

    model: reactive[MapModel | None] = reactive(None, layout=True)

    def __init__(self, model: MapModel | None = None, **kwargs):
        super().__init__(**kwargs)
        self.set_reactive(DiskMap.model, model)

    def render(self):
        if self.model is None:
            return Text("")
        return DiskMapRenderable(self.model)
