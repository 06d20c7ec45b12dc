"""Output formats: JSON lines for programs, aligned columns for people.

In JSON mode nothing but JSON lines is ever written to stdout; everything
for humans (:func:`note`) goes to stderr.
"""
from __future__ import annotations

import errno as _errno
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TextIO

from ..tracers._records import plain
from .status import PROG


class Clock:
    """Kernel CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns) -> wall clock."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def wall(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9

    def hms(self, ts_ns: int) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.wall(ts_ns)))


class Column:
    """One column of a streamed table: a header, a width and how to format a value."""

    def __init__(self, header: str, width: int, key: Callable[[Any], Any],
                 right: bool = False) -> None:
        self.header = header
        self.width = width
        self.key = key
        self.right = right

    def cell(self, text: str, last: bool) -> str:
        if last:
            return text
        return text.rjust(self.width) if self.right else text.ljust(self.width)


class Output:
    """Where events go: aligned columns for people, JSON lines for programs.

    In JSON mode nothing but JSON lines is ever written to stdout.
    """

    def __init__(self, json_mode: bool, columns: Sequence[Column] = (),
                 stream: Optional[TextIO] = None) -> None:
        self.json = json_mode
        self.columns = list(columns)
        self.stream = stream or sys.stdout
        self._header_done = False
        self.rows = 0

    def _line(self, cells: Sequence[str]) -> str:
        last = len(self.columns) - 1
        return " ".join(c.cell(v, i == last) for i, (c, v) in
                        enumerate(zip(self.columns, cells))).rstrip()

    def header(self) -> None:
        if self.json or self._header_done or not self.columns:
            return
        self._header_done = True
        self.stream.write(self._line([c.header for c in self.columns]) + "\n")

    def row(self, item: Any, as_json: Optional[Mapping[str, Any]] = None) -> None:
        self.rows += 1
        if self.json:
            self.stream.write(dumps(as_json if as_json is not None else item) + "\n")
            return
        self.header()
        self.stream.write(self._line([cell_text(c.key(item)) for c in self.columns]) + "\n")

    def write_lines(self, data: bytes, rows: int) -> None:
        """``rows`` JSON lines formatted together (ASCII bytes): one write."""
        self.rows += rows
        buf = getattr(self.stream, "buffer", None)
        if buf is None:
            self.stream.write(data.decode("ascii"))
            return
        self.stream.flush()
        buf.flush()
        try:
            fd = buf.fileno()
        except (AttributeError, OSError, ValueError):      # not a file (io.UnsupportedOperation)
            buf.write(data)
            return
        # os.write, not buf.write: CPython's buffered writer drops the rest of
        # a large write that a signal (our Ctrl-C handler) interrupts part way
        # on a pipe; os.write returns the part written and the loop goes on.
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def flush(self) -> None:
        self.stream.flush()


def cell_text(v: Any) -> str:
    """A value in a table cell: None as "-", floats with three decimals."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def dumps(obj: Any) -> str:
    """One JSON line."""
    # json (and the regexes it compiles) on first use: ~2 ms of a start that
    # is not spent before the probes attach (BENCHMARKS.md section 13)
    import json
    return json.dumps(plain(obj), separators=(", ", ": "), default=str)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
                stream: Optional[TextIO] = None, right: Iterable[int] = ()) -> None:
    """A table whose column widths fit its content (the last column is free)."""
    out = stream or sys.stdout
    right = set(right)
    cells = [[cell_text(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c))
    for r in [list(headers)] + cells:
        parts = []
        for i, c in enumerate(r):
            if i == len(r) - 1:
                parts.append(c)
            else:
                parts.append(c.rjust(widths[i]) if i in right else c.ljust(widths[i]))
        out.write("  ".join(parts).rstrip() + "\n")


def note(msg: str) -> None:
    """A line for the human on stderr (never stdout)."""
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    """After EPIPE on stdout: send further writes (and the exit flush) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# ---- cells of the event tables ---------------------------------------------------------

def kernel_value(v: Any, ret: bool = False) -> str:
    """An integer as people read kernel values: addresses in hex, and a
    return value of -errno by its name."""
    if isinstance(v, bool) or not isinstance(v, int):
        return cell_text(v)
    if ret and -4095 <= v < 0 and -v in _errno.errorcode:
        return f"-{_errno.errorcode[-v]}"
    if v >= 1 << 32 or v < -(1 << 40):
        return hex(v & 0xFFFFFFFFFFFFFFFF)
    return str(v)


def args_text(args: Any) -> str:
    """Arguments as ``name=value`` (named) or values (unnamed)."""
    if args is None:
        return ""
    if isinstance(args, Mapping):
        return " ".join(f"{k}={kernel_value(v)}" for k, v in args.items())
    if isinstance(args, (list, tuple)):
        return " ".join(kernel_value(v) for v in args)
    return str(args)


def lat_us(d: Mapping[str, Any]) -> Any:
    ns = d.get("latency_ns")
    return None if ns is None else f"{ns / 1000:.1f}"


def hms(d: Mapping[str, Any]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(d["time"]))


def us(ns: Optional[int]) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f}"
