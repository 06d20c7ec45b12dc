"""Turn a failed libbpf call into the right pytracers exception.

One place decides what an errno means for a given operation and probe kind,
adding what the kernel can tell us about the cause (capabilities, lockdown,
config options, whether the target exists).  Raised with context: the caller
passes what it was doing ("attach kprobe to do_unlinkat").
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable, List, Optional, Tuple, Type

from .errors import (ENOTSUPP, AttachError, BpfOperationError, LoadError, NotSupportedError,
                     PermissionDeniedError, PytracersError, TargetNotFoundError, VerifierError,
                     errno_name)

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# The first upstream kernel that has each probe kind.
MIN_KERNEL = {
    "tp": "4.7", "raw_tp": "4.17", "tp_btf": "5.5", "kprobe": "4.1", "kretprobe": "4.1",
    "fentry": "5.5", "fexit": "5.5", "fmod_ret": "5.7", "kprobe_multi": "5.18",
    "kretprobe_multi": "5.18", "ringbuf": "5.8", "cookie": "5.15",
}
TRAMPOLINE_KINDS = ("fentry", "fexit", "fmod_ret")
# The release that added each helper the shipped objects call and an older
# supported kernel may lack (ids from enum bpf_func_id).
HELPER_SINCE = {
    "bpf_get_current_task_btf": (158, "5.11"), "bpf_get_func_ip": (173, "5.15"),
    "bpf_task_pt_regs": (175, "5.15"), "bpf_get_attach_cookie": (174, "5.15"),
}
_HELPER_OF_ID = {i: (name, since) for name, (i, since) in HELPER_SINCE.items()}


def helper_since(helper: str) -> Tuple[str, Optional[str]]:
    """(name, first release) of a helper as a verifier log names it
    ("unknown#158" or "bpf_foo#158"); the release is None when not known."""
    import re
    m = re.search(r"#(\d+)$", helper)
    if m and int(m.group(1)) in _HELPER_OF_ID:
        return _HELPER_OF_ID[int(m.group(1))]
    return helper, None


def effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_cap(cap: int) -> bool:
    return bool(effective_caps() >> cap & 1)


def missing_bpf_caps(tracing: bool = True) -> Optional[str]:
    """Name the capability a BPF tracing load lacks, or None if all are present."""
    if has_cap(CAP_SYS_ADMIN):
        return None
    if not has_cap(CAP_BPF):
        return "CAP_BPF (or CAP_SYS_ADMIN)"
    if tracing and not has_cap(CAP_PERFMON):
        return "CAP_PERFMON (or CAP_SYS_ADMIN)"
    return None


def lockdown() -> Optional[str]:
    """The kernel lockdown mode ('none', 'integrity', 'confidentiality'), if readable."""
    for path in ("/sys/kernel/security/lockdown",):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for word in text.split():
            if word.startswith("["):
                return word.strip("[]")
    return None


def kprobe_pmu() -> bool:
    return os.path.exists("/sys/bus/event_source/devices/kprobe/type")


def kprobe_events_file() -> bool:
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(root, "kprobe_events")):
            return True
    return False


def no_kprobes_reason() -> Optional[str]:
    """Why kprobes cannot work here, or None if the kernel seems to have them."""
    if kprobe_pmu() or kprobe_events_file():
        return None
    return ("the kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no "
            "kprobe_events in tracefs: CONFIG_KPROBES is off")


def function_suggestions(name: str) -> List[str]:
    try:
        from .btf import Btf
        return list(Btf.vmlinux().suggest(name, kind="func"))
    except Exception:
        return []


def raw_tracepoint_suggestions(name: str) -> List[str]:
    try:
        import difflib

        from . import tracefs
        names = sorted({full.split(":", 1)[1] for full in tracefs.list_tracepoints()})
        return difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    except Exception:
        return []


def function_exists(name: str) -> Optional[bool]:
    """Is ``name`` a function in the kernel's BTF or kallsyms (None: cannot tell)?"""
    try:
        from .btf import Btf
        if Btf.vmlinux().find(name, "func") is not None:
            return True
    except Exception:
        pass
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return True
        return False
    except OSError:
        return None


MULTI_HINT = "attach one kprobe per function instead"


