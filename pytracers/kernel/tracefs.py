"""tracefs: where tracepoints are listed, and what libbpf reads to attach them.

Many machines do not mount tracefs at boot.  When it is missing and the
process may mount it (root, CAP_SYS_ADMIN), pytracers mounts it at
/sys/kernel/tracing and logs that it did; otherwise it raises TracefsError
with what to run.

Also importable by its former name, ``pytracers.tracefs`` (the same module).
"""
from __future__ import annotations

import fnmatch
import os
import re
import threading
from typing import List, NamedTuple, Optional

from .. import _libbpf
from ..errors import TargetNotFoundError, TracefsError


TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
_lock = threading.Lock()
_root: Optional[str] = None


def _is_tracefs(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "events"))


def root(*, mount: bool = True) -> str:
    """The tracefs mount point, mounting it at /sys/kernel/tracing if allowed."""
    global _root
    with _lock:
        if _root and _is_tracefs(_root):
            return _root
        for cand in (TRACEFS, DEBUGFS_TRACING):
            if _is_tracefs(cand):
                _root = cand
                return cand
        if not mount:
            raise TracefsError("tracefs is not mounted at /sys/kernel/tracing")
        if not os.path.isdir(TRACEFS):
            raise TracefsError(
                "tracefs is not available: /sys/kernel/tracing does not exist "
                "(kernel built without CONFIG_TRACING?)")
        rc = _libbpf.libc.mount(b"tracefs", TRACEFS.encode(), b"tracefs", 0, _libbpf.ffi.NULL)
        if rc != 0:
            err = _libbpf.ffi.errno
            raise TracefsError(
                f"tracefs is not mounted and mounting it at {TRACEFS} failed "
                f"({os.strerror(err)}); run as root: mount -t tracefs tracefs {TRACEFS}", err)
        import logging
        logging.getLogger("pytracers").info("mounted tracefs at %s", TRACEFS)
        _root = TRACEFS
        return TRACEFS


def tracepoint_dir(category: str, name: str) -> str:
    return os.path.join(root(), "events", category, name)


def tracepoint_exists(category: str, name: str) -> bool:
    return os.path.isfile(os.path.join(tracepoint_dir(category, name), "id"))


def list_tracepoints(pattern: str = "*") -> List[str]:
    """``category:name`` of every tracepoint matching the glob ``pattern``."""
    events = os.path.join(root(), "events")
    out = []
    for cat in sorted(os.listdir(events)):
        d = os.path.join(events, cat)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            full = f"{cat}:{name}"
            if os.path.isdir(os.path.join(d, name)) and (
                    fnmatch.fnmatchcase(full, pattern) or fnmatch.fnmatchcase(name, pattern)):
                out.append(full)
    return out


def require_tracepoint(category: str, name: str) -> None:
    """Raise TargetNotFoundError (with suggestions) unless the tracepoint exists."""
    if tracepoint_exists(category, name):
        return
    import difflib
    everything = list_tracepoints()
    close = difflib.get_close_matches(f"{category}:{name}", everything, n=5, cutoff=0.6)
    raise TargetNotFoundError("tracepoint", f"{category}:{name}", close)


class Field(NamedTuple):
    """One field of a tracepoint's record, as its format file declares it.

    ``type`` is the declaration without the name (``"char[16]"``,
    ``"__data_loc char[]"``, ``"pid_t"``, ``"const char *"``); ``offset`` and
    ``size`` are in bytes from the start of the record; ``signed`` is the
    format's own flag.
    """

    name: str
    type: str
    offset: int
    size: int
    signed: bool


_FIELD_LINE = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*"
                         r"size:(?P<size>\d+);\s*(?:signed:(?P<signed>-?\d+);)?")


def parse_format(text: str) -> List[Field]:
    """The fields of a tracepoint format file's text, in record order."""
    fields = []
    for line in text.splitlines():
        m = _FIELD_LINE.match(line)
        if m is None:
            continue
        decl = " ".join(m.group("decl").split())
        array = ""
        if decl.endswith("]"):                  # "char comm[16]": the bound goes to the type
            bracket = decl.rfind("[")
            decl, array = decl[:bracket].rstrip(), decl[bracket:].replace(" ", "")
        head, _, name = decl.rpartition(" ")
        stars = len(name) - len(name.lstrip("*"))
        name = name.lstrip("*")
        ctype = " ".join(p for p in (head, "*" * stars) if p)
        fields.append(Field(name, ctype + array, int(m.group("offset")), int(m.group("size")),
                            m.group("signed") == "1"))
    return fields


