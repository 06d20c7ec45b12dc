"""The running kernel and this process: version, online CPUs, capabilities, lockdown, kprobe support.

Each answer is read from procfs/sysfs when asked (nothing here is cached:
capabilities change with the process, securityfs may be mounted later).
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from ..errors import BadArgumentError

__all__ = ["kernel_release", "parse_version", "kernel_version", "kernel_older_than",
           "read_text", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_BPF", "effective_caps", "has_cap",
           "missing_bpf_caps", "SECURITYFS", "lockdown_mode", "kprobe_pmu",
           "kprobe_events_file", "no_kprobes_reason",
           "uprobe_pmu", "no_uprobes_reason", "UPROBE_PMU", "parse_cpu_list", "online_cpus"]

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
SECURITYFS = "/sys/kernel/security"


# ---------------------------------------------------------------------- version

def kernel_release() -> str:
    """The running kernel's release string, e.g. ``'6.12.9+deb13-amd64'``."""
    return os.uname().release


def parse_version(text: str) -> Tuple[int, ...]:
    """The leading ``major[.minor[.patch]]`` of a release or version string as
    a tuple (``'5.10.0-30-amd64'`` -> (5, 10, 0), ``'5.18'`` -> (5, 18));
    BadArgumentError when it does not start with a number."""
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not m:
        raise BadArgumentError(f"not a kernel version: {text!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def kernel_version() -> Tuple[int, ...]:
    """The running kernel's version as a tuple, e.g. (6, 18, 0)."""
    try:
        return parse_version(kernel_release())
    except BadArgumentError:
        return (0, 0)


def kernel_older_than(version: str) -> bool:
    """Is the running kernel older than ``version`` (``"5.18"``)?"""
    return kernel_version() < parse_version(version)


def read_text(path: str) -> Optional[str]:
    """The text of a kernel file, or None when it is absent or unreadable."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def parse_cpu_list(text: str) -> Tuple[int, ...]:
    """``"0-3,5,7-8"`` (the kernel's CPU list format) -> (0, 1, 2, 3, 5, 7, 8)."""
    cpus: List[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(cpus)


def online_cpus() -> Tuple[int, ...]:
    """The CPUs online now (/sys/devices/system/cpu/online): where a perf
    event can be opened.  Falls back to 0 .. os.cpu_count()-1."""
    text = read_text("/sys/devices/system/cpu/online")
    if text:
        try:
            return parse_cpu_list(text)
        except ValueError:  # pragma: no cover - the kernel's own format
            pass
    return tuple(range(os.cpu_count() or 1))


# ---------------------------------------------------------------------- capabilities

def effective_caps() -> int:
    """This process's effective capability set (a bit mask; 0 if unreadable)."""
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


# ---------------------------------------------------------------------- lockdown

def _lockdown_file() -> Optional[str]:
    text = read_text(os.path.join(SECURITYFS, "lockdown"))
    for word in (text or "").split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def lockdown_mode(mount: bool = False) -> Optional[str]:
    """The kernel lockdown mode ('none', 'integrity', 'confidentiality'), or
    None when securityfs shows none (no lockdown LSM, or not mounted).

    ``mount``: when securityfs is not mounted, mount it first (root only;
    logged)."""
    mode = _lockdown_file()
    if mode is None and mount and os.path.isdir(SECURITYFS) and not os.listdir(SECURITYFS):
        from .._libbpf import ffi, libc
        if libc.mount(b"securityfs", SECURITYFS.encode(), b"securityfs", 0, ffi.NULL) == 0:
            import logging
            logging.getLogger("pytracers").info("mounted securityfs at %s", SECURITYFS)
            mode = _lockdown_file()
    return mode


# ---------------------------------------------------------------------- kprobes

def kprobe_pmu() -> bool:
    """Does the kernel have the kprobe PMU (perf-event kprobes, 4.17+)?"""
    return os.path.exists("/sys/bus/event_source/devices/kprobe/type")


def kprobe_events_file() -> bool:
    """Does tracefs have kprobe_events (the older way to create kprobes)?"""
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(root, "kprobe_events")):
            return True
    return False


UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"


def uprobe_pmu() -> bool:
    """Does the kernel have the uprobe PMU (perf-event uprobes, 4.17+)?"""
    return os.path.exists(UPROBE_PMU + "/type")


def no_uprobes_reason() -> Optional[str]:
    """Why uprobes (and so USDT probes) cannot work here, or None if the kernel
    seems to have them (the uprobe PMU, or uprobe_events in tracefs, which
    libbpf falls back to)."""
    if uprobe_pmu():
        return None
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(root, "uprobe_events")):
            return None
    return ("the kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe) and no "
            "uprobe_events in tracefs: CONFIG_UPROBE_EVENTS is off")


def no_kprobes_reason() -> Optional[str]:
    """Why kprobes cannot work here, or None if the kernel seems to have them."""
    if kprobe_pmu() or kprobe_events_file():
        return None
    return ("the kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no "
            "kprobe_events in tracefs: CONFIG_KPROBES is off")