def unknown_helper(log: str) -> Optional[str]:
    """The helper a verifier log says this kernel does not have, if any."""
    import re
    m = re.search(r"invalid func (unknown#\d+|\w+#\d+)|unknown func (\w+#\d+)", log)
    if not m:
        return None
    return m.group(1) or m.group(2)


def untraceable(kind: str, target: str, err: int) -> NotSupportedError:
    """A trampoline attach refused with EBUSY: the function has no ftrace entry."""
    return NotSupportedError(kind, f"{target} cannot be traced with a BPF trampoline "
                             f"({errno_name(err)} at attach): it has no ftrace entry "
                             "(notrace, e.g. interrupt entry code)",
                             hint="use kind='kprobe' where kprobes exist, or trace a caller",
                             errno=err)


def trampoline_refused(kind: str, err: int, detail: str = "") -> NotSupportedError:
    mode = lockdown()
    if err in (errno.EPERM, errno.EACCES):
        why = f"program load refused with {errno_name(err)} and no verifier log"
        why += " (refused by a security module or kernel policy"
        if mode and mode != "none":
            # mainline 'integrity' lockdown alone does not forbid trampolines;
            # report the mode as a fact, not as the cause
            why += f"; kernel lockdown mode: '{mode}'"
        why += ")"
        hint = "use kind='kprobe' where kprobes exist, or boot without the restriction"
    elif err in (ENOTSUPP, errno.EOPNOTSUPP):
        why = "the kernel has no BPF trampoline for this architecture/config"
        hint = "use kind='kprobe'"
    else:
        why = f"{errno_name(err)}{': ' + detail if detail else ''}"
        hint = None
    return NotSupportedError(kind, why, min_kernel=MIN_KERNEL.get(kind), hint=hint, errno=err)


def load_error(program: str, kind: str, err: int, log: str, libbpf_msg: str = "",
               target: Optional[str] = None) -> PytracersError:
    """The exception for a failed load of ``program`` (a probe of ``kind``)."""
    what = f"load program {program!r} ({kind})"
    if err in (errno.EPERM, errno.EACCES) and not log.strip():
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(what, cap, errno=err)
        if kind in TRAMPOLINE_KINDS:
            return trampoline_refused(kind, err)
        mode = lockdown()
        if mode == "confidentiality":
            return NotSupportedError(kind, "kernel lockdown 'confidentiality' forbids BPF "
                                           "tracing programs", errno=err)
        return PermissionDeniedError(what, "CAP_BPF and CAP_PERFMON", errno=err,
                                     detail="the kernel refused the load without a verifier log")
    if target and kind in TRAMPOLINE_KINDS + ("tp_btf",) and err in (errno.ESRCH, errno.ENOENT):
        if kind == "tp_btf":
            return TargetNotFoundError("BTF tracepoint", target, detail="no btf_trace_" + target
                                       + " in the kernel's BTF")
        return TargetNotFoundError("kernel function", target, function_suggestions(target),
                                   detail="not in the kernel's BTF")
    if kind in TRAMPOLINE_KINDS and err == errno.EINVAL and "processed 0 insns" in log:
        # refused before the first instruction: the target check failed
        return NotSupportedError(kind, f"the kernel refuses {kind} programs on "
                                 f"{target or 'this function'} (EINVAL before verifying any "
                                 "instruction): it is on the kernel's deny list for tracing "
                                 "programs (BPF's own machinery, RCU, preemption counting)",
                                 hint="trace a caller of it instead", errno=err)
    if log.strip():
        if kind == "fmod_ret" and "not modifiable" in log or (
                kind == "fmod_ret" and "attach to unsupported member" in log):
            return NotSupportedError("fmod_ret", f"{target or 'the target'} may not have its "
                                     "return value modified (only security_* hooks and "
                                     "error-injection functions are allowed)", errno=err)
        helper = unknown_helper(log)
        if helper:
            # the program calls a helper this kernel predates: the kernel is
            # too old for this program (e.g. kprobe.multi's bpf_get_func_ip on 5.10)
            name, since = helper_since(helper)
            if kind.endswith("multi"):          # the kind itself came later (5.18)
                since = MIN_KERNEL.get(kind)
            return NotSupportedError(kind, f"the verifier does not know helper {name}, which "
                                     f"program {program!r} calls: this kernel predates it",
                                     min_kernel=since,
                                     hint=MULTI_HINT if kind.endswith("multi") else None,
                                     errno=err)
        return VerifierError(program, err, log)
    if err in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP) and kind in TRAMPOLINE_KINDS:
        return trampoline_refused(kind, err, libbpf_msg)
    if err == errno.E2BIG:
        return LoadError(what, err, "program or BTF too large for this kernel")
    return LoadError(what, err, libbpf_msg)