def tracepoint_format(category: str, name: str) -> List[Field]:
    """The fields of tracepoint ``category:name`` (TargetNotFoundError, with
    suggestions, when the running kernel has no such tracepoint)."""
    require_tracepoint(category, name)
    path = os.path.join(tracepoint_dir(category, name), "format")
    with open(path) as f:
        return parse_format(f.read())


# ---------------------------------------------------------------------- trace_pipe

class TraceLine(NamedTuple):
    """One line of tracefs' trace_pipe, as the kernel formats it::

        <comm>-<pid> [<cpu>] <flags> <timestamp>: <event>: <message>

    ``pid`` is the thread's id (the kernel's task pid); ``comm`` is the
    thread's name (where the kernel prints ``<...>``, having not recorded it,
    :class:`TracePipe` reads ``/proc/<pid>/comm`` while the thread lives);
    ``flags`` is empty where the kernel prints none; ``timestamp`` is in
    seconds of tracefs' trace clock (by default ``local``: the scheduler
    clock since boot, close to ``time.monotonic()``)."""

    comm: str
    pid: int
    cpu: int
    flags: str
    timestamp: float
    event: str
    message: str
    raw: str


# compiled on first use (re's cache): a trace_pipe reader's, not every start's
_TRACE_LINE = (
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d][^\s]*|\d[^\s.:]*\.[^\s]*?[^\d\s.][^\s]*)\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>[^:]+):\s?(?P<msg>.*)$")
BPF_PRINTK_EVENT = "bpf_trace_printk"


def _comm_of(tid: int) -> Optional[str]:
    try:
        with open(f"/proc/{tid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def parse_trace_line(line: str) -> Optional[TraceLine]:
    """A trace_pipe line as a :class:`TraceLine` (None when it is not one)."""
    text = line.rstrip("\n")
    m = re.match(_TRACE_LINE, text)
    if m is None:
        return None
    return TraceLine(m.group("comm"), int(m.group("pid")), int(m.group("cpu")),
                     m.group("flags") or "", float(m.group("ts")), m.group("event").strip(),
                     m.group("msg"), text)


class TracePipe:
    """An iterator over tracefs' trace_pipe: :class:`TraceLine` values, by
    default only ``bpf_printk`` lines (``everything=True``: every line of the
    global trace buffer).  Reading consumes: another reader of trace_pipe
    (``cat``, bpftool) gets other lines.

    ``timeout``: iteration ends once no line has come for that many seconds
    (None: waits for ever; close() from another thread ends it too).
    ``close()`` (or ``with``) releases the file; safe twice."""

    def __init__(self, timeout: Optional[float] = None, *, everything: bool = False) -> None:
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            from ..errors import BadArgumentError
            raise BadArgumentError("timeout must be a number of seconds >= 0 or None")
        self.timeout = timeout
        self.everything = everything
        path = os.path.join(root(), "trace_pipe")
        try:
            self._fd: Optional[int] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise TracefsError(f"cannot open {path}: {e.strerror}", e.errno or 0) from None
        self._wake_r, self._wake_w = os.pipe()
        self._partial = b""
        self._ready: List[TraceLine] = []

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.write(self._wake_w, b"x")       # wakes a reader blocked in next()
            os.close(fd)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> "TracePipe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __iter__(self) -> "TracePipe":
        return self

    def __next__(self) -> TraceLine:
        line = self.read_line(self.timeout)
        if line is None:
            raise StopIteration
        return line

    def read_line(self, timeout: Optional[float] = None) -> Optional[TraceLine]:
        """The next line (None after ``timeout`` seconds without one, or once closed)."""
        import select
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            fd = self._fd
            if fd is None:
                return None
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                chunk = None
            except OSError:
                if self._fd is None:
                    return None
                raise
            if chunk:
                self._take(chunk)
                continue
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            # trace_pipe polls readable when the buffer has data; wait at most
            # 0.2 s at a time (older kernels' poll wakes late on an idle CPU)
            step = 0.2 if wait is None else min(wait, 0.2)
            r, _, _ = select.select([fd, self._wake_r], [], [], step)
            if self._wake_r in r:
                return None
        return self._ready.pop(0)

    def _take(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            parsed = parse_trace_line(raw.decode("utf-8", "replace"))
            if parsed is None:
                continue
            if self.everything or parsed.event == BPF_PRINTK_EVENT:
                if parsed.comm == "<...>":
                    parsed = parsed._replace(comm=_comm_of(parsed.pid) or parsed.comm)
                self._ready.append(parsed)


def trace_pipe(timeout: Optional[float] = None, *, everything: bool = False) -> TracePipe:
    """``for line in pytracers.trace_pipe(timeout=1): print(line.pid, line.message)``
    -- the ``bpf_printk`` output of every loaded program (see :class:`TracePipe`)."""
    return TracePipe(timeout, everything=everything)
