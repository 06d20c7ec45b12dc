"""Stacks on a tracer's records: ``stack="kernel" | "user" | "both"``.

The BPF side (``PT_FILL_STACKS`` in ``bpf_src/pytracers.h``) stores each
record's stacks in the object's ``stacks`` map (a
``BPF_MAP_TYPE_STACK_TRACE``: a stack seen a thousand times is stored once)
and puts the ids in the record header; ``ev.kstack`` / ``ev.ustack`` read and
symbolise them on first access, as lists of
:class:`~pytracers.symbolize.Frame` (innermost first).  A user stack is
symbolised against the process's mappings when it is first read: read
records of short-lived processes promptly.  A tracer whose records may
outlive the image their user stack was taken in (``ExecTracer``: a
successful exec) says so per record, and those frames are ``[unknown]``
(reason ``image replaced by exec``) rather than resolved against the new
program.  ``tracer.stack_stats`` counts stacks lost (map full, hash
collision) and ``[unknown]`` frames.
"""
from __future__ import annotations

import errno
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from ..errors import BadArgumentError
from ..symbolize import UNKNOWN, Frame, Symbolizer, stack_addresses

__all__ = ["STACKS", "stack_bits", "StackReader", "with_stacks", "STACK_MAP_ENTRIES"]

STACKS = {"kernel": 1, "user": 2, "both": 3}
STACK_MAP_ENTRIES = 16384   # at most 32767: the header holds ids in 16 bits
NOT_ASKED = -1
REPLACED = "image replaced by exec"


def stack_bits(stack: Optional[str]) -> int:
    """``cfg_stacks`` for a ``stack=`` argument (None: 0)."""
    if stack is None:
        return 0
    if stack not in STACKS:
        raise BadArgumentError(f"stack must be one of {', '.join(map(repr, STACKS))} or None, "
                               f"got {stack!r}")
    return STACKS[stack]


class StackReader:
    """Reads stack ids from a STACK_TRACE map and symbolises them (cached)."""

    def __init__(self, stack_map: Any) -> None:
        self.map = stack_map
        self.symbolizer = Symbolizer()
        self._kernel: Dict[int, List[Frame]] = {}
        self._user: Dict[Tuple[int, int], List[Frame]] = {}
        self._replaced: Dict[int, List[Frame]] = {}
        self.lost = 0          # ids that were -ENOMEM / -EEXIST: the stack was not stored

    def _addresses(self, sid: int) -> List[int]:
        return stack_addresses(self.map.lookup(struct.pack("<I", sid)))

    def _missing(self, sid: int) -> Optional[List[Frame]]:
        if sid >= 0:
            return None
        if sid not in (NOT_ASKED, -errno.EFAULT):
            self.lost += 1
        return []

    def kernel(self, sid: int) -> List[Frame]:
        none = self._missing(sid)
        if none is not None:
            return none
        got = self._kernel.get(sid)
        if got is None:
            got = self._kernel[sid] = self.symbolizer.kernel(self._addresses(sid))
        return list(got)

    def user(self, pid: int, sid: int) -> List[Frame]:
        none = self._missing(sid)
        if none is not None:
            return none
        got = self._user.get((pid, sid))
        if got is None:
            got = self._user[(pid, sid)] = self.symbolizer.user(pid, self._addresses(sid))
        return list(got)

    def replaced(self, sid: int) -> List[Frame]:
        """A user stack taken in an image the process no longer runs: its
        addresses, each ``[unknown]`` (counted as such)."""
        none = self._missing(sid)
        if none is not None:
            return none
        got = self._replaced.get(sid)
        if got is None:
            got = self._replaced[sid] = [Frame(int(a), UNKNOWN, 0, None)
                                         for a in self._addresses(sid)]
            self.symbolizer.stats.addresses += len(got)
            self.symbolizer.stats.miss(REPLACED, len(got))
        return list(got)

    @property
    def stats(self) -> Dict[str, Any]:
        return {"lost": self.lost, "symbolized": self.symbolizer.stats.addresses,
                "unknown_frames": dict(self.symbolizer.stats.unknown)}


def with_stacks(base: Type[Any], reader: StackReader,
                replaced: Optional[Callable[[Any], bool]] = None) -> Type[Any]:
    """A subclass of the record class ``base`` with ``kstack`` and ``ustack``;
    ``replaced(record)`` true: the user stack's image is gone (see above)."""
    fields = base._fields
    i_k, i_u, i_pid = fields.index("_kstack"), fields.index("_ustack"), fields.index("pid")
    getitem = tuple.__getitem__

    def kstack(self: Any) -> List[Frame]:
        """The kernel stack (innermost first); [] when not asked for or not recorded."""
        return reader.kernel(getitem(self, i_k))

    def ustack(self: Any) -> List[Frame]:
        """The user stack (innermost first); [] when not asked for, not recorded
        or none (a kernel thread)."""
        if replaced is not None and replaced(self):
            return reader.replaced(getitem(self, i_u))
        return reader.user(getitem(self, i_pid), getitem(self, i_u))

    return type(base.__name__, (base,), {"__slots__": (), "kstack": property(kstack),
                                         "ustack": property(ustack)})
