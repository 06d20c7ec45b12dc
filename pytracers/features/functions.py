"""Can a probe of one kind attach to one kernel function here?  :func:`can_attach`
(cheap: BTF, kallsyms, tracefs/debugfs lists and the cached kind-level answer of
:func:`pytracers.features.probe`), and :func:`probe_function`, the stable
function the prober itself attaches a kind to."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .. import kinds
from ..errors import NotSupportedError
from ..kernel.symbols import (error_injection_list, filter_functions, in_btf,
                              kallsyms_functions, kprobe_blacklist)
from . import _attempt, _targets, probe_one

__all__ = ["CanAttach", "can_attach", "probe_function"]


@dataclass
class CanAttach:
    """Can probe ``kind`` attach to ``target`` here?  See :func:`can_attach`."""

    kind: str
    target: str
    supported: bool
    reason: str
    fix: Optional[str] = None
    checks: List[str] = field(default_factory=list)   # what was looked at

    def __bool__(self) -> bool:
        return self.supported



def probe_function(kind: str) -> Optional[str]:
    """The stable function the prober attaches ``kind`` to here (None: none found)."""
    pk = kinds.get(kind)
    names = _targets(pk)
    if pk.trampoline:
        for n in names:
            if in_btf(n):
                return n
        return None
    syms = kallsyms_functions()
    for n in names:
        if syms is None or n in syms:
            return n
    return None



# ---------------------------------------------------------------------- per function

# the kinds that attach to one kernel function (can_attach), in the order it names them
_FUNCTION_KINDS = kinds.TRAMPOLINE_KINDS + kinds.KPROBE_KINDS + (kinds.KPROBE_MULTI,)
_USE_KPROBE = f"use kind={kinds.KPROBE!r}"


def can_attach(kind: str, target: str) -> CanAttach:
    """Can a ``kind`` probe attach to kernel function ``target`` here?

    ``kind``: fentry, fexit, fmod_ret, kprobe, kretprobe or kprobe_multi.
    Cheap: reads BTF, kallsyms, and tracefs/debugfs lists when readable, plus
    the (cached) kind-level :func:`probe` answer; no load per function.
    """
    function_kinds = _FUNCTION_KINDS
    if kind not in function_kinds:
        from ..errors import BadArgumentError
        raise BadArgumentError(f"can_attach() kinds: {', '.join(function_kinds)}; "
                               f"not {kind!r}")
    pk = kinds.get(kind)
    checks: List[str] = []
    feat = probe_one(kind)
    checks.append(f"{kind} on this kernel: {'yes' if feat.supported else 'no'}")
    if not feat.supported:
        return CanAttach(kind, target, False, f"{kind}: {feat.reason}", feat.fix, checks)
    aff = filter_functions()
    if pk.trampoline:
        has_btf = in_btf(target)
        checks.append(f"in the kernel's BTF: {'yes' if has_btf else 'no'}")
        if not has_btf:
            where = "inlined or not built" if target not in (kallsyms_functions() or ()) \
                else "present in kallsyms but has no BTF (static or module without BTF)"
            return CanAttach(kind, target, False, f"symbol missing from the kernel's BTF "
                             f"({where})", _USE_KPROBE if pk.twin else None,
                             checks)
        if pk.name == kinds.FMOD_RET and not target.startswith("security_"):
            inj = error_injection_list()
            checks.append("error_injection/list: " + ("unreadable" if inj is None else
                                                      ("listed" if target in inj else
                                                       "not listed")))
            if inj is not None and target not in inj:
                return CanAttach(kind, target, False, "not modifiable: neither a security_* "
                                 "hook nor on the error-injection list", None, checks)
            if inj is None:  # cannot read the list: ask the kernel (a load, no attach)
                try:
                    _attempt(pk,
                             lambda o: o.programs[pk.feature_program].set_attach_target(target),
                             lambda p: None)
                    checks.append("test load against it: accepted")
                except NotSupportedError as e:
                    checks.append("test load against it: refused")
                    return CanAttach(kind, target, False, f"not modifiable: {e.reason}", None,
                                     checks)
    else:
        syms = kallsyms_functions()
        in_syms = syms is None or target in syms
        checks.append("kallsyms: " + ("unreadable" if syms is None else
                                      ("present" if in_syms else "absent")))
        if not in_syms:
            return CanAttach(kind, target, False, "symbol missing from kallsyms (inlined at "
                             "every call site, or not built)", None, checks)
        if pk.attach == kinds.ATTACH_FUNCTION:
            bl = kprobe_blacklist()
            checks.append("kprobe blacklist: " + ("unreadable" if bl is None else
                                                  ("listed" if target in bl else "not listed")))
            if bl is not None and target in bl:
                return CanAttach(kind, target, False, "blacklisted: on the kprobe blacklist "
                                 "(/sys/kernel/debug/kprobes/blacklist)", "use fentry", checks)
    if pk.trampoline or pk.attach == kinds.ATTACH_FUNCTION_GLOB:
        checks.append("available_filter_functions: " + ("unreadable" if aff is None else
                                                        ("listed" if target in aff else
                                                         "not listed")))
        if aff is not None and target not in aff:
            return CanAttach(kind, target, False, "notrace or inlined: not in "
                             "available_filter_functions, so there is no ftrace site for a "
                             "trampoline or fprobe", _USE_KPROBE
                             if pk.trampoline else None, checks)
    return CanAttach(kind, target, True, f"{kind} works here and {target} passed: "
                     + "; ".join(checks[1:]), None, checks)


