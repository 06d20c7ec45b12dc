"""stack= on the built-in tracers: ev.kstack / ev.ustack are the stacks where
the record was made, innermost first, symbolised (a frame-pointer workload's
caller chain in user space, the syscall's path in the kernel)."""
from __future__ import annotations

import errno
import platform
import subprocess
import time

import pytest

from pytracers.errors import BadArgumentError
from pytracers.features import kernel_version
from pytracers.tracers import FunctionTracer, SyscallTracer

WORKLOAD = r"""
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
static const char path[] = "/";
#include <fcntl.h>
/* the system call instruction itself, so that the innermost user frame is ours */
__attribute__((noinline)) long do_the_syscall(long nr) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(path), "S"(0)
                      : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    /* faccessat(AT_FDCWD, path, 0): the generic table has no access */
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = AT_FDCWD;
    register long x1 __asm__("x1") = (long)path;
    register long x2 __asm__("x2") = 0;
    __asm__ volatile ("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
#error "add this machine's system call instruction"
#endif
}
__attribute__((noinline)) void caller_function(long nr) { do_the_syscall(nr); }
#ifndef SYS_access
#define SYS_access SYS_faccessat
#endif
int main(int argc, char **argv) {
    long nr = argc > 1 && strcmp(argv[1], "access") == 0 ? SYS_access : SYS_getppid;
    for (int i = 0; i < 50; i++) { caller_function(nr); usleep(20000); }
    pause();
    return 0;
}
"""
CHAIN = ["do_the_syscall", "caller_function", "main"]
# The kernel side of a system call: the function that dispatches it and the
# entry code it is called from (outermost frame)
if platform.machine() == "aarch64":
    DISPATCH, ENTRY = "el0_svc", "el0t_64_sync"
else:
    DISPATCH, ENTRY = "do_syscall_64", "entry_SYSCALL_64"


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    d = tmp_path_factory.mktemp("stk")
    (d / "stackload.c").write_text(WORKLOAD)
    exe = d / "stackload"
    # (leaf frames too: arm64's gcc leaves them out by default, and the
    # unwinder would then skip do_the_syscall's caller)
    subprocess.run(["gcc", "-O0", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer",
                    "-o", str(exe),
                    str(d / "stackload.c")], check=True)
    return str(exe)


def _first_event(tracer, cmd, entry=None):
    """The first event of the workload's own call (the dynamic loader makes
    calls of its own first: access("/etc/ld.so.preload"))."""
    p = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 10
        evs = []
        while not evs and time.monotonic() < deadline:
            evs = [e for e in tracer.read(timeout=1) if e.pid == p.pid
                   and (entry is None or e.entry == entry)
                   and any(f.symbol == "do_the_syscall" for f in e.ustack)]
        assert evs, "no event from the workload's do_the_syscall"
        ev = evs[0]
        return ev, list(ev.kstack), list(ev.ustack), tracer.event_dict(ev)
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("kind", ["tp", "raw_tp", "tp_btf"])
def test_syscall_tracer_stacks(kind, workload, need):
    with need(kind):
        t = SyscallTracer("getppid", kind=kind, comm="stackload", stack="both")
    with t:
        ev, ks, us, d = _first_event(t, [workload])
    assert [f.symbol for f in us[:3]] == CHAIN, us
    assert us[0].module == workload and us[0].offset > 0
    names = [f.symbol for f in ks]
    assert d["ustack"][0]["symbol"] == "do_the_syscall" and "kstack" in d
    if kind == "tp" and not names and kernel_version() < (6, 2):
        # 5.10's perf syscall tracepoints hand BPF the task's user registers:
        # bpf_get_stackid finds no kernel stack there (-EFAULT), none is lost
        assert ev._kstack == -errno.EFAULT and t.stack_stats["lost"] == 0
        return
    # the sys_exit tracepoint's callers, out to the syscall entry (5.10 reaches
    # it from syscall_exit_to_user_mode, which do_syscall_64 tail-calls)
    # (arm64: el0_svc_common calls syscall_trace_exit)
    assert len(names) >= 2 and names[-1].startswith(ENTRY), names
    assert any("syscall_exit" in n or "syscall_trace_exit" in n for n in names[:-1]), names
    assert t.stack_stats["lost"] == 0 and t.stack_stats["symbolized"] >= len(ks) + len(us)


def test_user_stack_only_through_trace_syscall(workload):
    import pytracers
    with pytracers.trace_syscall("getppid", comm="stackload", stack="user") as t:
        ev, ks, us, _ = _first_event(t, [workload])
    assert ks == [] and [f.symbol for f in us[:3]] == CHAIN


@pytest.mark.parametrize("kind", ["fentry", "kprobe"])
def test_function_tracer_stacks(kind, workload, need):
    with need(kind):
        t = FunctionTracer("do_faccessat", kind=kind, comm="stackload", stack="both",
                           entry_events=True)
    with t:
        ev, ks, us, _ = _first_event(t, [workload, "access"], entry=True)
    names = [f.symbol for f in ks]
    assert [f.symbol for f in us[:3]] == CHAIN, us
    if kind == "kprobe" and names[-1] == "kretprobe_trampoline" and kernel_version() < (5, 15):
        # the tracer's kretprobe has replaced do_faccessat's return address;
        # before 5.15 the unwinder cannot see past it
        assert names == ["do_faccessat", "kretprobe_trampoline"], names
        return
    # the traced function, then its callers out to the syscall entry (below
    # the probe's own frames; 5.10's __x64_sys_access tail-calls do_faccessat)
    # fentry: the trampoline runs at the traced function's first instruction,
    # before the function has a frame of its own, so some kernels' unwinders
    # (7.2's) show the trampoline in its place, then its caller
    inner = "do_faccessat" if "do_faccessat" in names or kind != "fentry" else next(
        (n for n in names if n.startswith("bpf_trampoline_")), "do_faccessat")
    assert inner in names and DISPATCH in names, names
    assert names.index(inner) < names.index(DISPATCH), names
    assert names[-1].startswith(ENTRY), names


def test_no_stack_no_attributes_and_bad_values():
    with SyscallTracer("getppid") as t:
        assert t.stack_stats == {}
    with pytest.raises(BadArgumentError):
        SyscallTracer("getppid", stack="sideways")
