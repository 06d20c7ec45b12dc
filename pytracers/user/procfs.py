"""A process's ``/proc`` files read as they are, with nothing but ``os``: what
a watcher of short-lived processes (the profilers' thread that reads each
announced process's mappings before it exits) must do at once, without a
first call that waits for heavier imports."""
from __future__ import annotations

import os
from typing import List, Optional

__all__ = ["read_maps_text", "process_stat", "start_time", "cpu_seconds"]


def read_maps_text(pid: int) -> Optional[str]:
    """``/proc/PID/maps`` as it is now, unparsed (None when the process is
    gone, or its maps are not ours to read)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return None


def process_stat(pid: int) -> Optional[List[str]]:
    """``/proc/PID/stat``'s fields from the third on (state, ppid, ... the
    start time at index 19), the command name before them cut off -- it may
    hold spaces, parentheses and bytes that are not UTF-8; None when the
    process is gone."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rpartition(b")")[2].decode("ascii", "replace").split()


def start_time(pid: int) -> Optional[int]:
    """The process's start time (clock ticks after boot): with the pid, it
    names one process (pids are reused).  None when it is gone."""
    fields = process_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def cpu_seconds(pid: int) -> Optional[float]:
    """The CPU time (user + system, seconds) the process has had; None when
    it is gone."""
    fields = process_stat(pid)
    if not fields or len(fields) <= 12:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
