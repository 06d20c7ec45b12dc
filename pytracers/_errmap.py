"""Turn a failed libbpf call into the right pytracers exception.

One place decides what an errno means for a given operation and probe kind,
adding what the kernel can tell us about the cause (capabilities, lockdown,
config options, whether the target exists; :mod:`pytracers.kernel` answers).
Raised with context: the caller passes what it was doing ("attach kprobe to
do_unlinkat").
"""
from __future__ import annotations

import errno
import re
from typing import Callable, Dict, Iterable, List, Optional, Tuple

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


# ---- which kinds this kernel is known to have (hints name only those) -----

_known: Dict[str, bool] = {}
_oracle: List[Callable[[str], Optional[bool]]] = []


def note_kind(kind: str, present: bool) -> None:
    """Record what this process saw: a ``kind`` program attached (True) or the
    kernel refusing the kind itself (False)."""
    _known[kind] = present


def set_kind_oracle(oracle: Callable[[str], Optional[bool]]) -> None:
    """Let a higher layer (the feature prober) answer :func:`kind_present`
    from what it has already found out; the oracle must not probe."""
    _oracle[:] = [oracle]


def kind_present(kind: str) -> Optional[bool]:
    """Does this kernel have ``kind``?  None when nothing known says (no probe
    is run here: kernel facts, this process's own loads, the prober's cache)."""
    if kind in kinds.KPROBE_KINDS:
        return no_kprobes_reason() is None
    if kind in _known:
        return _known[kind]
    for oracle in _oracle:
        answer = oracle(kind)
        if answer is not None:
            return answer
    return None


def alternative_hint(kind: str, *extra: str) -> Optional[str]:
    """A hint naming another way to trace what a ``kind`` probe would have, only
    kinds this kernel is known to have (see :func:`kind_present`), plus
    ``extra`` advice; None when there is nothing to say.  Kinds are named as
    sections and tracer kinds spell them (``kprobe``, ``fentry``), not as an
    API argument: the hint serves the object API and the tracers alike."""
    pk = kinds.KINDS.get(kind)
    options: List[str] = []
    alt: Optional[str] = None
    if kind in kinds.TRAMPOLINE_KINDS and kind != kinds.FMOD_RET:
        alt = kinds.KRETPROBE if pk is not None and pk.retprobe else kinds.KPROBE
    elif kind in kinds.KPROBE_KINDS:
        alt = kinds.FEXIT if pk is not None and pk.retprobe else kinds.FENTRY
    elif kind in kinds.MULTI_KINDS:
        alt = kinds.KRETPROBE if pk is not None and pk.retprobe else kinds.KPROBE
    if alt is not None and kind_present(alt):
        options.append(f"a {alt} program on the same function"
                       if kind not in kinds.MULTI_KINDS else f"one {alt} per function")
    if kind in kinds.KPROBE_KINDS + kinds.TRAMPOLINE_KINDS + kinds.MULTI_KINDS \
            and kind_present(kinds.TP) is not False:
        options.append("a tracepoint (tp, raw_tp or tp_btf) where one covers the event")
    text = ", ".join([("use " + " or ".join(options)) if options else ""] + list(extra))
    text = text.strip(", ")
    if text.startswith("or "):
        text = text[3:]
    return text or None


def multi_hint() -> Optional[str]:
    """What to do instead of a multi-kprobe: one kprobe per function, where kprobes exist."""
    if kind_present(kinds.KPROBE):
        return MULTI_HINT
    return alternative_hint(kinds.KPROBE_MULTI)


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
                             hint=alternative_hint(kind, "or trace a caller"), errno=err)


def no_ftrace_site(function: str) -> bool:
    """Is ``function`` known to lack an ftrace site (absent from a readable
    available_filter_functions)?  A trampoline attach to such a function fails
    with ENOTSUPP on arm64 (6.4+; EBUSY on x86-64), which a kernel without
    trampolines says of any function.  False when the list cannot be read."""
    from .kernel.symbols import filter_functions
    sites = filter_functions()
    return sites is not None and function not in sites


def naming(e: NotSupportedError, program: Optional[str]) -> NotSupportedError:
    """``e`` with the program it is about: ``e.program``, and the message says
    "(program 'x')" before the reason (``e.reason`` itself stays the
    kernel's, the same for every program, as reports and tracers quote it)."""
    e.program = program   # type: ignore[attr-defined]
    if program:
        head = f"{e.feature} is not supported by this kernel"
        msg = str(e)
        if msg.startswith(head + ": "):
            e.args = (f"{head} (program {program!r}){msg[len(head):]}",)
    return e


def bpf_lsm_active() -> Optional[bool]:
    """Is the BPF LSM in the kernel's active LSM list (securityfs' ``lsm``)?
    None when securityfs does not say."""
    from .kernel.host import SECURITYFS, read_text
    text = read_text(SECURITYFS + "/lsm")
    if text is None:
        lockdown_mode(mount=True)
        text = read_text(SECURITYFS + "/lsm")
    return None if text is None else "bpf" in text.strip().split(",")


def trampoline_refused(kind: str, err: int, detail: str = "",
                       program: Optional[str] = None) -> NotSupportedError:
    """A BPF-trampoline program (fentry family, lsm) the kernel refuses as such."""
    mode = lockdown_mode()
    if err in (errno.EPERM, errno.EACCES):
        why = f"program load refused with {errno_name(err)} and no verifier log"
        why += " (refused by a security module or kernel policy"
        if mode and mode != "none":
            # mainline 'integrity' lockdown alone does not forbid trampolines;
            # report the mode as a fact, not as the cause
            why += f"; kernel lockdown mode: '{mode}'"
        why += ")"
        hint = alternative_hint(kind, "or boot without the restriction")
        note_kind(kind, False)
    elif err in (ENOTSUPP, errno.EOPNOTSUPP):
        why = "the kernel has no BPF trampoline for this architecture/config"
        hint = alternative_hint(kind)
        note_kind(kind, False)
    else:
        why = f"{errno_name(err)}{': ' + detail if detail else ''}"
        hint = None
    return naming(NotSupportedError(kind, why, min_kernel=_min_kernel(kind), hint=hint,
                                    errno=err), program)


