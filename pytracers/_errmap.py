"""Turn a failed libbpf call into the right pytracers exception.

One place decides what an errno means for a given operation and probe kind,
adding what the kernel can tell us about the cause (capabilities, lockdown,
config options, whether the target exists; :mod:`pytracers.kernel` answers).
Raised with context: the caller passes what it was doing ("attach kprobe to
do_unlinkat").
"""
from __future__ import annotations

import errno
from typing import Optional, Tuple

from . import kinds
from .errors import (ENOTSUPP, AttachError, LoadError, NotSupportedError,
                     PermissionDeniedError, PytracersError, TargetNotFoundError, VerifierError,
                     errno_name)
from .kernel.host import (kprobe_pmu, lockdown_mode, missing_bpf_caps, no_kprobes_reason,
                          no_uprobes_reason)
# kernel.symbols (kallsyms, BTF look-ups) is imported where an error needs it:
# mapping a failure is off the start path, and so must be its imports.

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


MULTI_HINT = "attach one kprobe per function instead"


def unknown_helper(log: str) -> Optional[str]:
    """The helper a verifier log says this kernel does not have, if any."""
    import re
    m = re.search(r"invalid func (unknown#\d+|\w+#\d+)|unknown func (\w+#\d+)", log)
    if not m:
        return None
    return m.group(1) or m.group(2)


def _min_kernel(kind: str) -> Optional[str]:
    pk = kinds.KINDS.get(kind)
    return pk.min_kernel if pk is not None else None


def untraceable(kind: str, target: str, err: int) -> NotSupportedError:
    """A trampoline attach refused with EBUSY: the function has no ftrace entry."""
    return NotSupportedError(kind, f"{target} cannot be traced with a BPF trampoline "
                             f"({errno_name(err)} at attach): it has no ftrace entry "
                             "(notrace, e.g. interrupt entry code)",
                             hint="use kind='kprobe' where kprobes exist, or trace a caller",
                             errno=err)


def trampoline_refused(kind: str, err: int, detail: str = "") -> NotSupportedError:
    mode = lockdown_mode()
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
    return NotSupportedError(kind, why, min_kernel=_min_kernel(kind), hint=hint, errno=err)


def load_error(program: str, kind: str, err: int, log: str, libbpf_msg: str = "",
               target: Optional[str] = None) -> PytracersError:
    """The exception for a failed load of ``program`` (a probe of ``kind``)."""
    what = f"load program {program!r} ({kind})"
    if err in (errno.EPERM, errno.EACCES) and not log.strip():
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(what, cap, errno=err)
        if kind in kinds.TRAMPOLINE_KINDS:
            return trampoline_refused(kind, err)
        mode = lockdown_mode()
        if mode == "confidentiality":
            return NotSupportedError(kind, "kernel lockdown 'confidentiality' forbids BPF "
                                           "tracing programs", errno=err)
        return PermissionDeniedError(what, "CAP_BPF and CAP_PERFMON", errno=err,
                                     detail="the kernel refused the load without a verifier log")
    if target and kind in kinds.BTF_TARGET_KINDS and err in (errno.ESRCH, errno.ENOENT):
        if kind == kinds.TP_BTF:
            return TargetNotFoundError("BTF tracepoint", target, detail="no btf_trace_" + target
                                       + " in the kernel's BTF")
        from .kernel.symbols import function_suggestions
        return TargetNotFoundError("kernel function", target, function_suggestions(target),
                                   detail="not in the kernel's BTF")
    if kind in kinds.TRAMPOLINE_KINDS and err == errno.EINVAL and "processed 0 insns" in log:
        # refused before the first instruction: the target check failed
        return NotSupportedError(kind, f"the kernel refuses {kind} programs on "
                                 f"{target or 'this function'} (EINVAL before verifying any "
                                 "instruction): it is on the kernel's deny list for tracing "
                                 "programs (BPF's own machinery, RCU, preemption counting)",
                                 hint="trace a caller of it instead", errno=err)
    if log.strip():
        if kind == kinds.FMOD_RET and ("not modifiable" in log
                                        or "attach to unsupported member" in log):
            return NotSupportedError(kinds.FMOD_RET, f"{target or 'the target'} may not have its "
                                     "return value modified (only security_* hooks and "
                                     "error-injection functions are allowed)", errno=err)
        helper = unknown_helper(log)
        if helper:
            # the program calls a helper this kernel predates: the kernel is
            # too old for this program (e.g. kprobe.multi's bpf_get_func_ip on 5.10)
            name, since = helper_since(helper)
            if kind in kinds.MULTI_KINDS:       # the kind itself came later (5.18)
                since = _min_kernel(kind)
            return NotSupportedError(kind, f"the verifier does not know helper {name}, which "
                                     f"program {program!r} calls: this kernel predates it",
                                     min_kernel=since,
                                     hint=MULTI_HINT if kind in kinds.MULTI_KINDS else None,
                                     errno=err)
        return VerifierError(program, err, log)
    if err in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP) and kind in kinds.TRAMPOLINE_KINDS:
        return trampoline_refused(kind, err, libbpf_msg)
    if err == errno.E2BIG:
        return LoadError(what, err, "program or BTF too large for this kernel")
    return LoadError(what, err, libbpf_msg)


