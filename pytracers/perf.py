"""Sampling perf events: ``perf_event_open(2)`` for the programs of kind
``perf_event`` (:meth:`pytracers.program.Program.attach_perf_event`).

An event is named as ``perf`` names it: ``cpu-clock`` and ``task-clock``
(software timers, present everywhere), ``cycles``, ``instructions`` and
``ref-cycles`` (hardware counters: a machine with a PMU only; most VMs have
none).  ``auto`` is ``cycles`` where the CPU PMU exists
(``/sys/bus/event_source/devices/cpu``), else ``cpu-clock``.  Each event
samples at a frequency (``freq=1``) on one CPU for every task (pid -1).
"""
from __future__ import annotations

import errno
import os
from typing import Dict, List, Tuple

from . import kinds
from ._libbpf import ffi, libc
from ._shipped import machine
from .errors import BadArgumentError, NotSupportedError, PermissionDeniedError, errno_name

__all__ = ["EVENTS", "resolve_event", "online_cpus", "open_sampling_event", "has_cpu_pmu"]

PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_COUNT_HW_CPU_CYCLES = 0
PERF_COUNT_HW_INSTRUCTIONS = 1
PERF_COUNT_HW_REF_CPU_CYCLES = 9
PERF_FLAG_FD_CLOEXEC = 1 << 3
ATTR_FREQ = 1 << 10            # perf_event_attr.freq: sample_freq, not sample_period
ATTR_SIZE_VER5 = 112
NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241, "riscv64": 241,
                      "ppc64le": 319, "s390x": 331}

EVENTS: Dict[str, Tuple[int, int]] = {
    "cpu-clock": (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK),
    "task-clock": (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK),
    "cycles": (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES),
    "instructions": (PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS),
    "ref-cycles": (PERF_TYPE_HARDWARE, PERF_COUNT_HW_REF_CPU_CYCLES),
}
AUTO = "auto"
PMU_DIR = "/sys/bus/event_source/devices/cpu"


def has_cpu_pmu() -> bool:
    """A hardware PMU the kernel exposes (absent in most VMs)."""
    return os.path.isdir(PMU_DIR)


def resolve_event(event: str) -> str:
    """``auto`` -> ``cycles`` or ``cpu-clock``; other names checked."""
    if event == AUTO:
        return "cycles" if has_cpu_pmu() else "cpu-clock"
    if event not in EVENTS:
        raise BadArgumentError(f"unknown perf event {event!r}; events: "
                               f"{', '.join((AUTO,) + tuple(EVENTS))}")
    return event


def online_cpus() -> List[int]:
    """The CPUs online now (``/sys/devices/system/cpu/online``: ``0-1,4``)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: List[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def open_sampling_event(event: str, frequency: int, cpu: int, pid: int = -1) -> int:
    """Open ``event`` sampling at ``frequency`` Hz on ``cpu``; the perf event's fd."""
    event = resolve_event(event)
    if not isinstance(frequency, int) or frequency < 1:
        raise BadArgumentError(f"frequency must be a positive int (Hz), got {frequency!r}")
    nr = NR_PERF_EVENT_OPEN.get(machine())
    if nr is None:
        raise NotSupportedError(kinds.PERF_EVENT, f"pytracers does not know perf_event_open's "
                                f"number on {machine()}")
    typ, config = EVENTS[event]
    attr = ffi.new("struct perf_event_attr *")
    attr.type = typ
    attr.size = ATTR_SIZE_VER5
    attr.config = config
    attr.sample_period = frequency      # sample_freq, with ATTR_FREQ set
    attr.flags = ATTR_FREQ
    ffi.errno = 0
    fd = libc.syscall(ffi.cast("long", nr), attr, ffi.cast("int", pid), ffi.cast("int", cpu),
                      ffi.cast("int", -1), ffi.cast("unsigned long", PERF_FLAG_FD_CLOEXEC))
    if fd >= 0:
        return int(fd)
    err = ffi.errno
    what = f"perf event {event} at {frequency} Hz on CPU {cpu}"
    if err in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
        hint = "use event='cpu-clock' (a software timer)" if typ == PERF_TYPE_HARDWARE else None
        why = ": no hardware PMU" if typ == PERF_TYPE_HARDWARE and not has_cpu_pmu() else ""
        raise NotSupportedError(kinds.PERF_EVENT, f"the kernel cannot open {what} "
                                f"({errno_name(err)}){why}",
                                min_kernel="4.9", hint=hint, errno=err)
    if err in (errno.EACCES, errno.EPERM):
        raise PermissionDeniedError(f"open {what}", "CAP_PERFMON (or CAP_SYS_ADMIN)", errno=err,
                                    detail="or a lower kernel.perf_event_paranoid")
    if err == errno.EINVAL and frequency > 1000:
        raise BadArgumentError(f"the kernel refused {what} ({errno_name(err)}): above "
                               "kernel.perf_event_max_sample_rate?")
    from .errors import AttachError
    raise AttachError(f"open {what}", err)
