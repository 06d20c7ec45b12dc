"""The running machine's architecture and what it changes for pytracers:
which objects are loaded, the syscall table, the syscall entry functions'
names, how the ring buffer is read.  ``features.probe()`` reports it and
``pytracers doctor`` prints it.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from .. import _shipped
from ..errors import NotSupportedError
from .symbols import syscall_function

__all__ = ["architecture"]

# What each architecture changes for pytracers (os.uname().machine -> notes
# that do not depend on the kernel; architecture() adds the rest).
_ARCH_NOTES: Dict[str, Tuple[str, ...]] = {
    "x86_64": (
        "syscall numbers: the x86-64 table (pytracers.tracers._x86_64_syscalls)",
        "ring buffer: plain loads and stores (x86-64 orders them as the kernel needs)",
    ),
    "aarch64": (
        "syscall numbers: the generic table (pytracers.tracers._arm64_syscalls): no open, "
        "stat, fork, pipe, poll -- programs call openat, newfstatat, clone, pipe2, ppoll",
        "ring buffer: a full barrier (libatomic's atomic_thread_fence, dmb ish) per run of "
        "records, around the producer position, the headers and the consumer position",
        "fentry/fexit/fmod_ret: BPF trampolines came to arm64 in 6.4 "
        "(DYNAMIC_FTRACE_WITH_DIRECT_CALLS); kprobe_multi needs CONFIG_FPROBE",
    ),
}


def architecture() -> Tuple[str, Tuple[str, ...]]:
    """The running machine's architecture (``"x86-64"``, ``"arm64"``) and what
    it changes for pytracers: which objects are loaded, the syscall table,
    the syscall entry functions' names, how the ring buffer is read."""
    machine = _shipped.machine()
    notes: List[str] = []
    try:
        notes.append(f"objects: {_shipped.objects_dir()} (built for {_shipped.arch_name()})")
    except NotSupportedError as e:
        notes.append(f"objects: none: {e.reason}")
    notes.append(f"syscall entry functions: {syscall_function('NAME')}")
    notes += _ARCH_NOTES.get(machine, (f"syscall numbers: no table for {machine}",))
    return _shipped.arch_name(), tuple(notes)
