"""The symbolised frame and the counts a symbolisation reports."""
from __future__ import annotations

import struct
from typing import Dict, List, NamedTuple, Optional

__all__ = ["Frame", "UNKNOWN", "Stats", "stack_addresses"]

UNKNOWN = "[unknown]"


class Frame(NamedTuple):
    """One stack frame: its address and what it is."""

    address: int
    """The instruction address (kernel or the process's virtual address)."""
    symbol: str
    """The function's name, or ``[unknown]`` where no symbol covers the address."""
    offset: int
    """``address`` minus the symbol's start (0 for ``[unknown]``)."""
    module: Optional[str]
    """A kernel module's name (None for vmlinux), or a user frame's file path."""

    def __str__(self) -> str:
        if self.symbol == UNKNOWN:
            where = f" ({self.module})" if self.module else ""
            return f"{UNKNOWN} {self.address:#x}{where}"
        mod = f" [{self.module}]" if self.module else ""
        return f"{self.symbol}+{self.offset:#x}{mod}"


class Stats:
    """How a symboliser fared: addresses looked up and those left ``[unknown]``
    by reason (``no symbol``, ``no mapping``, ``process gone``, ``unreadable file``)."""

    def __init__(self) -> None:
        self.addresses = 0
        self.unknown: Dict[str, int] = {}

    def miss(self, reason: str, n: int = 1) -> None:
        if n:
            self.unknown[reason] = self.unknown.get(reason, 0) + n

    @property
    def unknown_total(self) -> int:
        return sum(self.unknown.values())

    def __repr__(self) -> str:
        return f"<Stats addresses={self.addresses} unknown={self.unknown}>"


def stack_addresses(raw: Optional[bytes]) -> List[int]:
    """A STACK_TRACE map value (u64 addresses, innermost first; a zero ends
    the stack) as a list of ints; None (no such stack) gives []."""
    if not raw:
        return []
    a = [x for (x,) in struct.iter_unpack("<Q", raw[:len(raw) - len(raw) % 8])]
    return a[:a.index(0)] if 0 in a else a
