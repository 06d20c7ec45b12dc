"""The tracepoint tracers (tp, raw_tp, tp_btf) deliver exactly the events the
test causes: exec of a child, syscalls of this thread, a child's fork/exec/exit."""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import threading

import pytest

import pytracers
from pytracers.errors import BadArgumentError, ClosedError, TargetNotFoundError
from pytracers.tracers import ExecTracer, ProcessTracer, SyscallTracer
from pytracers.tracers.syscalls import syscall_name, syscall_number, syscall_params

AT_FDCWD = -100


def _mine(events, pred, n=1):
    """The first ``n`` events satisfying ``pred``."""
    out = [ev for ev in events if pred(ev)]
    return out[:n]


def _drain(t, pred, timeout=2.0):
    for ev in t.events(timeout):
        if pred(ev):
            return ev
    pytest.fail(f"no matching event within {timeout}s")


def _waiting_child(then):
    """A shell that waits for a line on stdin, then execs ``then``."""
    return subprocess.Popen(["/bin/sh", "-c", 'read x; exec "$@"', "sh", *then],
                            stdin=subprocess.PIPE)


# ---------------------------------------------------------------- tp: ExecTracer

@pytest.mark.kind("tp")
def test_exec_tracer_fields_exact():
    with ExecTracer() as t:
        assert t.kind == "tp"
        child = subprocess.Popen(["/bin/true", "first-arg", "second"])
        child.wait()
        ev = _drain(t, lambda e: e.pid == child.pid)
    assert (ev.pid, ev.tid, ev.ppid, ev.uid) == (child.pid, child.pid, os.getpid(), os.getuid())
    assert ev.ret == 0
    assert ev.comm == "true"
    assert ev.filename == "/bin/true"
    assert ev.argv == ["/bin/true", "first-arg", "second"]
    assert ev.argc == 3


@pytest.mark.kind("tp")
def test_exec_failure_reports_errno():
    with ExecTracer(pid=os.getpid()) as t:
        with pytest.raises(FileNotFoundError):
            os.execv("/nonexistent/pytracers-test", ["x"])
        ev = _drain(t, lambda e: e.tid == threading.get_native_id())
        assert ev.ret == -errno.ENOENT
        assert ev.filename == "/nonexistent/pytracers-test"
        assert t.lost == 0


@pytest.mark.kind("tp")
def test_exec_pid_filter_before_load_and_set_filter_after():
    a = _waiting_child(["/bin/true", "from-a"])
    b = _waiting_child(["/bin/true", "from-b"])
    try:
        with ExecTracer(pid=a.pid) as only_a, ExecTracer() as anyone:
            anyone.set_filter(pid=b.pid)
            a.communicate(b"go\n")
            b.communicate(b"go\n")
            got_a = only_a.read(2.0)
            got_b = anyone.read(2.0)
            # each saw exactly its own child's exec, the other's was filtered in BPF
            assert [(e.pid, e.argv) for e in got_a] == [(a.pid, ["/bin/true", "from-a"])]
            assert [(e.pid, e.argv) for e in got_b] == [(b.pid, ["/bin/true", "from-b"])]
            anyone.set_filter()             # cleared: everyone again
            c = subprocess.Popen(["/bin/true", "from-c"])
            c.wait()
            assert _drain(anyone, lambda e: e.pid == c.pid).argv == ["/bin/true", "from-c"]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_bad_filters_rejected():
    with pytest.raises(BadArgumentError):
        ExecTracer(pid=0)
    with pytest.raises(BadArgumentError):
        ExecTracer(comm="x" * 16)
    with pytest.raises(TypeError):
        ExecTracer(pid="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="measure_latency must be a bool"):
        SyscallTracer("getppid", measure_latency="no")  # type: ignore[arg-type]


def test_close_twice_and_use_after_close():
    t = ExecTracer()
    t.close()
    t.close()
    with pytest.raises(ClosedError):
        t.read()
    with pytest.raises(ClosedError):
        t.lost


# ---------------------------------------------------------------- syscalls: tp, raw_tp, tp_btf

SYSCALL_KINDS = [pytest.param(k, marks=pytest.mark.kind(k)) for k in ("tp", "raw_tp", "tp_btf")]


def tp_reads_task_pt_regs() -> bool:
    """Whether this kernel lets a tp program call bpf_task_pt_regs (5.15+),
    which SyscallTracer(kind="tp", measure_latency=False) needs; asked of
    libbpf's helper probe, and checked against the release that added it."""
    from pytracers._libbpf import lib
    from pytracers.features import kernel_version
    BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_task_pt_regs = 5, 175
    ok = lib.libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_task_pt_regs,
                                     pytracers._libbpf.ffi.NULL) == 1
    assert ok == (kernel_version() >= (5, 15)), (ok, kernel_version())
    return ok


