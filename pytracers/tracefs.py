"""tracefs: where tracepoints are listed, and what libbpf reads to attach them.

Many machines do not mount tracefs at boot.  When it is missing and the
process may mount it (root, CAP_SYS_ADMIN), pytracers mounts it at
/sys/kernel/tracing and logs that it did; otherwise it raises TracefsError
with what to run.
"""
from __future__ import annotations

import fnmatch
import os
import threading
from typing import List, Optional

from . import _libbpf
from .errors import TargetNotFoundError, TracefsError


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
