"""UsdtTracer: USDT probes of user programs (``.note.stapsdt``), through libbpf.

One program (``usdt_probe`` in usdt.bpf.o) is attached with
``bpf_program__attach_usdt`` to each probe asked for; libbpf reads each
argument where the note says it is and extends it from its size, and
increments the probe's semaphore while attached (probes guarded by
``PROVIDER_NAME_ENABLED()`` fire only then).  One record per hit
(``usdt_event``): ``ev.provider``, ``ev.name``, ``ev.args`` typed by the
note's argument specs (``-4@%edi``: a signed 4-byte int), and the arguments
the caller named in ``strings=`` (by index: the note gives sizes, not types)
read as user-space strings of at most :data:`STR_LEN` - 1 bytes.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

from ..errors import BadArgumentError, BadTypeError
from ..kinds import USDT
from ..user.targets import resolve_binary
from ..user.usdt import UsdtProbe, find_probe, read_probes
from .base import Tracer

__all__ = ["UsdtTracer", "MAX_ARGS", "MAX_STRINGS", "STR_LEN"]

MAX_ARGS = 12       # usdt.bpf.c USDT_MAX_ARGS (libbpf reads at most 12)
MAX_STRINGS = 3     # usdt.bpf.c USDT_MAX_STRS
STR_LEN = 256       # usdt.bpf.c USDT_STR_LEN, with the NUL
_ID_SHIFT = 16      # the cookie's probe id; bits 0..11: 1 + argument index per string slot


def _check_strings(strings: Iterable[int], probe: UsdtProbe) -> Tuple[int, ...]:
    out: List[int] = []
    for i in strings:
        if isinstance(i, bool) or not isinstance(i, int):
            raise BadTypeError(f"strings= holds argument indexes (ints), not {i!r}")
        if not 0 <= i < len(probe.args):
            raise BadArgumentError(f"{probe.full_name} has {len(probe.args)} argument(s) "
                                   f"({probe.arg_specs or 'none'}); no argument {i}")
        if probe.args[i].size != 8:
            raise BadArgumentError(f"argument {i} of {probe.full_name} ({probe.args[i].spec}) "
                                   "is not pointer-sized: it cannot be a string")
        if i not in out:
            out.append(i)
    if len(out) > MAX_STRINGS:
        raise BadArgumentError(f"at most {MAX_STRINGS} string arguments per probe")
    return tuple(out)


class UsdtTracer(Tracer):
    """Trace USDT probes of one binary: ``ev.provider``, ``ev.name``,
    ``ev.args`` (typed; strings where asked), ``ev.pid``, ``ev.tid``,
    ``ev.comm``, ``ev.ts_ns``.

    ``target``: the executable or library (a path, or a name such as
    ``python3.11``/``libstdc++``; with ``pid``, looked up in that process's
    maps).  ``probes``: ``"provider:name"`` (or ``"name"``), or several.
    ``pid``: only that process (the probes are attached in it alone).
    ``strings``: the indexes of the arguments to read as strings, for every
    probe, or a dict ``{"provider:name": (indexes)}``.
    """

    object_name = USDT      # usdt.bpf.o
    event_struct = "usdt_event"
    kind = USDT
    record_internals = ("cookie", "nargs", "str_len", "strs")

    def __init__(self, target: str, probes: Union[str, Sequence[str]], *,
                 pid: Optional[int] = None,
                 strings: Union[Sequence[int], Dict[str, Sequence[int]]] = (),
                 **kw: Any) -> None:
        if isinstance(probes, str):
            probes = [probes]
        if not probes:
            raise BadArgumentError("name at least one USDT probe")
        self.path = resolve_binary(target, pid)
        notes = read_probes(self.path)
        self.probes: List[UsdtProbe] = []
        self.strings: List[Tuple[int, ...]] = []
        for spec in probes:
            p = find_probe(self.path, spec, notes)
            want = strings.get(spec, strings.get(p.full_name, ())) \
                if isinstance(strings, dict) else strings
            self.probes.append(p)
            self.strings.append(_check_strings(want, p))
        self.why = ("usdt: the program's own statically defined probes (.note.stapsdt), a "
                    "stable interface its authors maintain, attached as uprobes by libbpf "
                    "(semaphores incremented while attached)")
        super().__init__(pid=pid, **kw)

    def cookie(self, index: int) -> int:
        """The USDT cookie of probe ``index``: its id and its string slots."""
        c = index << _ID_SHIFT
        for slot, arg in enumerate(self.strings[index]):
            c |= (arg + 1) << (4 * slot)
        return c

    def _configure(self, open_obj: Any) -> None:
        open_obj.only("usdt_probe")

    def _attach(self, obj: Any) -> None:
        prog = obj.programs["usdt_probe"]
        for i, p in enumerate(self.probes):
            self._link(prog.attach_usdt(self.path, p.provider, p.name, pid=self.pid,
                                        cookie=self.cookie(i)))

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fields = base._fields
        i_cookie, i_args, i_strs, i_len = (fields.index(f) for f in
                                           ("cookie", "args", "strs", "str_len"))
        getitem = tuple.__getitem__
        tracer = self

        def probe(self: Any) -> UsdtProbe:
            return tracer.probes[getitem(self, i_cookie) >> _ID_SHIFT]

        def provider(self: Any) -> str:
            return probe(self).provider

        def name(self: Any) -> str:
            return probe(self).name

        def args(self: Any) -> Tuple[Any, ...]:
            idx = getitem(self, i_cookie) >> _ID_SHIFT
            p = tracer.probes[idx]
            raw = getitem(self, i_args)
            vals: List[Any] = [a.value(raw[i]) for i, a in enumerate(p.args[:MAX_ARGS])]
            blob = getitem(self, i_strs)
            lens = getitem(self, i_len)
            for slot, arg in enumerate(tracer.strings[idx]):
                if lens[slot] > 0:
                    vals[arg] = blob[slot * STR_LEN:slot * STR_LEN + lens[slot] - 1].decode(
                        "utf-8", "replace")
                else:        # not readable: keep the address
                    vals[arg] = None if vals[arg] == 0 else vals[arg]
            return tuple(vals)

        return type("UsdtEvent", (base,), {
            "__slots__": (), "__doc__": "A usdt_event record with the arguments typed by the "
                                        "probe's note",
            "probe": property(probe), "provider": property(provider), "name": property(name),
            "args": property(args)})

    def event_dict(self, ev: Any) -> Dict[str, Any]:
        d = super().event_dict(ev)
        d.pop("probe", None)
        return d
