"""PythonTracer: what a CPython interpreter does, from its own USDT probes.

CPython built with ``--with-dtrace`` (Debian's ``/usr/bin/python3.*`` is;
pyenv's and python.org's builds usually are not) carries probes in
``.note.stapsdt``: ``import__find__load__start``/``done``, ``gc__start``/
``done``, ``function__entry``/``return``, ``line``, ``audit``.  This tracer
attaches to them (through :class:`~pytracers.tracers.user_usdt.UsdtTracer`) and
pairs starts with ends per thread:

* :class:`PyImport` -- a module loaded (not found in ``sys.modules``): its
  name, whether it was found, the load time;
* :class:`PyGC` -- a collection: generation, objects collected, duration;
* :class:`PyCall` -- with ``functions=True``, a function entry or return:
  file, function, line.

**Function events are incomplete.**  Measured on Debian's python3.11 (with
this tracer and, independently, with bpftrace): a function ``f`` called 21
times (7 times directly, 7 through ``map``, 7 from a list comprehension)
gave 21 ``function__return`` events and no ``function__entry`` event; in the
whole run of that script ``function__entry`` fired 5 times (generator frames
of the interpreter's start-up being resumed) against 2,272 returns.  CPython
3.11 runs a Python-to-Python call inside the same evaluation loop (the call
is inlined, no new C-level frame) and its entry probe sits on a path those
calls do not take; the return probe is on every frame's exit.  So count
calls by their ``return`` events; do not expect an entry for each.
``t.why`` says so.
"""
from __future__ import annotations

import os
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, NamedTuple, Optional, \
    Tuple

from ..errors import BadArgumentError, TargetNotFoundError
from ..user.targets import mapped_files, resolve_binary
from ..user.usdt import read_probes
from .user_usdt import UsdtTracer

__all__ = ["PythonTracer", "PyImport", "PyGC", "PyCall", "PROBES", "interpreter_of"]

PROVIDER = "python"
FUNCTIONS_RING_SIZE = 16 << 20  # the default ring with functions=True (records are ~900 bytes)
# (probe, the arguments that are strings), in cookie-id order
PROBES: Tuple[Tuple[str, Tuple[int, ...]], ...] = (
    ("import__find__load__start", (0,)),
    ("import__find__load__done", (0,)),
    ("gc__start", ()),
    ("gc__done", ()),
    ("function__entry", (0, 1)),
    ("function__return", (0, 1)),
)
_IMPORT_START, _IMPORT_DONE, _GC_START, _GC_DONE, _ENTRY, _RETURN = range(len(PROBES))
_INLINED = ("function__entry does not fire for calls CPython 3.11 runs inside its "
            "evaluation loop (inlined Python-to-Python calls; measured on Debian's 3.11: "
            "none for a function called 21 times, whose 21 returns all fired): count calls "
            "by their 'return' events")


class PyImport(NamedTuple):
    """A module load (``import__find__load__start`` .. ``done``)."""
    module: str
    found: Optional[bool]
    duration_ns: Optional[int]
    """None when the start was not seen (the tracer attached in between)."""
    ts_ns: int
    pid: int
    tid: int


class PyGC(NamedTuple):
    """A garbage collection (``gc__start`` .. ``gc__done``)."""
    generation: Optional[int]
    """None when the start was not seen."""
    collected: int
    duration_ns: Optional[int]
    ts_ns: int
    pid: int
    tid: int


class PyCall(NamedTuple):
    """A function entry or return (``function__entry`` / ``function__return``)."""
    phase: str
    """"entry" or "return"."""
    file: str
    function: str
    line: int
    ts_ns: int
    pid: int
    tid: int


def interpreter_of(pid: int) -> str:
    """The file of process ``pid`` that holds CPython's USDT probes: its
    executable, else a mapped ``libpython``."""
    files = mapped_files(pid, openable=True)
    candidates = [f for f in files if "python" in os.path.basename(f)]
    for path in candidates:
        if any(p.provider == PROVIDER for p in read_probes(path)):
            return path
    raise TargetNotFoundError("USDT probes of CPython", f"process {pid}",
                              detail="this interpreter has no USDT probes (CPython was built "
                                     "without --with-dtrace); checked: "
                                     + (", ".join(candidates) or "no python file mapped"))