@pytest.mark.parametrize("timed", [True, False], ids=["timed", "exit_only"])
@pytest.mark.parametrize("kind", SYSCALL_KINDS)
def test_syscall_tracer_openat_exact(kind, timed, tmp_path):
    """Exact records of our own openat/getppid calls, with latency
    (entry + exit paired) and without (one program per syscall, at exit,
    arguments read from the saved registers)."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    me = threading.get_native_id()
    # tp without latency needs bpf_task_pt_regs; older kernels pair entry/exit
    expect_timed = timed or (kind == "tp" and not tp_reads_task_pt_regs())
    with SyscallTracer(["openat", "getppid"], kind=kind, pid=os.getpid(),
                       measure_latency=timed) as t:
        assert t.kind == kind
        assert t.measure_latency == expect_timed
        hooks = 2 if kind == "tp" else 1          # tp: a tracepoint per syscall
        assert len(t.links) == hooks * (2 if expect_timed else 1)
        if expect_timed and not timed:
            assert "bpf_task_pt_regs" in t.why, t.why
        fd = os.open(path, flags)
        os.close(fd)
        with pytest.raises(FileNotFoundError):
            os.open(tmp_path / "missing", os.O_RDONLY)
        ppid = os.getppid()
        evs = [e for e in t.read(1.0) + t.read(0.2) if e.tid == me]
    opens = [e for e in evs if e.name == "openat"]
    # the last two openat calls of this thread are ours (Python may open files itself)
    ok, missing = opens[-2:]
    assert ok.id == syscall_number("openat") == 257
    assert (ok.pid, ok.tid) == (os.getpid(), me)
    assert ok.ret == fd
    assert ok.args.dfd == AT_FDCWD           # signed, as the kernel declares it
    assert ok.args.flags == flags
    assert ok.args._fields == ("dfd", "filename", "flags", "mode")
    if expect_timed:
        assert ok.latency_ns > 0
    else:
        assert ok.latency_ns is None
    assert missing.ret == -errno.ENOENT
    assert missing.args.flags == os.O_RDONLY | os.O_CLOEXEC
    gp = [e for e in evs if e.name == "getppid"]
    assert len(gp) == 1 and gp[0].ret == ppid and gp[0].args == ()
    assert all(e.name in ("openat", "getppid") for e in evs)


@pytest.mark.kind("tp")
def test_handled_refusal_is_not_logged_as_a_warning(caplog):
    """A load the tracer retries with another configuration (tp without
    latency on a kernel that lacks bpf_task_pt_regs) logs libbpf's refusal at
    DEBUG, not as a WARNING the user did nothing about."""
    caplog.set_level(logging.DEBUG, logger="pytracers.libbpf")
    with SyscallTracer("getppid", kind="tp", pid=os.getpid(), measure_latency=False) as t:
        fell_back = t.measure_latency
    libbpf = [r for r in caplog.records if r.name == "pytracers.libbpf"]
    assert [r.getMessage() for r in libbpf if r.levelno >= logging.WARNING] == []
    assert fell_back == (not tp_reads_task_pt_regs())
    if fell_back:
        assert any("sc_tp_exit_regs" in r.getMessage() and r.levelno == logging.DEBUG
                   for r in libbpf)


@pytest.mark.kind("raw_tp")
def test_raw_tp_all_syscalls_names_from_ids():
    with SyscallTracer(kind="raw_tp", pid=os.getpid()) as t:
        os.getppid()
        os.umask(os.umask(0o22))
        evs = t.read(1.0)
    names = [e.name for e in evs if e.tid == threading.get_native_id()]
    i = names.index("getppid")
    assert names[i:i + 3] == ["getppid", "umask", "umask"]


@pytest.mark.kind("tp")
def test_kernel_declares_arguments_and_number_table_matches():
    # names and arity come from the kernel's tracefs format files
    assert syscall_params("openat") == ("dfd", "filename", "flags", "mode")
    assert syscall_params("stat") == ("filename", "statbuf")       # sys_enter_newstat
    assert syscall_params("getpid") == ()
    assert syscall_name(39) == "getpid" and syscall_number("newstat") == syscall_number("stat") == 4
    # the committed table agrees with the id the kernel reports in tp records
    with SyscallTracer(["getpid", "umask", "getppid"], kind="tp", pid=os.getpid()) as t:
        os.getpid()
        os.umask(os.umask(0o22))
        os.getppid()
        ids = {e.name: e.id for e in t.read(1.0)}
    assert ids == {"getpid": 39, "umask": 95, "getppid": 110}


def test_syscall_tracer_arguments():
    with pytest.raises(BadArgumentError, match="name the syscalls"):
        SyscallTracer(kind="tp")
    with pytest.raises(BadArgumentError):
        SyscallTracer("openat", kind="kprobe")
    with pytest.raises(TargetNotFoundError) as ei:
        SyscallTracer("opnat")
    assert "openat" in ei.value.suggestions


@pytest.mark.kind("raw_tp")
def test_lost_counts_what_a_full_ring_dropped():
    page = os.sysconf("SC_PAGE_SIZE")
    n = 300
    with SyscallTracer("getppid", kind="raw_tp", pid=os.getpid(), ring_size=page) as t:
        for _ in range(n):
            os.getppid()
        got = t.read(0.5)
        lost = t.lost
    assert lost > 0
    assert len(got) + lost == n


# ---------------------------------------------------------------- tp_btf: ProcessTracer

@pytest.mark.kind("tp_btf")
def test_process_tracer_fork_exec_exit_exact():
    with ProcessTracer() as t:
        assert t.kind == "tp_btf"
        child = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
        child.wait()
        mine = []
        for ev in t.events(2.0):
            if child.pid in (ev.pid, ev.child_pid):
                mine.append(ev)
                if ev.event == "exit":
                    break
    fork, exe, ex = mine
    assert (fork.event, fork.pid, fork.child_pid, fork.ppid) == ("fork", os.getpid(), child.pid,
                                                                  os.getpid())
    assert (exe.event, exe.pid, exe.ppid, exe.filename, exe.comm) == (
        "exec", child.pid, os.getpid(), "/bin/sh", "sh")
    assert (ex.event, ex.pid, ex.ppid, ex.exit_status, ex.exit_signal, ex.core_dumped) == (
        "exit", child.pid, os.getpid(), 7, None, False)
    assert ex.lifetime_ns > exe.lifetime_ns > 0


@pytest.mark.kind("tp_btf")
def test_process_tracer_killed_child_and_event_choice():
    with ProcessTracer("exit") as t:
        child = subprocess.Popen(["/bin/sleep", "30"])
        child.send_signal(signal.SIGKILL)
        child.wait()
        ev = _drain(t, lambda e: e.pid == child.pid)
        assert ev.event == "exit"
        assert (ev.exit_status, ev.exit_signal) == (None, signal.SIGKILL)
        assert all(e.event == "exit" for e in t.read(0.1))
    with pytest.raises(BadArgumentError):
        ProcessTracer("spawn")


def test_tracers_exported_from_package():
    for name in ("ExecTracer", "SyscallTracer", "ProcessTracer", "FunctionTracer",
                 "FmodRetPolicy", "trace_function", "trace_syscall", "features"):
        assert hasattr(pytracers, name), name
