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
from pytracers.tracers.exec import ARGBUF_SIZE, MAX_ARGS
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
    assert ev.args_truncated is False


def _exec_record(t, argv):
    """Run /bin/true with exactly ``argv`` (argv[0] included) and return its record."""
    child = subprocess.Popen(argv, executable="/bin/true")
    assert child.wait() == 0
    return _drain(t, lambda e: e.pid == child.pid)


def _packed(argv):
    return sum(len(a.encode()) + 1 for a in argv)


def _check_record(ev, argv, truncated):
    """argv, argc, the byte count and the flag agree with what was exec'd; the
    bytes of argbuf past the used part are zero (the record ends there)."""
    assert ev.argv == argv
    assert ev.args_truncated is truncated
    assert ev.argc == len(argv)
    assert ev.argbuf_len == _packed(argv) <= ARGBUF_SIZE
    assert ev.argbuf[:ev.argbuf_len] == b"".join(a.encode() + b"\0" for a in argv)
    assert ev.argbuf[ev.argbuf_len:] == bytes(ARGBUF_SIZE - ev.argbuf_len)


def test_exec_bounds_are_the_objects():
    """The documented bounds are those of exec.bpf.o (the layout is its BTF's)."""
    with ExecTracer() as t:
        assert t.layout.field("argbuf").size == ARGBUF_SIZE == 2048
        assert t.layout.field("argbuf").kind == "bytes"
    assert MAX_ARGS == 32


@pytest.mark.kind("tp")
def test_exec_full_command_line_of_20_arguments():
    argv = ["/bin/true"] + [f"arg{i:02d}-{'v' * i}" for i in range(1, 20)]
    assert len(argv) == 20
    with ExecTracer() as t:
        ev = _exec_record(t, argv)
    _check_record(ev, argv, truncated=False)
    assert (ev.ret, ev.filename, ev.comm) == (0, "/bin/true", "true")


@pytest.mark.kind("tp")
def test_exec_more_arguments_than_the_bound():
    """MAX_ARGS arguments fit; one more and exactly the first MAX_ARGS are kept."""
    exact = ["/bin/true"] + [f"a{i}" for i in range(1, MAX_ARGS)]
    more = ["/bin/true"] + [f"b{i}" for i in range(1, MAX_ARGS + 9)]
    with ExecTracer() as t:
        ev_exact = _exec_record(t, exact)
        ev_more = _exec_record(t, more)
    _check_record(ev_exact, exact, truncated=False)
    _check_record(ev_more, more[:MAX_ARGS], truncated=True)


@pytest.mark.kind("tp")
def test_exec_more_bytes_than_the_bound_cuts_the_last_argument():
    """25 arguments of 100 bytes: the first 20 fit whole after argv[0]
    (10 + 20 * 101 = 2030 bytes), the 21st is cut to the 17 bytes left
    before its NUL, and nothing after it is read."""
    argv = ["/bin/true"] + [f"{i:02d}" + "x" * 98 for i in range(25)]
    with ExecTracer() as t:
        ev = _exec_record(t, argv)
    assert _packed(argv[:21]) == 2030
    _check_record(ev, argv[:21] + [argv[21][:17]], truncated=True)
    assert ev.argbuf_len == ARGBUF_SIZE


@pytest.mark.kind("tp")
def test_exec_empty_argument_and_one_that_fills_the_space_exactly():
    """An empty argument is kept; an argument as long as the space left (its
    NUL in the last byte) is whole and not truncated; one byte longer it is
    cut by exactly that byte; a further argument after an exact fit is
    reported as truncation without a partial one."""
    head = ["/bin/true", "", "mid", ""]
    room = ARGBUF_SIZE - _packed(head) - 1          # the longest last argument
    fits = head + ["y" * room]
    over = head + ["z" * (room + 1)]
    after = fits + ["next"]
    with ExecTracer() as t:
        ev_fits = _exec_record(t, fits)
        ev_over = _exec_record(t, over)
        ev_after = _exec_record(t, after)
    _check_record(ev_fits, fits, truncated=False)
    assert ev_fits.argbuf_len == ARGBUF_SIZE
    _check_record(ev_over, head + ["z" * room], truncated=True)
    _check_record(ev_after, fits, truncated=True)


@pytest.mark.kind("tp")
def test_exec_without_arguments():
    """execve(path, [], env): no arguments at all, not truncated."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    empty = (ctypes.c_char_p * 1)(None)              # os.execve refuses an empty argv
    with ExecTracer() as t:
        pid = os.fork()
        if pid == 0:
            try:
                libc.execve(b"/bin/true", empty, empty)
            finally:
                os._exit(127)
        assert os.waitpid(pid, 0)[1] == 0
        ev = _drain(t, lambda e: e.tid == pid)
    assert (ev.ret, ev.filename) == (0, "/bin/true")
    _check_record(ev, [], truncated=False)


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
    assert ok.id == syscall_number("openat") == (56 if os.uname().machine == "aarch64" else 257)
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
    assert syscall_params("getpid") == ()
    if os.uname().machine == "aarch64":      # the generic table: no stat
        assert syscall_params("fstat") == ("fd", "statbuf")         # sys_enter_newfstat
        assert syscall_name(172) == "getpid"
        assert syscall_number("newfstat") == syscall_number("fstat") == 80
        numbers = {"getpid": 172, "umask": 166, "getppid": 173}
    else:
        assert syscall_params("stat") == ("filename", "statbuf")   # sys_enter_newstat
        assert syscall_name(39) == "getpid"
        assert syscall_number("newstat") == syscall_number("stat") == 4
        numbers = {"getpid": 39, "umask": 95, "getppid": 110}
    # the committed table agrees with the id the kernel reports in tp records
    with SyscallTracer(["getpid", "umask", "getppid"], kind="tp", pid=os.getpid()) as t:
        os.getpid()
        os.umask(os.umask(0o22))
        os.getppid()
        ids = {e.name: e.id for e in t.read(1.0)}
    assert ids == numbers


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