def lsm_refused(program: str, err: int, log: str) -> Optional[PytracersError]:
    """An lsm program refused: the BPF LSM off (not in the boot line's lsm=),
    or trampolines refused; None when the verifier log explains it."""
    active = bpf_lsm_active()
    if active is False:
        return naming(NotSupportedError("lsm", "the BPF LSM is not active: 'bpf' is missing "
                                        "from the kernel's LSM list (securityfs 'lsm')",
                                        min_kernel="5.7",
                                        hint="boot with lsm=...,bpf (CONFIG_BPF_LSM=y)",
                                        errno=err), program)
    if err in (errno.EPERM, errno.EACCES) and not log.strip():
        return trampoline_refused("lsm", err, program=program)
    return None


_BTF_ID_MISSING = r"failed to find kernel BTF type ID of '([^']+)'"     # compiled when used


def quote(lines: Iterable[str], *needles: str) -> str:
    """libbpf's lines that contain any of ``needles`` (all of them without
    needles), stripped and joined: what an exception quotes."""
    picked = [ln.strip()[len("libbpf: "):] if ln.strip().startswith("libbpf: ") else ln.strip()
              for ln in lines if ln.strip() and (not needles or any(n in ln for n in needles))]
    return "; ".join(dict.fromkeys(picked))


def map_create_failure(path: str, err: int, lines: List[str]) -> Optional[PytracersError]:
    """The exception for a load that failed creating a map, naming the map and
    quoting libbpf (None when libbpf's lines name no map)."""
    name = None
    for line in lines:
        m = re.search(r"map '([^']+)': failed to create", line) or \
            re.search(r"map '([^']+)': failed", line)
        if m:
            name = m.group(1)
    if name is None:
        return None
    said = quote(lines, f"map '{name}'", f"({name})")
    if err in (errno.EPERM, errno.EACCES):
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(f"load {path}: create map {name!r}", cap, errno=err,
                                         detail=said)
    e = LoadError(f"load {path}: create map {name!r}", err, said)
    e.map = name   # type: ignore[attr-defined]
    return e


def load_error(program: str, kind: str, err: int, log: str, libbpf_msg: str = "",
               target: Optional[str] = None) -> PytracersError:
    """The exception for a failed load of ``program`` (a probe of ``kind``)."""
    what = f"load program {program!r} ({kind})"
    if err in (errno.EPERM, errno.EACCES) and not log.strip():
        cap = missing_bpf_caps()
        if cap:
            return PermissionDeniedError(what, cap, errno=err)
        if kind in kinds.TRAMPOLINE_KINDS:
            return trampoline_refused(kind, err, program=program)
        if kind == "lsm":
            refused = lsm_refused(program, err, log)
            if refused is not None:
                return refused
        mode = lockdown_mode()
        if mode == "confidentiality":
            return naming(NotSupportedError(kind, "kernel lockdown 'confidentiality' forbids "
                                            "BPF tracing programs", errno=err), program)
        return naming(NotSupportedError(kind, f"program load refused with {errno_name(err)} and no "
                                        "verifier log, although the process has CAP_BPF and "
                                        "CAP_PERFMON (a security module or kernel policy "
                                        "refuses this program type)", errno=err), program)
    m = re.search(_BTF_ID_MISSING, libbpf_msg)
    if m and err in (errno.ESRCH, errno.ENOENT):
        target = target or m.group(1)
    if target and kind in kinds.BTF_TARGET_KINDS + ("lsm", "iter") and \
            err in (errno.ESRCH, errno.ENOENT):
        if kind == kinds.TP_BTF:
            return TargetNotFoundError("BTF tracepoint", target, detail=f"program {program!r}: "
                                       f"no btf_trace_{target} in the kernel's BTF")
        from .kernel.symbols import function_suggestions
        if kind == "lsm":
            return TargetNotFoundError("LSM hook", target,
                                       function_suggestions("bpf_lsm_" + target),
                                       detail=f"program {program!r}: no bpf_lsm_{target} in the "
                                              "kernel's BTF")
        e = TargetNotFoundError("kernel function", target, function_suggestions(target),
                                detail=f"program {program!r}: not in the kernel's BTF"
                                       + (f" (libbpf: {m.group(0)})" if m else ""))
        e.program = program   # type: ignore[attr-defined]
        return e
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
                                     hint=multi_hint() if kind in kinds.MULTI_KINDS else None,
                                     errno=err)
        return VerifierError(program, err, log)
    if err in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP) and kind in kinds.TRAMPOLINE_KINDS:
        return trampoline_refused(kind, err, libbpf_msg, program=program)
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
                                     hint=multi_hint(), errno=err)
        if multi and err == errno.EINVAL and not kprobe_pmu():
            reason = no_kprobes_reason()
            if reason:
                return NotSupportedError(kinds.KPROBE_MULTI, reason,
                                         min_kernel=_min_kernel(kinds.KPROBE_MULTI), errno=err)
        reason = no_kprobes_reason()
        if reason:
            return NotSupportedError(kind, reason, min_kernel=_min_kernel(kind),
                                     hint=alternative_hint(kind), errno=err)
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
