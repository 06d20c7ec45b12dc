"""FunctionTracer: any kernel function, through kprobes or BPF trampolines.

One record per call (``func_event``, from func_event.h): the first six
arguments, the return value and the entry-to-return latency.

* ``kind="fentry"`` (fentry.bpf.o): ``fexit`` sees arguments and return value
  together and emits the record; ``fentry`` runs too only to time the call
  (``measure_latency``) or to emit entry events.  Trampolines are the cheaper
  mechanism (a direct call patched into the function, no breakpoint), and the
  verifier checks every argument read against the function's BTF prototype.
  The target is fixed before load: one loaded object per function.
* ``kind="kprobe"`` (kprobe.bpf.o): a kprobe records the argument registers
  and the start time, a kretprobe emits the record.  Works where trampolines
  are refused, and on functions without BTF.
* ``kind="kprobe_multi"``: the kprobe pair on every function matching a glob,
  through one multi-kprobe link each (CONFIG_FPROBE, 5.18+).

Arguments are named and typed from the kernel's BTF prototype of the function
(``Btf.vmlinux().func_proto``): ``ev.args`` is a named tuple
(``ev.args.dfd``), signed integer arguments are sign-converted to their width
and ``ev.ret`` to the return type's (an ``int`` -2 is -2, not 4294967294).
Without BTF for the function the arguments are ``arg0..arg5``, raw.

``string_arg`` (an argument's name or index) reads one ``char *`` argument
as a string (at most 63 bytes) in place of its address: from kernel memory,
or from the calling process's memory for a ``const char __user *`` (such as
``do_sys_openat2``'s ``filename``) -- the program tries the one, then the
other.  It is read when the record is emitted (at the return, through the
pointer seen at entry); a string the function changes or frees before
returning is read as it is then (entry records, ``entry_events=True``, read
it at entry).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Type, Union

from ..errors import BadArgumentError, BadTypeError
from ..kernel.symbols import (Signature, converter as _conv, filter_functions,
                              function_suggestions, kallsyms_matching, signature)
from ..kinds import FENTRY, KPROBE, KPROBE_MULTI
from ._func_records import (FN_ENTRY, FN_RETURN, NARGS, Shape, function_record_class, raw_shape,
                            signature_shape, string_index)
from .base import Tracer

__all__ = ["FunctionTracer", "Signature", "signature", "KINDS", "FN_ENTRY", "FN_RETURN"]

KINDS = (FENTRY, KPROBE, KPROBE_MULTI)
# The verifier's refusals of a trampoline argument (kernel/bpf/btf.c,
# btf_ctx_access); its log also has "func 'f' argN has btf_id ..." lines for
# the arguments it accepted, which must not match.
_REFUSED_ARG = re.compile(r"func '[^']*' arg(\d+) (?:type \w+ is not a struct|"
                          r"'[^']*' has type \w+\. Only pointer access is allowed)")
MAX_TRAMPOLINE_SLOTS = 12  # trampoline.h reads up to ctx[12]


class FunctionTracer(Tracer):
    """Trace calls of a kernel function: ``ev.name``, ``ev.args`` (named from
    BTF), ``ev.ret``, ``ev.latency_ns`` (None when the entry was not seen),
    ``ev.pid``, ``ev.tid``, ``ev.comm``, ``ev.ts_ns``.

    ``function``: a function name (kprobe_multi: a glob such as ``"vfs_*"``).
    ``kind``: fentry, kprobe or kprobe_multi.  ``measure_latency``: time each
    call (fentry: loads the fentry program too).  ``entry_events``: also emit
    a record at each entry (``ev.entry`` True, no ret).  ``string_arg``:
    one ``char *`` argument (its name or index from 0) read as a string.
    """

    event_struct = "func_event"
    record_internals = ("flags", "raw_args", "str")   # flags decide args/ret/latency_ns/entry

    def __init__(self, function: str, kind: str = FENTRY, *, measure_latency: bool = True,
                 entry_events: bool = False, string_arg: Union[int, str, None] = None,
                 **kw: Any) -> None:
        if not isinstance(function, str) or not function:
            raise BadTypeError("function must be a non-empty str")
        if kind not in KINDS:
            raise BadArgumentError(f"function tracer kind must be one of {', '.join(KINDS)}, "
                                   f"not {kind!r}")
        if kind != KPROBE_MULTI and any(c in function for c in "*?["):
            raise BadArgumentError(f"{function!r} is a pattern; only kind='kprobe_multi' "
                                   "attaches to many functions")
        self.function = function
        self.kind = kind
        self.object_name = FENTRY if kind == FENTRY else KPROBE  # type: ignore[misc]
        self.measure_latency = bool(measure_latency)
        self.entry_events = bool(entry_events)
        self.signature = signature(function) if kind != KPROBE_MULTI else None
        if kind == FENTRY and self.signature is None:
            raise function_not_found(function, "fentry needs the function in the kernel's BTF")
        sig = self.signature
        if kind == KPROBE_MULTI and isinstance(string_arg, str):
            raise BadArgumentError("kprobe_multi traces functions with different arguments: "
                                   "give string_arg as an index")
        self.string_arg = string_index(string_arg, function,
                                       sig.params if sig is not None else None,
                                       sig.types if sig is not None else None)
        self._names: Dict[int, str] = {}
        self.functions: List[str] = [] if kind == KPROBE_MULTI else [function]
        # argument slots / return value the kernel's verifier refuses to expose
        # to trampoline programs (5.10: pointers to anything but a struct)
        self._skip_slots: List[int] = []
        self._skip_ret = False
        self.why = {
            FENTRY: ("fentry/fexit: BPF trampolines called directly from the function (no "
                       "breakpoint trap), fexit sees arguments and return value together"),
            KPROBE: "kprobe/kretprobe: breakpoint-based probes on the function's entry and "
                      "return",
            KPROBE_MULTI: "kprobe_multi: one multi-kprobe (fprobe) link over every function "
                            "matching the pattern",
        }[kind]
        if kind != KPROBE_MULTI:
            super().__init__(**kw)
            return
        from ..errors import PytracersError
        from ..features import kprobe_multi_refusal
        try:
            super().__init__(**kw)
        except PytracersError as e:
            exc = kprobe_multi_refusal(e)
            if exc is e:
                raise
            raise exc from e

    # ---- setup ------------------------------------------------------------------------
    def _configure(self, open_obj: Any) -> None:
        cfg = open_obj.config
        if self.entry_events:
            cfg["cfg_emit_entry"] = 1
        if self.string_arg is not None:
            cfg["cfg_str_arg"] = self.string_arg + 1
        if self.kind == FENTRY:
            sig = self.signature
            assert sig is not None
            if sig.slots > MAX_TRAMPOLINE_SLOTS:
                raise BadArgumentError(f"{self.function} takes {sig.slots} argument slots; "
                                       f"trampolines handle at most {MAX_TRAMPOLINE_SLOTS}")
            progs = ["fn_fexit"]
            if self.measure_latency or self.entry_events:
                progs.append("fn_fentry")
            open_obj.only(*progs)
            for p in progs:
                open_obj.programs[p].set_attach_target(self.function)
            cfg["cfg_nargs"] = sig.slots
            cfg["cfg_skip_ret"] = 1 if sig.returns_void or self._skip_ret else 0
            cfg["cfg_skip_args"] = sum(1 << i for i in self._skip_slots)
            cfg["cfg_latency"] = 1 if self.measure_latency else 0
        elif self.kind == KPROBE:
            open_obj.only("fn_kprobe", "fn_kretprobe")
        else:
            open_obj.only("fn_kprobe_multi", "fn_kretprobe_multi")

    def _retry_after(self, error: Any) -> bool:
        """fentry/fexit: the verifier names an argument it will not expose
        ("func 'vfs_read' arg3 type INT is not a struct"): skip that slot and
        load again; its value is then reported as None."""
        if self.kind != FENTRY or self.signature is None:
            return False
        m = _REFUSED_ARG.search(getattr(error, "log", ""))
        if m is None:
            return False
        slot = int(m.group(1))
        if slot == self.signature.slots and not self._skip_ret:
            self._skip_ret = True
            return True
        if slot < self.signature.slots and slot not in self._skip_slots:
            self._skip_slots.append(slot)
            return True
        return False

    @property
    def skipped_args(self) -> List[str]:
        """Arguments the kernel would not let the program read (reported as None)."""
        sig = self.signature
        if sig is None:
            return []
        idx = {sig.param_of_slot(s) for s in self._skip_slots}
        return [p for i, p in enumerate(sig.params) if i in idx]

    def _attach(self, obj: Any) -> None:
        if self.kind == FENTRY:
            if "fn_fentry" in obj.programs:
                self._link(obj.programs["fn_fentry"].attach())
            self._link(obj.programs["fn_fexit"].attach())
        elif self.kind == KPROBE:
            self._link(obj.programs["fn_kprobe"].attach_kprobe(self.function))
            self._link(obj.programs["fn_kretprobe"].attach_kprobe(self.function, retprobe=True))
        else:
            names = self._multi_targets()
            self._link(obj.programs["fn_kprobe_multi"].attach_kprobe_multi(functions=names))
            self._link(obj.programs["fn_kretprobe_multi"].attach_kprobe_multi(
                functions=names, retprobe=True))

    def _multi_targets(self) -> List[str]:
        """The functions a kprobe_multi glob attaches to: text symbols of
        kallsyms matching it (read once; their addresses name the records),
        keeping only ftrace sites (available_filter_functions, when readable)
        -- a multi-kprobe is an fprobe, which needs one for every function."""
        self._names = kallsyms_matching(self.function)
        names = sorted(set(self._names.values()))
        sites = filter_functions()
        if sites is not None:
            names = [n for n in names if n in sites]
        if not names:
            raise function_not_found(self.function, "no traceable kernel function matches")
        self.functions = names
        return names

    # ---- records ----------------------------------------------------------------------
    def _name_of(self, ip: int) -> str:
        """Function name of address ``ip`` (kprobe_multi records)."""
        return self._names.get(ip) or f"0x{ip:x}"

    def _record_class(self, base: Type[Any]) -> Optional[Type[Any]]:
        fixed = self.function
        multi = self.kind == KPROBE_MULTI

        def name_of(ip: int) -> str:
            return self._name_of(ip) if multi else fixed

        def shape_of(fname: str) -> Shape:
            sig = signature(fname)
            if sig is None:
                return raw_shape()
            return signature_shape(sig, self.skipped_args if fname == fixed else ())
        string_arg = self.string_arg
        sig = self.signature
        if string_arg is not None and sig is not None and string_arg < len(sig.params) and \
                sig.params[string_arg] in self.skipped_args:
            string_arg = None           # the kernel would not expose it: None, not ""
        return function_record_class(base, name_of, shape_of, string_arg=string_arg)


def function_not_found(name: str, detail: str) -> Exception:
    from ..errors import TargetNotFoundError
    return TargetNotFoundError("kernel function", name, function_suggestions(name), detail=detail)
