"""Which probe should I choose?  ``trace_function`` and ``trace_syscall`` answer
on the running kernel, and say why in ``t.why``.

    with pytracers.trace_function("do_unlinkat") as t:     # fentry, else kprobe
        for ev in t.events(timeout=1.0):
            print(ev.pid, ev.comm, ev.args, ev.ret, ev.latency_ns)
    with pytracers.trace_syscall("openat") as t: ...       # tp, else tp_btf, else raw_tp

Choice rules
------------
For a kernel function (``trace_function(name, kind=None, stable=False)``):

1. ``kind`` given: exactly that kind (fentry/fexit -> the trampoline tracer,
   kprobe/kretprobe -> the kprobe tracer, kprobe_multi -> a glob); its failure
   is raised as is -- no fallback behind the caller's back.
2. ``stable=True``: a matching tracepoint instead of the function.  A kernel
   function is internal: it may be renamed, inlined or change its arguments
   between releases (``do_unlinkat`` returned ``long`` in 5.10 and ``int``
   later), while tracepoints are a stable interface.  The syscall a function
   implements is found from a small table (``do_unlinkat`` -> unlink,
   unlinkat) or by its name (``__x64_sys_X``, ``__arm64_sys_X``, ``ksys_X``, ``do_sys_X``,
   ``do_X`` -> syscall X), and traced with the per-syscall tracepoints (tp).
   No matching tracepoint: TargetNotFoundError.
3. Otherwise fentry/fexit first: a trampoline is a direct call (no
   breakpoint trap), the verifier types the arguments from BTF, and fexit sees
   arguments and return value together.
4. kprobe/kretprobe when trampolines are refused (EPERM from a security
   module, no trampoline support) or missing for this function (no BTF).
5. Neither works: NotSupportedError naming both refusals ("fentry: ...;
   kprobe: ..."), or TargetNotFoundError (with suggestions) when the function
   exists neither in BTF nor in kallsyms.

For a syscall (``trace_syscall(name, kind=None)``):

1. ``kind`` given (tp, raw_tp, tp_btf): exactly that kind.
2. Otherwise tp: the per-syscall tracepoint ``syscalls:sys_enter_<X>`` costs
   only calls of X, while raw_tp and tp_btf on ``sys_enter`` run on every
   syscall of the system (and drop the others by id in BPF).  So tp unless
   the kernel has no syscall tracepoints; then tp_btf (cheapest per call),
   then raw_tp.  ``t.why`` states the trade-off.

For a user-space function (``trace_user_function(target, symbol, pid=None,
kind=None)``):

1. ``kind`` given (uprobe or uretprobe): the uprobe + uretprobe pair on the
   symbol (arguments, return value, latency), as ``kind="kprobe"`` gives the
   kprobe pair for a kernel function.
2. Otherwise a USDT probe of that name where the binary has one
   (:func:`usdt_alternative`): a USDT probe is the program's documented,
   stable interface -- the user-space tracepoint -- while a symbol is internal
   code that a new build may rename, inline or change.
3. Else the uprobe pair on the symbol; ``t.why`` says that it follows the
   code (like a kprobe) and how the target was resolved.

For any tracepoint (``trace_tracepoint("category:name")``): tp, the only
kind whose context is the tracepoint's record as its format file describes
it; raw_tp and tp_btf hand over the kernel's own arguments (pointers to
internal structs), different for every tracepoint and kernel.

For user space (``trace_usdt(target, "provider:name")``): a USDT probe is the
program's own stable, documented probe point -- the user-space tracepoint.
:func:`usdt_for_function` is the rule a user-function chooser applies with
``kind=None``: where the binary has a USDT probe of that name, it is preferred
to a uprobe on the symbol (which reaches any function but breaks when the
code changes: renamed, inlined, arguments moved).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import BadArgumentError, NotSupportedError, TargetNotFoundError
from .kinds import (FENTRY, FEXIT, KPROBE, KPROBE_MULTI, KRETPROBE, RAW_TP, TP, TP_BTF, UPROBE,
                    URETPROBE)
from .tracers.base import Tracer
from .tracers.syscalls import SyscallTracer, kernel_syscalls, tracepoint_name

if TYPE_CHECKING:
    from .tracers.python import PythonTracer
    from .tracers.tracepoint import TracepointTracer
    from .tracers.user_usdt import UsdtTracer

__all__ = ["trace_function", "trace_syscall", "trace_tracepoint", "stable_tracepoints",
           "trace_usdt", "trace_python", "usdt_for_function",
           "FUNCTION_KINDS", "SYSCALL_KINDS", "TRACEPOINT_KINDS"]



def __getattr__(name: str) -> Any:
    """``FunctionTracer`` and the kernel-symbol look-ups load on first use:
    the syscall and tracepoint paths need neither (kernel.symbols brings
    dataclasses and inspect).  A test may replace them (monkeypatch)."""
    value: Any
    if name == "FunctionTracer":
        from .tracers.function import FunctionTracer as value
    elif name in ("function_exists", "function_suggestions"):
        from .kernel import symbols
        value = getattr(symbols, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _get(name: str) -> Any:
    return globals()[name] if name in globals() else __getattr__(name)


FUNCTION_KINDS = {FENTRY: FENTRY, FEXIT: FENTRY, KPROBE: KPROBE,
                  KRETPROBE: KPROBE, KPROBE_MULTI: KPROBE_MULTI}
SYSCALL_KINDS = (TP, RAW_TP, TP_BTF)
SYSCALL_FALLBACK = (TP, TP_BTF, RAW_TP)
TRACEPOINT_KINDS = (TP,)

# Kernel functions whose callers are several syscalls (the name rule finds one).
STABLE = {
    "do_unlinkat": ("unlink", "unlinkat"),
    "filename_unlinkat": ("unlink", "unlinkat"),        # do_unlinkat's name in 7.x
    "do_rmdir": ("rmdir", "unlinkat"),
    "do_mkdirat": ("mkdir", "mkdirat"),
    "do_sys_open": ("open", "openat"),
    "do_sys_openat2": ("open", "openat", "openat2"),
    "do_renameat2": ("rename", "renameat", "renameat2"),
    "do_linkat": ("link", "linkat"),
    "do_symlinkat": ("symlink", "symlinkat"),
    "do_execve": ("execve",),
    "do_execveat_common": ("execve", "execveat"),
    "do_fchmodat": ("chmod", "fchmodat"),
    "do_faccessat": ("access", "faccessat", "faccessat2"),
    "ksys_read": ("read",),
    "ksys_write": ("write",),
}
_PREFIXES = ("__x64_sys_", "__ia32_sys_", "__arm64_sys_", "__arm64_compat_sys_", "__se_sys_",
             "__do_sys_", "__sys_", "ksys_", "do_sys_", "do_", "sys_")


def stable_tracepoints(function: str) -> List[str]:
    """Syscalls whose tracepoints stand in for kernel function ``function``
    (empty when none matches); only syscalls this kernel traces."""
    have = kernel_syscalls()
    if have is None:
        return []
    have_set = set(have)
    cands: Sequence[str] = STABLE.get(function, ())
    if not cands:
        for p in _PREFIXES:
            if function.startswith(p) and len(function) > len(p):
                cands = (function[len(p):],)
                break
        else:
            cands = (function,)
    return [c for c in cands if tracepoint_name(c) in have_set]


def trace_function(name: str, kind: Optional[str] = None, stable: bool = False,
                   **filters: Any) -> Tracer:
    """Trace kernel function ``name`` with the best probe this kernel allows
    (see the module docstring for the rules).  Returns a started tracer:
    use it as a context manager; ``t.kind``, ``t.why``, ``t.events(timeout)``
    yield events with ``pid, tid, comm, args, ret, latency_ns``.

    ``filters``: ``pid=``, ``comm=`` and the other tracer options
    (``ring_size=``, ``wakeup_bytes=``...); ``string_arg=`` (an argument's
    name or index) reads a ``char *`` argument as its string.
    """
    if not isinstance(name, str) or not name:
        raise BadArgumentError("trace_function() needs a function name")
    if stable and filters.get("string_arg") is not None:
        raise BadArgumentError("string_arg reads an argument of the function itself; the "
                               "stable=True tracepoints have their own fields")
    FunctionTracer = _get("FunctionTracer")
    function_exists = _get("function_exists")
    if stable:
        if kind is not None and kind not in (TP,):
            raise BadArgumentError("stable=True traces a tracepoint; do not also pass "
                                   f"kind={kind!r}")
        syscalls = stable_tracepoints(name)
        if not syscalls:
            raise TargetNotFoundError(
                "stable tracepoint for kernel function", name,
                detail="no syscall tracepoint corresponds to it; trace the function itself "
                       "with stable=False (fentry or kprobe)")
        st = SyscallTracer(syscalls, kind=TP, **filters)
        st.why = (f"stable=True: {name} is an internal kernel function whose name and "
                 f"arguments may change between releases; the syscall tracepoints of "
                  f"{', '.join(syscalls)} are a stable interface. " + st.why)
        return st
    if kind is not None:
        k = FUNCTION_KINDS.get(kind)
        if k is None:
            raise BadArgumentError(f"kind must be one of {', '.join(FUNCTION_KINDS)}, "
                                   f"not {kind!r}")
        t = FunctionTracer(name, kind=k, **filters)
        t.why = f"kind={kind!r} requested. " + t.why
        return t
    refusals: List[Tuple[str, Exception]] = []
    for k in (FENTRY, KPROBE):
        if k == KPROBE and isinstance(refusals[0][1], TargetNotFoundError) and \
                function_exists(name) is False:
            raise refusals[0][1]          # in neither BTF nor kallsyms: no kprobe either
        try:
            t = FunctionTracer(name, kind=k, **filters)
        except (NotSupportedError, TargetNotFoundError) as e:
            refusals.append((k, e))
            continue
        if k == FENTRY:
            t.why = ("fentry/fexit chosen first: BPF trampolines work here and " + name +
                     " has BTF; a trampoline is a direct call (no breakpoint trap), its "
                     "arguments are typed by the verifier, and fexit sees arguments and return "
                     "value together")
        else:
            t.why = (f"kprobe chosen because fentry was refused ({_short(refusals[0][1])}); "
                     "kprobe/kretprobe are breakpoint probes on entry and return")
        return t
    if all(isinstance(e, TargetNotFoundError) for _k, e in refusals) or \
            function_exists(name) is False:
        missing = [e for _k, e in refusals if isinstance(e, TargetNotFoundError)]
        if missing:
            raise missing[-1]
        raise TargetNotFoundError("kernel function", name, _get("function_suggestions")(name),
                                  detail="in neither the kernel's BTF nor kallsyms")
    reason = "; ".join(f"{k}: {_short(e)}" for k, e in refusals)
    raise NotSupportedError(f"tracing kernel function {name}", reason,
                            hint="trace a tracepoint instead: trace_function(name, "
                                 "stable=True) or trace_syscall()")


def _short(e: Exception) -> str:
    if isinstance(e, NotSupportedError):
        return e.reason
    return str(e)


def trace_syscall(name: Union[str, Sequence[str]], kind: Optional[str] = None,
                  **filters: Any) -> SyscallTracer:
    """Trace syscall(s) ``name`` with the cheapest probe for the job (see the
    module docstring).  Returns a started :class:`SyscallTracer`."""
    if kind is not None:
        if kind not in SYSCALL_KINDS:
            raise BadArgumentError(f"kind must be one of {', '.join(SYSCALL_KINDS)}, "
                                   f"not {kind!r}")
        st = SyscallTracer(name, kind=kind, **filters)
        st.why = f"kind={kind!r} requested. " + st.why
        return st
    refusals: Dict[str, NotSupportedError] = {}
    for k in SYSCALL_FALLBACK:
        try:
            t = SyscallTracer(name, kind=k, **filters)
        except NotSupportedError as e:
            refusals[k] = e
            continue
        if k == TP:
            t.why += ("; chosen over raw_tp/tp_btf, whose sys_enter/sys_exit probes would run "
                      "on every syscall of the system")
        else:
            t.why = ("; ".join(f"{r} unavailable ({e.reason})" for r, e in refusals.items())
                     + ". " + t.why)
        return t
    raise NotSupportedError("syscall tracing", "; ".join(f"{k}: {e.reason}"
                                                         for k, e in refusals.items()))


def trace_tracepoint(name: str, kind: Optional[str] = None,
                     **filters: Any) -> "TracepointTracer":
    """Trace tracepoint ``name`` (``"category:name"``), its fields decoded by
    the kernel's format file.  Returns a started
    :class:`~pytracers.tracers.TracepointTracer` (``t.kind``, ``t.why``,
    ``t.events(timeout)``, ``t.truncated``).

    ``kind``: None or ``"tp"`` (see the module docstring).  ``filters``:
    ``pid=``, ``comm=``, ``payload_bytes=`` and the other tracer options.
    """
    if kind is not None and kind not in TRACEPOINT_KINDS:
        raise BadArgumentError(f"an arbitrary tracepoint is traced with tp only, not {kind!r}: "
                               "raw_tp and tp_btf hand over the kernel's own arguments, not "
                               "the record its format file describes")
    from .tracers.tracepoint import TracepointTracer
    t = TracepointTracer(name, **filters)
    t.why = (f"kind={kind!r} requested. " if kind else "") + t.why + (
        "; chosen over raw_tp/tp_btf, which hand over the kernel's own arguments (pointers "
        "to internal structs) rather than this record" if kind is None else "")
    return t


# ---- every syscall, and syscall statistics ----------------------------------------------

if TYPE_CHECKING:
    from .tracers.syscalls import SyscallStats

ALL_SYSCALLS_FALLBACK = (TP_BTF, RAW_TP)


def trace_all_syscalls(kind: Optional[str] = None, **filters: Any) -> SyscallTracer:
    """Trace every syscall of the system.  Returns a started
    :class:`SyscallTracer`; ``t.why`` says which kind and why.

    Rule: ``kind`` given (raw_tp or tp_btf): exactly that kind.  Otherwise
    tp_btf, else raw_tp where the kernel lacks it: both run on every
    syscall anyway, so with every syscall wanted the cost per call decides,
    and tp_btf's typed arguments are the cheapest.  tp is no choice here: it
    attaches one tracepoint pair per syscall (BadArgumentError).  Neither
    kind works: NotSupportedError naming both refusals."""
    return _all_syscalls(SyscallTracer, kind, "syscall tracing", filters)


def syscall_stats(syscalls: Union[str, Sequence[str], None] = None, kind: Optional[str] = None,
                  **filters: Any) -> "SyscallStats":
    """Count syscalls in the kernel (:class:`~pytracers.tracers.SyscallStats`)
    with the probe the syscall rules choose.  Returns a started tracer.

    Rule: ``kind`` given: exactly that kind.  Named ``syscalls``: tp, else
    tp_btf, else raw_tp, as :func:`trace_syscall` (only the named syscalls
    pay); ``t.why`` starts with the kinds refused.  None: every syscall, as
    :func:`trace_all_syscalls` (tp_btf, else raw_tp).  No kind works:
    NotSupportedError naming each refusal."""
    from .tracers.syscalls import SyscallStats
    if syscalls is None:
        return _all_syscalls(SyscallStats, kind, "syscall statistics", filters)
    t, refused = _first_that_works(lambda k: SyscallStats(syscalls, kind=k, **filters),
                                   kind, SYSCALL_FALLBACK, "syscall statistics")
    t.why = "; ".join(refused + [t.why])
    return t


def _all_syscalls(cls: Any, kind: Optional[str], feature: str, filters: Dict[str, Any]) -> Any:
    t, refused = _first_that_works(lambda k: cls(None, kind=k, **filters), kind,
                                   ALL_SYSCALLS_FALLBACK, feature)
    if kind:
        t.why = f"kind {kind} requested. " + t.why
    else:
        t.why = "; ".join(refused + [t.why + " (every syscall is wanted here, so the "
                                             "per-call cost decides)"])
    return t


def _first_that_works(make: Callable[[str], Any], kind: Optional[str],
                      fallback: Sequence[str], feature: str) -> Tuple[Any, List[str]]:
    """``make(k)`` for ``kind`` alone when given (its refusal raised as is),
    else for each kind of ``fallback`` until one is not refused; the tracer
    and the refusals before it ("k unavailable (reason)").  None works:
    NotSupportedError for ``feature`` naming each refusal."""
    refused: List[str] = []
    for k in ([kind] if kind else fallback):
        try:
            return make(k), refused
        except NotSupportedError as e:
            if kind:
                raise
            refused.append(f"{k} unavailable ({e.reason})")
    raise NotSupportedError(feature, "; ".join(refused))


__all__ += ["trace_all_syscalls", "syscall_stats", "trace_user_function", "usdt_alternative",
            "USER_FUNCTION_KINDS", "trace_usdt", "trace_python", "usdt_for_function"]

USER_FUNCTION_KINDS = (UPROBE, URETPROBE)


def usdt_alternative(target: str, symbol: Union[str, int], pid: Optional[int] = None,
                     **filters: Any) -> Optional[Tracer]:
    """Rule 2 for user functions: a started tracer on the USDT probe named
    ``symbol`` (``"name"`` or ``"provider:name"``) of ``target`` when the
    binary has exactly one, else None (then a uprobe on the symbol)."""
    if not isinstance(symbol, str):
        return None
    from .user.targets import resolve_binary
    probe = usdt_for_function(resolve_binary(target, pid), symbol)
    if probe is None:
        return None
    t = trace_usdt(target, probe, pid=pid, **filters)
    t.why = (f"USDT probe {probe} chosen over a uprobe on {symbol!r}: " + t.why)
    return t


def trace_user_function(target: str, symbol: Union[str, int], pid: Optional[int] = None,
                        kind: Optional[str] = None, **filters: Any) -> Tracer:
    """Trace function ``symbol`` (a name or a file offset) of user-space binary
    ``target`` (a path, a library name such as ``libc``, a command; with
    ``pid``, the file that process mapped, and only that process).  Returns a
    started tracer whose events have ``name, args, ret, latency_ns, pid, tid,
    comm``; ``t.why`` says which probe and why (rules in the module
    docstring).  ``filters``: ``comm=``, ``ring_size=``..."""
    from .tracers.user_function import UserFunctionTracer
    if not isinstance(target, str) or not target:
        raise BadArgumentError("trace_user_function() needs a target binary or library")
    if kind is not None:
        if kind not in USER_FUNCTION_KINDS:
            raise BadArgumentError(f"kind must be one of {', '.join(USER_FUNCTION_KINDS)} "
                                   f"or None, not {kind!r}")
        t = UserFunctionTracer(target, symbol, pid=pid, **filters)
        t.why = f"kind={kind!r} requested: " + t.why
        return t
    alt = usdt_alternative(target, symbol, pid, **filters)
    if alt is not None:
        return alt
    t = UserFunctionTracer(target, symbol, pid=pid, **filters)
    t.why = ("a uprobe on the symbol (no USDT probe of that name to prefer): it follows the "
             "code, so a new build may rename, inline or change it; " + t.why)
    return t


# ---------------------------------------------------------------------- user space

def trace_usdt(target: str, probe: Union[str, Sequence[str]], pid: Optional[int] = None,
               strings: Any = (), **kw: Any) -> "UsdtTracer":
    """Trace USDT probe ``probe`` (``"provider:name"``, or several) of
    ``target`` (a path, or a library/program name; with ``pid``, as that
    process mapped it): a :class:`~pytracers.tracers.UsdtTracer`.
    ``strings``: the indexes of the arguments to read as strings (the note
    gives sizes, not types: ``char *`` is only in the probe's documentation).
    """
    from .tracers.user_usdt import UsdtTracer
    t = UsdtTracer(target, probe, pid=pid, strings=strings, **kw)
    t.why = ("a USDT probe is the program's own stable probe point (like a tracepoint): "
             "its name and arguments are part of the program's interface, while a uprobe "
             "on a symbol breaks when the code changes. " + t.why)
    return t


def trace_python(binary: Optional[str] = None, pid: Optional[int] = None,
                 functions: bool = False, **kw: Any) -> "PythonTracer":
    """Imports, garbage collections and (``functions=True``) function
    returns of a CPython interpreter, from its USDT probes: a
    :class:`~pytracers.tracers.PythonTracer` (``t.why`` says what it cannot see)."""
    from .tracers.python import PythonTracer
    return PythonTracer(binary, pid=pid, functions=functions, **kw)


def usdt_for_function(path: str, symbol: str) -> Optional[str]:
    """The ``"provider:name"`` of the USDT probe named ``symbol`` (or
    ``"provider:symbol"``) in the binary at ``path``, if it has exactly one;
    None otherwise (then a uprobe on the symbol is the choice).  A
    user-function chooser with ``kind=None`` prefers it, and says so in
    ``t.why``."""
    from .user.usdt import read_probes, split_probe
    try:
        provider, name = split_probe(symbol)
    except BadArgumentError:
        return None
    found = sorted({p.full_name for p in read_probes(path)
                    if p.name == name and provider in (None, p.provider)})
    return found[0] if len(found) == 1 else None