class PythonTracer(UsdtTracer):
    """Imports, garbage collections and (``functions=True``) function
    entries/returns of CPython interpreters, from their USDT probes.

    ``binary``: the interpreter (a path or a name: ``python3.11``; every
    process running it is traced), or ``pid``: one process (its
    interpreter found in its maps).  Iterating yields :class:`PyImport`,
    :class:`PyGC` and :class:`PyCall` values.
    """

    def __init__(self, binary: Optional[str] = None, *, pid: Optional[int] = None,
                 functions: bool = False, **kw: Any) -> None:
        if binary is None and pid is None:
            raise BadArgumentError("name the interpreter (binary='/usr/bin/python3.11') or a "
                                   "process (pid=)")
        path = resolve_binary(binary, pid) if binary is not None else interpreter_of(pid or 0)
        have = {p.name for p in read_probes(path) if p.provider == PROVIDER}
        if not have:
            raise TargetNotFoundError("USDT probes of CPython", path,
                                      detail="this interpreter has no USDT probes (CPython "
                                             "was built without --with-dtrace); Debian's "
                                             "/usr/bin/python3.* has them")
        wanted = PROBES if functions else PROBES[:_ENTRY]
        missing = [n for n, _s in wanted if n not in have]
        if missing:
            raise TargetNotFoundError("USDT probes of CPython", ", ".join(missing),
                                      detail=f"{path} has only {', '.join(sorted(have))}")
        self.functions = bool(functions)
        if functions:       # thousands of returns a second: room for a burst
            kw.setdefault("ring_size", FUNCTIONS_RING_SIZE)
        self._starts: Dict[Tuple[int, int], List[Tuple[Any, int]]] = {}
        super().__init__(path, [f"{PROVIDER}:{n}" for n, _s in wanted], pid=pid,
                         strings={f"{PROVIDER}:{n}": s for n, s in wanted}, **kw)
        self.why = ("python: CPython's own USDT probes (imports, garbage collections"
                    + (", function entry/return" if functions else "") + f") in {path}"
                    + (f"; incomplete: {_INLINED}" if functions else ""))

    # ---- raw records -> PyImport / PyGC / PyCall ---------------------------------
    def translate(self, ev: Any) -> Any:
        """The event a raw ``usdt_event`` record makes (None: a start, kept
        until its end arrives)."""
        which = ev.cookie >> 16
        args = ev.args
        key = (which if which in (_IMPORT_START, _GC_START) else which - 1, ev.tid)
        if which in (_IMPORT_START, _GC_START):
            self._starts.setdefault(key, []).append((args[0], ev.ts_ns))
            return None
        if which in (_ENTRY, _RETURN):
            return PyCall("entry" if which == _ENTRY else "return", args[0] or "",
                          args[1] or "", args[2], ev.ts_ns, ev.pid, ev.tid)
        stack = self._starts.get(key)
        start = stack.pop() if stack else None
        if which == _IMPORT_DONE:
            module = args[0] if args[0] is not None else (start[0] if start else "")
            return PyImport(module, bool(args[1]), ev.ts_ns - start[1] if start else None,
                            ev.ts_ns, ev.pid, ev.tid)
        return PyGC(start[0] if start else None, args[0],
                    ev.ts_ns - start[1] if start else None, ev.ts_ns, ev.pid, ev.tid)

    def _translated(self, raw: Iterator[Any]) -> Iterator[Any]:
        for ev in raw:
            out = self.translate(ev)
            if out is not None:
                yield out

    def events(self, timeout: Optional[float] = None) -> Iterator[Any]:
        return self._translated(super().events(timeout))

    def read(self, timeout: float = 0.0) -> List[Any]:
        return list(self._translated(iter(super().read(timeout))))

    def poll(self, timeout: Optional[float] = None,
             callback: Optional[Callable[[Any], Any]] = None) -> int:
        if callback is None:
            raise BadArgumentError("poll() needs a callback")
        cb = callback

        def each(ev: Any) -> Any:
            out = self.translate(ev)
            return True if out is None else cb(out)
        return super().poll(timeout, each)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aevents()

    async def _aevents(self) -> AsyncIterator[Any]:
        async for ev in super().__aiter__():
            out = self.translate(ev)
            if out is not None:
                yield out

    def event_dict(self, ev: Any) -> Dict[str, Any]:
        d: Dict[str, Any] = {"event": type(ev).__name__}
        d.update(ev._asdict())
        return d
