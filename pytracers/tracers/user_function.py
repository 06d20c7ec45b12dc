"""UserFunctionTracer: a function of a user-space binary, through uprobes.

One record per call (``func_event``, the kernel function tracers' record:
:mod:`pytracers.tracers._func_records`): the arguments, the return value and
the entry-to-return latency.  The entry uprobe records the argument registers
and the start time; the uretprobe emits the record.

* ``kind=None`` (default): both, so ``args``, ``ret`` and ``latency_ns``.
* ``kind="uprobe"``: the entry alone, one record per call with ``args``
  (``ev.entry`` True, no ``ret``); the cheapest.
* ``kind="uretprobe"``: the return alone, ``ret`` only.

The target is resolved by :func:`pytracers.user.targets.resolve_binary` (a
path, a library name, or what process ``pid`` mapped) and the symbol by
:mod:`pytracers.user.symbols`.  Arguments are named and typed from the
binary's DWARF when it has some (built with ``-g``, or its debug file
installed), otherwise ``arg0..arg5``, raw registers.

With ``pid``, only that process hits the probe (the kernel installs the
breakpoint in its address space alone) and :meth:`events` ends once the
process has exited and its records are read.  A uprobe is set on the file's
inode: replacing the binary on disk (a package upgrade, a rebuild) leaves it
on the old file, which only processes started before still run --
:attr:`replaced_on_disk` tells, and a new tracer traces the new file.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator, Optional, Type, Union

from ..errors import BadArgumentError, PytracersError
from ..kinds import UPROBE, URETPROBE
from ..user import symbols as user_symbols
from ..user.elf_dwarf import dwarf_signature
from ..user.targets import process_stat, resolve_binary
from ._func_records import Shape, function_record_class, raw_shape, signature_shape, string_index
from .base import Tracer

__all__ = ["UserFunctionTracer", "KINDS", "process_exited"]

KINDS = (None, UPROBE, URETPROBE)


def process_exited(pid: int) -> bool:
    """True once process ``pid`` is gone or a zombie."""
    fields = process_stat(pid)
    return not fields or fields[0] in ("Z", "X")


class UserFunctionTracer(Tracer):
    """Trace calls of ``symbol`` (a name, ``malloc@@GLIBC_2.2.5``, or an int
    file offset) in ``target`` (a path, ``libc``, ``python3.11``...):
    ``ev.name``, ``ev.args``, ``ev.ret``, ``ev.latency_ns``, ``ev.pid``,
    ``ev.tid``, ``ev.comm``, ``ev.ts_ns``.

    ``pid``: only that process (resolved through its maps: the library it
    really loaded).  ``kind``: None (entry and return), ``"uprobe"`` or
    ``"uretprobe"``.  ``entry_events``: with both, also a record at entry.
    ``string_arg``: one argument (its name or index) to read as a string
    (a ``char *``; at most 63 bytes, read when the record is emitted).
    """

    object_name = UPROBE           # the shipped uprobe.bpf.o
    event_struct = "func_event"
    record_internals = ("flags", "raw_args", "ip", "str")

    def __init__(self, target: str, symbol: Union[str, int], *, pid: Optional[int] = None,
                 kind: Optional[str] = None, entry_events: bool = False,
                 string_arg: Union[int, str, None] = None, **kw: Any) -> None:
        if kind not in KINDS:
            raise BadArgumentError(f"a user function tracer's kind is uprobe, uretprobe or "
                                   f"None (both), not {kind!r}")
        self.target = target
        self.binary = resolve_binary(target, pid)
        self.offset, self.description = user_symbols.resolve_symbol(self.binary, symbol)
        self.symbol = symbol if isinstance(symbol, str) else f"{symbol:#x}"
        self.function = self.symbol.partition("@")[0]
        self.attach_pid = pid
        self.kind = kind or UPROBE
        self.probes = (UPROBE, URETPROBE) if kind is None else (kind,)
        self.entry_events = bool(entry_events)
        self.signature = self._signature(symbol) if isinstance(symbol, str) else None
        self.string_arg = self._string_index(string_arg)
        st = os.stat(self.binary)
        self._inode = (st.st_dev, st.st_ino)
        where = f" in process {pid}" if pid is not None else " in every process running it"
        self.why = ({None: "uprobe + uretprobe: the entry records the arguments and the "
                           "start time, the return emits one record with arguments, return "
                           "value and latency",
                     UPROBE: "uprobe only: one record per call at entry (arguments, no return "
                             "value)",
                     URETPROBE: "uretprobe only: one record per return (return value, no "
                                "arguments)"}[kind] + f"; on {self.description}{where}")
        if self.signature is None and isinstance(symbol, str):
            self.why += "; no DWARF for it: arguments are raw registers arg0..arg5"
        super().__init__(pid=pid, **kw)

    def _signature(self, symbol: str) -> Any:
        """The function's prototype from DWARF: the binary's or its debug
        file's, the compilation unit found by the symbol's address."""
        table = user_symbols.symbol_table(self.binary)
        try:
            address: Optional[int] = table.lookup(symbol).address
        except PytracersError:
            address = None
        return dwarf_signature(self.binary, self.function, address, table.debug_file)

    def _string_index(self, which: Union[int, str, None]) -> Optional[int]:
        """The index of the argument to read as a string (by index or by its
        DWARF name), checked."""
        sig = self.signature
        index = string_index(which, self.function, sig.params if sig is not None else None)
        if index is None:
            return None
        if self.probes == (URETPROBE,):
            raise BadArgumentError("a return-only tracer sees no arguments: string_arg needs "
                                   "the entry probe")
        return index

    # ---- setup ------------------------------------------------------------------------
    def _configure(self, open_obj: Any) -> None:
        progs = []
        if UPROBE in self.probes:
            progs.append("ufn_entry")
        if URETPROBE in self.probes:
            progs.append("ufn_return")
        open_obj.only(*progs)
        if self.string_arg is not None:
            open_obj.config["cfg_str_arg"] = self.string_arg + 1
        if self.probes == (UPROBE,):
            open_obj.config["cfg_entry_only"] = 1
        elif self.entry_events:
            open_obj.config["cfg_emit_entry"] = 1

    def _attach(self, obj: Any) -> None:
        sym: Union[str, int] = self.offset
        if UPROBE in self.probes:
            self._link(obj.programs["ufn_entry"].attach_uprobe(self.binary, sym,
                                                               pid=self.attach_pid))
        if URETPROBE in self.probes:
            self._link(obj.programs["ufn_return"].attach_uprobe(self.binary, sym,
                                                                pid=self.attach_pid,
                                                                retprobe=True))

    # ---- records ----------------------------------------------------------------------
    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fname = self.function
        sig = self.signature

        def name_of(ip: int) -> str:
            return fname

        def shape_of(_name: str) -> Shape:
            return signature_shape(sig) if sig is not None else raw_shape()
        return function_record_class(base, name_of, shape_of, "UserFunctionEvent",
                                     string_arg=self.string_arg)

    # ---- the traced process and file ----------------------------------------------------
    @property
    def process_exited(self) -> bool:
        """With ``pid``: has that process exited?  (False without one.)"""
        return self.attach_pid is not None and process_exited(self.attach_pid)

    @property
    def replaced_on_disk(self) -> bool:
        """Has the traced file been replaced or removed on disk since attaching?
        The probes stay on the old file: processes started from the new one are
        not traced."""
        try:
            st = os.stat(self.binary)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def events(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """As :meth:`Tracer.events`; with ``pid``, also ends once that process
        has exited and every record it left is read."""
        if self.attach_pid is None:
            yield from super().events(timeout)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            gone = self.process_exited
            step = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            got = 0
            for ev in super().events(step):
                got += 1
                yield ev
            if (gone and not got) or (deadline is not None and time.monotonic() >= deadline):
                return

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        pid = f" pid={self.attach_pid}" if self.attach_pid is not None else ""
        return f"<UserFunctionTracer {self.description}{pid}{state}>"
