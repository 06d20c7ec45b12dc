"""What BPF objects exist in the kernel right now (walked by id).

Used by leak checks: every program, map and link pytracers creates must be
gone after close().  Needs CAP_SYS_ADMIN to walk ids.

Also importable by its former name, ``pytracers.introspect`` (the same module).
"""
from __future__ import annotations

import errno
import os
import time
from typing import Callable, Dict, FrozenSet, Optional, Set, Tuple, Union

from .._libbpf import checked, ffi, lib
from ..errors import BpfOperationError, PermissionDeniedError

__all__ = ["prog_ids", "map_ids", "link_ids", "snapshot", "fdinfo", "kernel_id", "process_ids"]


def _walk(next_id: Callable[..., int], what: str) -> FrozenSet[int]:
    """Every id ``next_id`` walks to; ENOENT ends the walk, any other error
    raises (an unprivileged walk is refused, not empty)."""
    ids = set()
    cur = 0
    nxt = ffi.new("__u32 *")
    while checked(next_id, cur, nxt, what=f"walk the kernel's BPF {what} ids",
                  error=BpfOperationError, expected=(errno.ENOENT,),
                  refine=_walk_refused) is not None:
        cur = int(nxt[0])
        ids.add(cur)
    return frozenset(ids)


def _walk_refused(err: int, log: object) -> Optional[PermissionDeniedError]:
    if err in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError("walk the kernel's BPF object ids", "CAP_SYS_ADMIN",
                                     errno=err)
    return None


def prog_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_prog_get_next_id, "program")


def map_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_map_get_next_id, "map")


def link_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_link_get_next_id, "link")


def fdinfo(fd: int, pid: Union[int, str] = "self") -> Dict[str, str]:
    """The kernel's /proc/PID/fdinfo/FD for a descriptor: for BPF objects it
    holds ``prog_id``, ``map_id`` or ``link_id`` (empty dict if unreadable)."""
    out: Dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def kernel_id(fd: int) -> Optional[Tuple[str, int]]:
    """("progs" | "maps" | "links", id) of the BPF object behind ``fd``, or None."""
    info = fdinfo(fd)
    # a link's fdinfo also names its program: look for link_id first
    for key, kind in (("link_id", "links"), ("map_id", "maps"), ("prog_id", "progs")):
        if key in info:
            return kind, int(info[key])
    return None


def process_ids(pid: Union[int, str] = "self") -> Dict[str, FrozenSet[int]]:
    """Ids of the BPF programs, maps and links a process holds fds of."""
    out: Dict[str, set] = {"progs": set(), "maps": set(), "links": set()}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    for fd in fds:
        info = fdinfo(int(fd), pid)
        for key, kind in (("prog_id", "progs"), ("map_id", "maps"), ("link_id", "links")):
            if key in info:
                out[kind].add(int(info[key]))
    return {k: frozenset(v) for k, v in out.items()}


def snapshot() -> Dict[str, FrozenSet[int]]:
    """Ids of every BPF program, map and link in the kernel."""
    return {"progs": prog_ids(), "maps": map_ids(), "links": link_ids()}


def still_present(ids: Dict[str, Set[int]], timeout: float = 10.0) -> Dict[str, Set[int]]:
    """The ids of ``ids`` (as from :func:`snapshot`) still in the kernel.

    The kernel frees some objects asynchronously (RCU, workqueues), so this
    waits up to ``timeout`` seconds for them to go; empty means all gone."""
    deadline = time.monotonic() + timeout
    while True:
        now = snapshot()
        left = {k: ids[k] & set(now[k]) for k in ids if ids[k] & set(now[k])}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
