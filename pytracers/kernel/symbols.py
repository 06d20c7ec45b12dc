"""Kernel functions: which exist, which can be probed, what they take.

Sources, each read in this module only:

* ``/proc/kallsyms``: the text symbols (functions) of the kernel and its
  modules.  The names are read once and cached (:func:`kallsyms_functions`);
  :func:`kallsyms_matching` reads the addresses of a glob's matches.
* tracefs ``available_filter_functions``: the ftrace sites, which BPF
  trampolines and multi-kprobes (fprobes) need (:func:`filter_functions`).
* debugfs deny lists: the kprobe blacklist and the error-injection list
  (:func:`kprobe_blacklist`, :func:`error_injection_list`).
* BTF (vmlinux, then loaded modules): whether a function has a prototype
  (:func:`in_btf`) and what it is (:func:`signature`).

"Does function X exist?" has one answer, :func:`function_exists` (BTF or
kallsyms); :func:`in_btf` answers the narrower question trampolines ask.
Lists are cached until :func:`clear_cache` (``features.clear_cache()``
calls it); an unreadable source is None, never an empty set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from .host import read_text

__all__ = ["kallsyms_functions", "kallsyms_matching", "filter_functions", "kprobe_blacklist",
           "error_injection_list", "in_btf", "function_exists", "function_suggestions",
           "raw_tracepoint_suggestions", "Signature", "signature", "converter", "clear_cache"]

KALLSYMS = "/proc/kallsyms"
KPROBE_BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
ERROR_INJECTION_LIST = "/sys/kernel/debug/error_injection/list"

_kallsyms: Optional[Set[str]] = None
_filter_functions: Optional[Set[str]] = None
_filter_functions_read = False
_lists: Dict[str, Optional[Set[str]]] = {}


# The prefix of a syscall's entry function (the one that unpacks pt_regs), per
# os.uname().machine: __x64_sys_openat on x86-64, __arm64_sys_openat on arm64.
SYSCALL_FUNCTION_PREFIXES = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}


def syscall_function(name: str, machine: Optional[str] = None) -> str:
    """The kernel function that is syscall ``name``'s entry on this machine
    (or ``machine``): ``__x64_sys_openat``, ``__arm64_sys_openat``."""
    machine = os.uname().machine if machine is None else machine
    return SYSCALL_FUNCTION_PREFIXES.get(machine, "__x64_sys_") + name


def clear_cache() -> None:
    """Forget the cached lists (kallsyms, ftrace sites, deny lists)."""
    global _kallsyms, _filter_functions, _filter_functions_read
    _lists.clear()
    _kallsyms = None
    _filter_functions, _filter_functions_read = None, False


# ---------------------------------------------------------------------- kallsyms

def _text_symbols() -> Iterator[Tuple[str, str]]:
    """(address, name) of each function symbol (types t, T, w, W) of
    /proc/kallsyms; OSError when unreadable.  Addresses are zero unless
    kptr_restrict lets this process see them."""
    with open(KALLSYMS) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("t", "T", "w", "W"):
                yield parts[0], parts[2]


def kallsyms_functions() -> Optional[Set[str]]:
    """Text symbols of /proc/kallsyms (cached), or None if unreadable."""
    global _kallsyms
    if _kallsyms is None:
        try:
            _kallsyms = {name for _addr, name in _text_symbols()}
        except OSError:
            return None
    return _kallsyms


def kallsyms_matching(glob: str) -> Dict[int, str]:
    """Address -> name of the text symbols matching ``glob`` (read afresh:
    the addresses are not cached; hidden addresses are left out; empty when
    kallsyms is unreadable)."""
    import fnmatch
    import re
    match = re.compile(fnmatch.translate(glob)).match
    out: Dict[int, str] = {}
    try:
        for addr, name in _text_symbols():
            if match(name):
                a = int(addr, 16)
                if a:
                    out.setdefault(a, name)
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------- ftrace and deny lists

def filter_functions() -> Optional[Set[str]]:
    """available_filter_functions (the ftrace sites), or None when unreadable."""
    global _filter_functions, _filter_functions_read
    if not _filter_functions_read:
        from ..errors import TracefsError
        from . import tracefs
        try:
            text = read_text(os.path.join(tracefs.root(), "available_filter_functions"))
        except TracefsError:
            text = None
        if text is not None:
            _filter_functions = {line.split()[0] for line in text.splitlines() if line.strip()}
        _filter_functions_read = True
    return _filter_functions


def kprobe_blacklist() -> Optional[Set[str]]:
    """Functions on the kprobe blacklist (debugfs; cached), or None when unreadable."""
    if "blacklist" not in _lists:
        text = read_text(KPROBE_BLACKLIST)
        out: Optional[Set[str]] = None
        if text is not None:
            out = set()
            for line in text.splitlines():
                parts = line.split()
                if parts:
                    out.add(parts[-1].split("+", 1)[0])
        _lists["blacklist"] = out
    return _lists["blacklist"]


def error_injection_list() -> Optional[Set[str]]:
    """Functions fmod_ret may modify besides security_* (debugfs; cached), or None."""
    if "error_injection" not in _lists:
        text = read_text(ERROR_INJECTION_LIST)
        _lists["error_injection"] = None if text is None else {
            line.split()[0].split("+", 1)[0] for line in text.splitlines() if line.strip()}
    return _lists["error_injection"]


# ---------------------------------------------------------------------- existence

def _in_vmlinux_btf(name: str) -> bool:
    try:
        from ..btf import Btf
        return Btf.vmlinux().find(name, "func") is not None
    except Exception:
        return False


def in_btf(name: str, *, modules: bool = True) -> bool:
    """Is ``name`` a function in the kernel's BTF: vmlinux (a name look-up),
    else (``modules``) a loaded module's?  False when there is no BTF.  What
    a BPF trampoline (fentry, fexit, fmod_ret) needs of its target."""
    if _in_vmlinux_btf(name):
        return True
    if not modules:
        return False
    try:
        return signature(name) is not None
    except Exception:
        return False


def function_exists(name: str) -> Optional[bool]:
    """Is ``name`` a kernel function here: in vmlinux's BTF or among
    kallsyms' text symbols (the kernel's and its modules' functions)?

    None: cannot tell (kallsyms unreadable and no BTF names it).  Without
    kallsyms a loaded module's BTF is asked too; with it, never (opening
    every module's BTF to learn that a name is missing costs far more)."""
    if _in_vmlinux_btf(name):
        return True
    syms = kallsyms_functions()
    if syms is not None:
        return name in syms
    return True if in_btf(name) else None


