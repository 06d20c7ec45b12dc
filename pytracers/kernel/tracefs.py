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
