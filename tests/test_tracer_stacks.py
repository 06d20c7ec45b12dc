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
from pytracers.symbolize import UNKNOWN
from pytracers.tracers import ExecTracer, FunctionTracer, ProcessTracer, SyscallTracer

WORKLOAD = r"""
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
static const char path[] = "/";
#include <fcntl.h>
#include <signal.h>
/* the system call instruction itself, so that the innermost user frame is ours */
__attribute__((noinline)) long do_the_syscall(long nr, long a0) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(a0), "S"(0), "d"(0)
                      : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    /* the generic table has no access: faccessat(AT_FDCWD, a0, 0) */
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = nr == SYS_faccessat ? AT_FDCWD : a0;
    register long x1 __asm__("x1") = nr == SYS_faccessat ? a0 : 0;
    register long x2 __asm__("x2") = 0;
    __asm__ volatile ("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
#error "add this machine's system call instruction"
#endif
}
__attribute__((noinline)) long caller_function(long nr, long a0) { return do_the_syscall(nr, a0); }
#ifndef SYS_access
#define SYS_access SYS_faccessat
#endif
#ifndef SYS_fork
#define SYS_fork SYS_clone            /* clone(SIGCHLD, 0, ...) is a fork */
#endif
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    for (int i = 0; i < 50; i++) {
        if (strcmp(mode, "access") == 0) {
            caller_function(SYS_access, (long)path);
        } else if (strcmp(mode, "exec") == 0) {
            caller_function(SYS_execve, (long)path);     /* a directory: EACCES */
        } else if (strcmp(mode, "fork") == 0) {
            /* a raw fork: the child returns through the same frames, then exits */
            if (caller_function(SYS_fork, SIGCHLD) == 0)
                caller_function(SYS_exit_group, 7);
        } else {
            caller_function(SYS_getppid, (long)path);
        }
        usleep(20000);
    }
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


def _events(tracer, cmd, want, n=1):
    """The first ``n`` events ``want(ev, pid)`` accepts while ``cmd`` runs,
    their stacks symbolised while the workload lives (they are cached)."""
    p = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 10
        evs = []
        while len(evs) < n and time.monotonic() < deadline:
            evs += [e for e in tracer.read(timeout=1) if want(e, p.pid)]
        assert len(evs) >= n, f"{len(evs)} events from the workload, wanted {n}"
        for e in evs:
            e.kstack, e.ustack
        return evs
    finally:
        p.kill()
        p.wait()


def _syscall_path(names):
    """Kernel frames end at the syscall entry, the dispatcher among them."""
    assert len(names) >= 2 and names[-1].startswith(ENTRY), names
    assert DISPATCH in names, names


def test_exec_tracer_stacks_failed_exec(workload):
    """The caller of a failed execve: symbolised (the image is still there)."""
    with ExecTracer(comm="stackload", stack="both") as t:
        ev = _events(t, [workload, "exec"], lambda e, pid: e.pid == pid and e.ret != 0)[0]
        ks, us = list(ev.kstack), list(ev.ustack)
        assert ev.ret == -errno.EACCES and ev.filename == "/"
        assert [f.symbol for f in us[:3]] == CHAIN, us
        assert us[0].module == workload
        names = [f.symbol for f in ks]
        if not names and kernel_version() < (6, 2):
            # 5.10's perf syscall tracepoints: no kernel stack (see the syscall test)
            assert ev._kstack == -errno.EFAULT
        else:
            _syscall_path(names)
            assert any("syscall_trace_enter" in n or "syscall_enter" in n for n in names), names
        assert t.stack_stats["lost"] == 0


def test_exec_tracer_successful_exec_user_frames_unknown(workload):
    """After a successful exec the caller's image is gone: addresses, [unknown]."""
    with ExecTracer(stack="user") as t:
        ev = _events(t, [workload, "access"], lambda e, pid: e.pid == pid and e.ret == 0)[0]
        us = list(ev.ustack)
        assert ev.comm == "stackload" and us, us
        assert all(f.symbol == UNKNOWN and f.address for f in us), us
        assert t.stack_stats["unknown_frames"].get("image replaced by exec") == len(us)
        assert t.stack_stats["lost"] == 0


def test_process_tracer_fork_and_exit_stacks(workload, need):
    with need("tp_btf"):
        t = ProcessTracer(("fork", "exit"), stack="both")
    with t:
        # one run (the executable's addresses differ from run to run): a fork
        # every 20 ms, each child exiting at once
        evs = _events(t, [workload, "fork"], n=4, want=lambda e, pid: (
            e.event == "fork" and e.pid == pid or e.event == "exit" and e.ppid == pid))
        fork = next(e for e in evs if e.event == "fork")
        ex = next(e for e in evs if e.event == "exit")
        # the forking parent: its caller chain, the kernel's fork path
        fus, fks = list(fork.ustack), [f.symbol for f in fork.kstack]
        assert [f.symbol for f in fus[:3]] == CHAIN, fus
        # (arm64's generic table has no fork: the workload calls clone(SIGCHLD))
        fork_call = "clone" if platform.machine() == "aarch64" else "fork"
        assert "kernel_clone" in fks and any(n.endswith("sys_" + fork_call) for n in fks), fks
        _syscall_path(fks)
        assert ex.exit_status == 7
        eks = [f.symbol for f in ex.kstack]
        assert "do_exit" in eks and "do_group_exit" in eks, eks
        assert eks.index("do_exit") < eks.index("do_group_exit"), eks
        _syscall_path(eks)
        # the child returned through the parent's frames: the syscall and
        # caller_function's return address are the fork's (main's is
        # another call site); the process is gone when this is read
        eus = list(ex.ustack)
        if not eus and kernel_version() < (6, 13):
            # older kernels fire sched_process_exit after exit_mm(): the task
            # has no user memory left to walk (-EFAULT: none, not lost)
            assert ex._ustack == -errno.EFAULT, ex._ustack
        else:
            assert [f.address for f in eus[:2]] == [f.address for f in fus[:2]], (eus, fus)
        assert t.stack_stats["lost"] == 0


def test_process_tracer_exec_stack(workload, need):
    with need("tp_btf"):
        t = ProcessTracer("exec", stack="kernel")
    with t:
        ev = _events(t, [workload], lambda e, pid: e.event == "exec" and e.pid == pid)[0]
        names = [f.symbol for f in ev.kstack]
        assert ev.ustack == [] and any("execve" in n for n in names), names
        _syscall_path(names)