# ---------------------------------------------------------------------- suggestions

def function_suggestions(name: str) -> List[str]:
    """Kernel functions (vmlinux BTF) whose names are close to ``name``."""
    try:
        from ..btf import Btf
        return list(Btf.vmlinux().suggest(name, kind="func"))
    except Exception:
        return []


def raw_tracepoint_suggestions(name: str) -> List[str]:
    """Raw tracepoint names (tracepoints without their category) close to ``name``."""
    try:
        import difflib

        from . import tracefs
        names = sorted({full.split(":", 1)[1] for full in tracefs.list_tracepoints()})
        return difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    except Exception:
        return []


# ---------------------------------------------------------------------- signatures

def converter(bits: int, signed: bool) -> Callable[[int], int]:
    """Truncate a 64-bit register value to ``bits`` and sign-convert if ``signed``."""
    mask = (1 << bits) - 1
    if not signed:
        return lambda v: v & mask
    top = 1 << (bits - 1)
    return lambda v: ((v & mask) ^ top) - top


@dataclass(frozen=True)
class Signature:
    """What the kernel's BTF says about a function, as the tracers need it."""

    name: str
    params: Tuple[str, ...]              # parameter names (first six)
    types: Tuple[str, ...]               # their C types
    ret_type: str                        # "void", "int", "long", "struct file *"...
    slots: int                           # u64 slots the arguments take (trampolines)
    arg_convs: Tuple[Callable[[int], int], ...]
    ret_conv: Optional[Callable[[int], int]]   # None: void
    first_slot: Tuple[int, ...] = ()     # each parameter's first slot

    def param_of_slot(self, slot: int) -> Optional[int]:
        """Index of the parameter occupying trampoline slot ``slot``."""
        for i, s in enumerate(self.first_slot):
            nxt = self.first_slot[i + 1] if i + 1 < len(self.first_slot) else self.slots
            if s <= slot < nxt:
                return i
        return None

    @property
    def returns_void(self) -> bool:
        return self.ret_conv is None

    def __str__(self) -> str:
        args = ", ".join(f"{t} {n}" for t, n in zip(self.types, self.params)) or "void"
        return f"{self.ret_type} {self.name}({args})"


def _type_conv(btf: Any, type_id: int) -> Tuple[Optional[Callable[[int], int]], int]:
    """(value converter or None for void, size) of a BTF type."""
    from ..btf import Kind
    if type_id == 0:
        return None, 0
    t = btf.resolve(type_id)
    size = btf.size_of(t) if t.kind != Kind.VOID else 0
    if t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64) and 0 < size <= 8:
        if t.kind == Kind.INT and t.is_bool:
            return converter(8, False), size
        return converter(size * 8, bool(t.signed)), size
    return converter(64, False), size


_SIGS: Dict[str, Optional[Signature]] = {}


def signature(name: str) -> Optional[Signature]:
    """The BTF signature of kernel function ``name`` (vmlinux, then loaded
    modules), or None when the kernel has no BTF for it."""
    if name in _SIGS:
        return _SIGS[name]
    from ..btf import Btf, BtfError
    sig = None
    try:
        candidates = [Btf.vmlinux()]
    except (OSError, BtfError):
        candidates = []
    found = None
    for btf in candidates:
        if btf.find(name, "func") is not None:
            found = btf
            break
    if found is None and candidates:
        for mod in Btf.module_names():
            try:
                b = Btf.module(mod)
            except (OSError, BtfError):
                continue
            if b.functions(name):
                found = b
                break
    if found is not None:
        proto = found.func_proto(name)
        convs: List[Callable[[int], int]] = []
        firsts: List[int] = []
        slots = 0
        for tid in proto.param_type_ids:
            conv, size = _type_conv(found, tid)
            convs.append(conv or converter(64, False))
            firsts.append(slots)
            slots += max(1, (size + 7) // 8)
        ret_conv, _ = _type_conv(found, proto.ret_type_id)
        sig = Signature(name, tuple(n or f"arg{i}" for i, (n, _t) in enumerate(proto.params)),
                        tuple(t for _n, t in proto.params), proto.ret, slots, tuple(convs),
                        ret_conv, tuple(firsts))
    _SIGS[name] = sig
    return sig
