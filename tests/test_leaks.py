"""Open -> load -> attach -> read -> close, many times per probe kind: nothing leaks.

After the cycles, compared with a baseline taken after one warm-up cycle:
- the process has exactly the same fds;
- every BPF program, map and link the cycles created (ids read from
  /proc/self/fdinfo while they were open, so other processes' objects do not
  count) is gone from the kernel (walked by id);
- RSS grew by less than PYTRACERS_LEAK_RSS_MB (default 4 MB), measured after
  malloc_trim(0): without it glibc's heap keeps the high-water mark of
  libbpf's per-load allocations (~4 MB after a few hundred cycles, flat
  after that), which is not a leak.

Each cycle triggers one event (this process calls getppid) and reads it.
PYTRACERS_LEAK_CYCLES sets the number of cycles per kind.  The default is
100 on the host and 5 in the qemu kernel matrix (PYTRACERS_VM_KERNEL set):
a cycle is not cheap -- libbpf parses the kernel's 5 MB BTF at every load
(~50-80 ms) and detaching a perf-event tracepoint waits for RCU (tp: ~300 ms
a cycle on a busy 2-core host) -- so 1000 cycles per kind take ~8 minutes on
the host.  RELIABILITY.md has the 1000-cycle run and its figures.
"""
from __future__ import annotations

import ctypes
import gc
import os
import time
from typing import Any, Callable, Dict, Set

import pytest

import pytracers
from pytracers import introspect
from pytracers.kernel.symbols import syscall_function
from pytracers.tracers.syscalls import syscall_number

VM_KERNEL = os.environ.get("PYTRACERS_VM_KERNEL")
CYCLES = int(os.environ.get("PYTRACERS_LEAK_CYCLES", "5" if VM_KERNEL else "100"))
RSS_LIMIT = float(os.environ.get("PYTRACERS_LEAK_RSS_MB", "4")) * (1 << 20)
SYSCALLS = pytracers.object_path("syscalls")
KPROBE = pytracers.object_path("kprobe")
FENTRY = pytracers.object_path("fentry")
GETPPID_NR = syscall_number("getppid")     # 110 on x86-64, 173 on arm64
# __x64_sys_getpgid, __arm64_sys_getpgid: in the kernel's BTF (getppid,
# SYSCALL_DEFINE0, is not)
GETPGID_FN = syscall_function("getpgid")
PID = os.getpid()

Ids = Dict[str, Set[int]]


def _record(obj: Any, links: list, ids: Ids) -> None:
    """Note the kernel ids of everything this cycle holds."""
    for fd in [p.fd for p in obj.programs.values()] + [m.fd for m in obj.maps.values()] + \
            [ln.fd for ln in links]:
        kid = introspect.kernel_id(fd)
        if kid:
            ids[kid[0]].add(kid[1])


def _trigger_and_read(rb: Any, call: Callable[..., Any] = os.getppid) -> None:
    call(0) if call is os.getpgid else call()
    got = rb.read(2.0)
    assert got, "no event read in this cycle"


def cycle_tp(ids: Ids) -> None:
    o = pytracers.open(SYSCALLS)
    o.only("sc_tp_enter0", "sc_tp_exit")
    o.config["cfg_pid"] = PID
    with o.load() as obj:
        links = [obj.programs["sc_tp_enter0"].attach("syscalls/sys_enter_getppid"),
                 obj.programs["sc_tp_exit"].attach("syscalls/sys_exit_getppid")]
        rb = obj.ring_buffer()
        _record(obj, links, ids)
        _trigger_and_read(rb)


def _cycle_sys_enter_exit(prefix: str, ids: Ids) -> None:
    o = pytracers.open(SYSCALLS)
    o.only(prefix + "_enter", prefix + "_exit")
    o.config["cfg_pid"] = PID
    o.config["cfg_filter_ids"] = 1
    with o.load() as obj:
        obj.maps["syscall_ids"][GETPPID_NR] = b"\x01"
        links = [p.attach() for p in obj.programs.values()]
        rb = obj.ring_buffer()
        _record(obj, links, ids)
        _trigger_and_read(rb)


