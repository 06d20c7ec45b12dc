"""One event shape for functions, kernel and user alike.

Every function tracer (kprobes, trampolines, uprobes) delivers
``func_event`` records (``bpf_src/func_event.h``); the record class built here
turns them into the same attributes whatever the probe:

``name``        the function
``args``        a named tuple of its arguments, named and typed from its
                prototype (kernel: BTF; user: DWARF) -- its real arity,
                signed values sign-converted, pointers as addresses, a
                ``char *`` the caller asked for as a string; without a
                prototype ``arg0..arg5``, raw 64-bit registers
``ret``         the return value converted to the return type (None: not
                seen, or ``void``)
``latency_ns``  entry to return (None when the entry was not seen)
``entry``       an entry record (no ``ret``)

``repr(ev)`` shows these and the header (``ts_ns``, ``pid``, ``tid``,
``cpu``, ``comm``), never the padding and flag words.  Decoding costs one
tuple per record; ``args``/``ret`` are converted only when read.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from .base import named_tuple

__all__ = ["function_record_class", "Shape", "raw_shape", "signature_shape", "string_index",
           "STR_LEN",
           "FN_ENTRY", "FN_RETURN", "FN_HAS_ARGS", "FN_HAS_RET", "FN_HAS_LATENCY", "NARGS",
           "HIDDEN_FIELDS"]

NARGS = 6
STR_LEN = 64      # func_event.h FN_STR_LEN: a string argument keeps STR_LEN - 1 bytes
FN_ENTRY, FN_RETURN, FN_HAS_ARGS, FN_HAS_RET, FN_HAS_LATENCY = 1, 2, 4, 8, 16
HIDDEN_FIELDS = ("flags", "raw_args", "str")
_SHOWN = ("name", "args", "ret", "latency_ns")
_MASK64 = 0xFFFFFFFFFFFFFFFF

# (raw args -> named tuple, raw return register -> value)
Shape = Tuple[Callable[[Sequence[int]], Any], Callable[[int], Any]]


def _void(v: int) -> None:
    return None


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def raw_shape() -> Shape:
    """No prototype: ``arg0..arg5`` as raw registers, ``ret`` a signed 64-bit value."""
    nt = named_tuple("args", [f"arg{i}" for i in range(NARGS)])
    return (lambda raw, _nt=nt: _nt._make(raw)), _signed64


def signature_shape(sig: Any, skip: Sequence[str] = ()) -> Shape:
    """Arguments and return value shaped by a
    :class:`~pytracers.kernel.symbols.Signature` (its first six parameters);
    parameters named in ``skip`` read as None."""
    n = min(len(sig.params), NARGS)
    nt = named_tuple(f"{sig.name}_args", sig.params[:n])
    convs: List[Callable[[int], Any]] = [(_void if p in skip else c)
                                         for p, c in zip(sig.params[:n], sig.arg_convs[:n])]
    return ((lambda raw, _nt=nt, _c=convs: _nt._make([c(v) for c, v in zip(_c, raw)])),
            sig.ret_conv or _void)


def string_index(which: Any, function: str, params: Optional[Sequence[str]] = None,
                 types: Optional[Sequence[str]] = None) -> Optional[int]:
    """The index of the argument to read as a string, from ``which`` (an
    argument's name or its index; None: none), checked against the
    prototype where known: ``params`` (names) and ``types`` (C types; a
    string argument must be a pointer).  Raises BadArgumentError."""
    from ..errors import BadArgumentError
    if which is None:
        return None
    names = tuple(params) if params is not None else tuple(f"arg{i}" for i in range(NARGS))
    if isinstance(which, str):
        if which not in names:
            raise BadArgumentError(f"{function} has no argument {which!r} "
                                   f"(arguments: {', '.join(names) or 'none'})")
        which = names.index(which)
    if isinstance(which, bool) or not isinstance(which, int) or not 0 <= which < NARGS:
        raise BadArgumentError(f"string_arg must be an argument name or an index "
                               f"0..{NARGS - 1}, got {which!r}")
    if params is not None and which >= len(names):
        raise BadArgumentError(f"{function} takes {len(names)} argument(s); it has no "
                               f"argument {which}")
    if types is not None and which < len(types) and not types[which].rstrip().endswith("*"):
        raise BadArgumentError(f"argument {which} of {function} ({names[which]}) is "
                               f"{types[which]!r}, not a pointer: it cannot be read as a string")
    return which


def function_record_class(base: Type[Any], name_of: Callable[[int], str],
                          shape_of: Callable[[str], Shape],
                          cls_name: str = "FunctionEvent",
                          string_arg: Optional[int] = None) -> Type[Any]:
    """The record class over ``base`` (the func_event BTF record class):
    ``name_of(ip)`` names the function of a record, ``shape_of(name)`` gives
    its :data:`Shape` (called once per function; cache inside).
    ``string_arg``: the index of the argument the program read as a string
    into the record's ``str`` field; ``args`` then holds that string."""
    fields = base._fields
    i_str = fields.index("str") if string_arg is not None and "str" in fields else None
    i_ip, i_args, i_ret, i_lat, i_flags = (fields.index(f) for f in
                                           ("ip", "args", "ret", "latency_ns", "flags"))
    getitem = tuple.__getitem__
    shapes: Dict[str, Shape] = {}
    header = tuple(f for f in fields if not f.startswith("_") and f not in
                   ("ip", "args", "ret", "latency_ns", "flags", "str"))

    def shape(fname: str) -> Shape:
        s = shapes.get(fname)
        if s is None:
            s = shapes[fname] = shape_of(fname)
        return s

    def name(self: Any) -> str:
        return name_of(getitem(self, i_ip))

    def args(self: Any) -> Any:
        if not getitem(self, i_flags) & FN_HAS_ARGS:
            return None
        a = shape(self.name)[0](getitem(self, i_args))
        if i_str is not None and string_arg is not None and string_arg < len(a):
            a = a._replace(**{a._fields[string_arg]: getitem(self, i_str)})
        return a

    def ret(self: Any) -> Any:
        if not getitem(self, i_flags) & FN_HAS_RET:
            return None
        return shape(self.name)[1](getitem(self, i_ret) & _MASK64)

    def latency_ns(self: Any) -> Optional[int]:
        if not getitem(self, i_flags) & FN_HAS_LATENCY:
            return None
        return getitem(self, i_lat)

    def entry(self: Any) -> bool:
        return bool(getitem(self, i_flags) & FN_ENTRY)

    def raw_args(self: Any) -> Tuple[int, ...]:
        return getitem(self, i_args)

    def __repr__(self: Any) -> str:
        parts = [f"{f}={getattr(self, f)!r}" for f in header]
        parts += [f"{f}={getattr(self, f)!r}" for f in _SHOWN]
        if self.entry:
            parts.append("entry=True")
        return f"{cls_name}({', '.join(parts)})"

    return type(cls_name, (base,), {
        "__slots__": (), "__doc__": "A func_event record with the arguments named and typed "
                                    "from the function's prototype",
        "name": property(name), "args": property(args), "ret": property(ret),
        "latency_ns": property(latency_ns), "entry": property(entry),
        "raw_args": property(raw_args), "__repr__": __repr__})