def attach_error(kind: str, target: str, err: int, libbpf_msg: str = "") -> PytracersError:
    """The exception for a failed attach of a ``kind`` probe to ``target``."""
    what = f"attach {kind} to {target}"
    if kind in kinds.KPROBE_KINDS + kinds.MULTI_KINDS:
        multi = kind in kinds.MULTI_KINDS
        if multi and err in (errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError(kinds.KPROBE_MULTI, "the kernel refused a multi-kprobe link "
                                     f"({errno_name(err)}): CONFIG_FPROBE is off",
                                     min_kernel=_min_kernel(kinds.KPROBE_MULTI),
                                     hint="attach one kprobe per function instead", errno=err)
        if multi and err == errno.EINVAL and not kprobe_pmu():
            reason = no_kprobes_reason()
            if reason:
                return NotSupportedError(kinds.KPROBE_MULTI, reason,
                                         min_kernel=_min_kernel(kinds.KPROBE_MULTI), errno=err)
        reason = no_kprobes_reason()
        if reason:
            return NotSupportedError(kind, reason, min_kernel=_min_kernel(kind),
                                     hint="use fentry/fexit where BPF trampolines work, or a "
                                          "tracepoint", errno=err)
        if err in (errno.ENOENT, errno.EINVAL, errno.ESRCH, errno.EADDRNOTAVAIL):
            from .kernel.symbols import function_exists, function_suggestions
            exists = function_exists(target) if not multi else None
            if exists is False:
                return TargetNotFoundError("kernel function", target,
                                           function_suggestions(target))
            if exists:
                return NotSupportedError(kind, f"{target} exists but cannot be probed "
                                         f"({errno_name(err)}): it is inlined at every call "
                                         "site, notrace, or on the kprobe blacklist",
                                         errno=err)
    if kind == kinds.USDT:
        reason = no_uprobes_reason()
        if reason:
            return NotSupportedError(kind, reason, errno=err)
        if err in (errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError(kind, f"libbpf refused ({errno_name(err)}: {libbpf_msg}); "
                                     "without BPF cookies (5.15) it cannot attach to a shared "
                                     "library in every process", min_kernel="5.15",
                                     hint="pass pid= to trace one process", errno=err)
    if err in (errno.EPERM, errno.EACCES):
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(what, cap, errno=err)
    if kind == kinds.TP and err == errno.ENOENT:
        return TargetNotFoundError("tracepoint", target)
    if kind == kinds.RAW_TP and err == errno.ENOENT:
        from .kernel.symbols import raw_tracepoint_suggestions
        return TargetNotFoundError("raw tracepoint", target, raw_tracepoint_suggestions(target),
                                   detail="a raw tracepoint is a tracepoint's name without its "
                                          "category, e.g. sys_enter or sched_switch")
    return AttachError(what, err, libbpf_msg)
