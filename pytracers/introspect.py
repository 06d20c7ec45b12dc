"""What BPF objects exist in the kernel right now (walked by id).

Used by leak checks: every program, map and link pytracers creates must be
gone after close().  Needs CAP_SYS_ADMIN to walk ids.
"""
from __future__ import annotations

from typing import Callable, Dict, FrozenSet

from ._libbpf import ffi, lib

__all__ = ["prog_ids", "map_ids", "link_ids", "snapshot"]


def _walk(next_id: Callable[..., int]) -> FrozenSet[int]:
    ids = set()
    cur = 0
    nxt = ffi.new("__u32 *")
    while next_id(cur, nxt) == 0:
        cur = int(nxt[0])
        ids.add(cur)
    return frozenset(ids)


def prog_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_prog_get_next_id)


def map_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_map_get_next_id)


def link_ids() -> FrozenSet[int]:
    return _walk(lib.bpf_link_get_next_id)


def snapshot() -> Dict[str, FrozenSet[int]]:
    """Ids of every BPF program, map and link in the kernel."""
    return {"progs": prog_ids(), "maps": map_ids(), "links": link_ids()}