def attach_error(kind: str, target: str, err: int, libbpf_msg: str = "") -> PytracersError:
    """The exception for a failed attach of a ``kind`` probe to ``target``."""
    what = f"attach {kind} to {target}"
    if kind in ("kprobe", "kretprobe", "kprobe_multi", "kretprobe_multi"):
        if kind.endswith("multi") and err in (errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError("kprobe_multi", "the kernel refused a multi-kprobe link "
                                     f"({errno_name(err)}): CONFIG_FPROBE is off",
                                     min_kernel=MIN_KERNEL["kprobe_multi"],
                                     hint="attach one kprobe per function instead", errno=err)
        if kind.endswith("multi") and err == errno.EINVAL and not kprobe_pmu():
            reason = no_kprobes_reason()
            if reason:
                return NotSupportedError("kprobe_multi", reason, min_kernel="5.18", errno=err)
        reason = no_kprobes_reason()
        if reason:
            return NotSupportedError(kind, reason, min_kernel=MIN_KERNEL.get(kind),
                                     hint="use fentry/fexit where BPF trampolines work, or a "
                                          "tracepoint", errno=err)
        if err in (errno.ENOENT, errno.EINVAL, errno.ESRCH, errno.EADDRNOTAVAIL):
            exists = function_exists(target) if not kind.endswith("multi") else None
            if exists is False:
                return TargetNotFoundError("kernel function", target,
                                           function_suggestions(target))
            if exists:
                return NotSupportedError(kind, f"{target} exists but cannot be probed "
                                         f"({errno_name(err)}): it is inlined at every call "
                                         "site, notrace, or on the kprobe blacklist",
                                         errno=err)
    if err in (errno.EPERM, errno.EACCES):
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(what, cap, errno=err)
    if kind == "tp" and err == errno.ENOENT:
        return TargetNotFoundError("tracepoint", target)
    if kind == "raw_tp" and err == errno.ENOENT:
        return TargetNotFoundError("raw tracepoint", target, raw_tracepoint_suggestions(target),
                                   detail="a raw tracepoint is a tracepoint's name without its "
                                          "category, e.g. sys_enter or sched_switch")
    return AttachError(what, err, libbpf_msg)


# ---- the checked call: a libbpf return -> its result, or the right exception ----

# pytracers._libbpf, imported at the first checked call: mapping an error
# needs no libbpf, so importing this module does not load it.
_libbpf: Any = None


def checked(fn: Callable[..., Any], *args: Any, what: str, error: Type[BpfOperationError],
            refine: Optional[Callable[[int, Any], Optional[BaseException]]] = None,
            expected: Tuple[int, ...] = ()) -> Any:
    """Call the libbpf function ``fn(*args)``; return its result or raise.

    libbpf reports a failure as a negative errno (functions returning an int)
    or as NULL with ``errno`` set (functions returning a pointer; a NULL
    without errno, from an accessor that does not set it, counts as EINVAL).
    A failure whose errno is in ``expected`` returns None (the caller's "not
    there" or "no more"); otherwise ``refine(err, log)`` may return the more
    precise exception (NotSupportedError, BadArgumentError, ...), and failing
    that ``error(what, err, libbpf's last message)`` is raised: ``error`` is
    the operation's class (MapError, LinkError, ...) and ``what`` says what
    was being done ("update map 'counts'").  ``log`` holds the
    messages libbpf printed during the call (a ``_libbpf.LibbpfLogCapture``).
    """
    global _libbpf
    if _libbpf is None:
        from . import _libbpf
    res, err, log = _libbpf.call_with_log(fn, *args)
    if isinstance(res, int):
        if res >= 0:
            return res
        err = -res
    elif res != _libbpf.ffi.NULL:
        return res
    elif not err:
        err = errno.EINVAL
    if err in expected:
        return None
    exc = refine(err, log) if refine is not None else None
    raise exc if exc is not None else error(what, err, log.last_line())