def cycle_raw_tp(ids: Ids) -> None:
    _cycle_sys_enter_exit("sc_raw", ids)


def cycle_tp_btf(ids: Ids) -> None:
    _cycle_sys_enter_exit("sc_btf", ids)


def cycle_kprobe(ids: Ids) -> None:
    o = pytracers.open(KPROBE)
    o.only("fn_kprobe", "fn_kretprobe")
    o.config["cfg_pid"] = PID
    with o.load() as obj:
        links = [obj.programs["fn_kprobe"].attach_kprobe(GETPGID_FN),
                 obj.programs["fn_kretprobe"].attach_kprobe(GETPGID_FN, retprobe=True)]
        rb = obj.ring_buffer()
        _record(obj, links, ids)
        _trigger_and_read(rb, os.getpgid)


def cycle_fentry(ids: Ids) -> None:
    o = pytracers.open(FENTRY)
    o.config["cfg_pid"] = PID
    o.config["cfg_nargs"] = 1                 # __<arch>_sys_getpgid(const struct pt_regs *)
    for p in o.programs.values():
        p.set_attach_target(GETPGID_FN)
    with o.load() as obj:
        links = [p.attach() for p in obj.programs.values()]
        rb = obj.ring_buffer()
        _record(obj, links, ids)
        _trigger_and_read(rb, os.getpgid)


CYCLE: Dict[str, Callable[[Ids], None]] = {
    "tp": cycle_tp, "raw_tp": cycle_raw_tp, "tp_btf": cycle_tp_btf,
    "kprobe": cycle_kprobe, "fentry": cycle_fentry,
}


def _trim() -> None:
    """Hand freed heap memory back to the kernel (glibc keeps it otherwise:
    libbpf allocates and frees megabytes per load -- the kernel's BTF -- and
    the high-water mark of the heap would read as growth)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _fds() -> Set[str]:
    return set(os.listdir("/proc/self/fd"))


def _still_there(ids, timeout: float = 10.0):
    return introspect.still_present(ids, timeout)


@pytest.mark.parametrize("kind", list(CYCLE))
def test_cycles_release_everything(kind: str, need: Any, request: Any) -> None:
    request.node.add_marker(pytest.mark.kind(kind))
    warm: Ids = {"progs": set(), "maps": set(), "links": set()}
    with need(kind):
        CYCLE[kind](warm)                 # imports, caches, libbpf's feature probes
    gc.collect()
    _trim()
    fds0, rss0 = _fds(), _rss()
    ids: Ids = {"progs": set(), "maps": set(), "links": set()}
    t0 = time.monotonic()
    for _ in range(CYCLES):
        CYCLE[kind](ids)
    dt = time.monotonic() - t0
    gc.collect()
    raw = _rss()
    _trim()
    fds1, rss1 = _fds(), _rss()
    left = _still_there(ids)
    print(f"\n{kind}: {CYCLES} cycles in {dt:.1f}s ({dt / CYCLES * 1000:.1f} ms each); "
          f"kernel objects created {sum(map(len, ids.values()))} "
          f"({', '.join(f'{len(v)} {k}' for k, v in ids.items())}), still present {left}; "
          f"fds {len(fds0)} -> {len(fds1)}; RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MB "
          f"({(rss1 - rss0) / 2**20:+.2f} MB after malloc_trim; {(raw - rss0) / 2**20:+.2f} MB "
          "before)")
    assert len(ids["progs"]) >= CYCLES and len(ids["maps"]) >= CYCLES, \
        "the cycles did not create what they should have"
    assert fds1 == fds0, f"fds leaked: {sorted(fds1 - fds0, key=int)}"
    assert not left, f"kernel objects left behind: {left}"
    assert rss1 - rss0 < RSS_LIMIT, f"RSS grew by {(rss1 - rss0) / 2**20:.2f} MB"
