"""features.probe() predicts what the real tracers can do, on every kernel; the
choice rules of trace_function/trace_syscall (pytracers/choose.py) hold."""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time

import pytest

import pytracers
from pytracers import choose, features
from pytracers.kernel import host
from pytracers.errors import BadArgumentError, NotSupportedError, TargetNotFoundError
from pytracers.tracers.user_function import UserFunctionTracer
from pytracers.tracers import (FmodRetPolicy, FunctionTracer, ProcessTracer, SyscallTracer)

from conftest import VM_KERNEL

TARGET = "do_faccessat"          # 5.10 .. 7.x (do_unlinkat is gone in 7.x)
AT_FDCWD = -100


# ---------------------------------------------------------------- the real outcome of each kind

def _kretprobe_alone():
    """The kprobe tracer's own return program, attached alone."""
    o = pytracers.open(pytracers.object_path("kprobe"))
    o.only("fn_kretprobe")
    obj = o.load()
    try:
        obj.programs["fn_kretprobe"].attach_kprobe(TARGET, retprobe=True)
    except BaseException:
        obj.close()
        raise
    return obj


REAL = {
    "tp": lambda child: SyscallTracer("getppid", kind="tp"),
    "raw_tp": lambda child: SyscallTracer("getppid", kind="raw_tp"),
    "tp_btf": lambda child: ProcessTracer(),
    "kprobe": lambda child: FunctionTracer(TARGET, kind="kprobe"),
    "kretprobe": lambda child: _kretprobe_alone(),
    "kprobe_multi": lambda child: FunctionTracer(TARGET, kind="kprobe_multi"),
    "fentry": lambda child: FunctionTracer(TARGET, kind="fentry"),
    "fexit": lambda child: FunctionTracer(TARGET, kind="fentry", measure_latency=False),
    "fmod_ret": lambda child: FmodRetPolicy("security_file_open", pid=child, enable=True),
    "uprobe": lambda child: UserFunctionTracer("libc", "getpid", pid=child, kind="uprobe"),
    "uretprobe": lambda child: UserFunctionTracer("libc", "getpid", pid=child,
                                                  kind="uretprobe"),
    # the USDT tracer on the probe the prober uses (CPython's, or libstdc++'s)
    "usdt": lambda child: choose.trace_usdt(*_usdt_probe_target()),
    "perf_event": lambda child: pytracers.Profiler(frequency=49),
}


def _usdt_probe_target():
    from pytracers.user.usdt import well_known_probes
    for p in well_known_probes():
        return p.path, p.full_name
    pytest.skip("no binary with a USDT probe here (python3.11's, python3's, libstdc++'s)")


@pytest.fixture
def sleeper():
    """A child process (the only process a policy may target)."""
    p = subprocess.Popen(["/bin/sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.kind(k))
                                  for k in features.PROBE_KINDS])
def test_prediction_equals_real_attach(kind, sleeper):
    predicted = features.probe()[kind]
    assert predicted.conclusive, predicted
    try:
        with REAL[kind](sleeper):
            real, why = True, "attached"
    except NotSupportedError as e:
        real, why = False, e.reason
    assert predicted.supported == real, (f"{kind}: probe() said {predicted.supported} "
                                         f"({predicted.reason}); the tracer: {why}")


def test_report_shape_cache_and_refresh():
    r = features.probe()
    assert [f.name for f in r] == list(features.FEATURES)
    for f in r:
        assert isinstance(f.supported, bool) and f.reason, f
        assert f.conclusive, f
        if not f.supported:
            assert f.reason
    assert r.kernel == os.uname().release
    again = features.probe()
    assert again.seconds < 0.05                  # every answer came from the cache
    assert [(f.name, f.supported, f.reason) for f in again] == \
        [(f.name, f.supported, f.reason) for f in r]
    fresh = features.probe_one("raw_tp", refresh=True)     # (all of them: the timing test)
    assert fresh.seconds > 0                     # really attached again
    assert (fresh.supported, fresh.reason) == (r.raw_tp.supported, r.raw_tp.reason)
    assert "tp_btf" in r.table()
    with pytest.raises(KeyError):
        r["usdt-not-a-feature"]


def test_tracepoint_kinds_supported_everywhere():
    r = features.probe()
    for k in ("btf", "ringbuf", "tp", "raw_tp", "tp_btf", "tracefs"):
        assert r[k].supported, r[k]


@pytest.mark.skipif(VM_KERNEL is not None, reason="host-only: the VM kernels have kprobes")
def test_host_refusals_named():
    if host.kprobe_pmu():
        pytest.skip("this machine has a kprobe PMU; the test describes the CONFIG_KPROBES=n host")
    r = features.probe()
    for k in ("kprobe", "kretprobe"):
        assert not r[k].supported and "CONFIG_KPROBES is off" in r[k].reason, r[k]
    if r.fentry.supported:
        pytest.skip("trampolines work on this machine")
    for k in ("fentry", "fexit", "fmod_ret"):
        assert not r[k].supported and "refused with EPERM" in r[k].reason, r[k]
    assert not r.kprobe_multi.supported
    # can_attach() answers for a function with the kind's reason
    c = features.can_attach("fentry", TARGET)
    assert not c.supported and "EPERM" in c.reason
    c = features.can_attach("kprobe", TARGET)
    assert not c.supported and "CONFIG_KPROBES" in c.reason
    # ...and trace_function names both refusals
    with pytest.raises(NotSupportedError) as ei:
        pytracers.trace_function("do_unlinkat")       # the example
    msg = str(ei.value)
    assert "fentry: program load refused with EPERM" in msg
    assert "kprobe: " in msg and "CONFIG_KPROBES is off" in msg


@pytest.mark.skipif(VM_KERNEL is not None, reason="host-only timing")
def test_prober_is_fast_on_the_host():
    before = features.probe()
    t0 = time.perf_counter()
    r = features.probe(refresh=True)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, r.table()
    assert [(f.name, f.supported) for f in r] == [(f.name, f.supported) for f in before]


@pytest.mark.parametrize("kind", ["fentry", "kprobe"])
def test_can_attach_predicts_the_tracer(kind):
    c = features.can_attach(kind, TARGET)
    try:
        with FunctionTracer(TARGET, kind=kind):
            real = True
    except NotSupportedError:
        real = False
    assert c.supported == real, c
    missing = features.can_attach(kind, "pytracers_no_such_function")
    assert not missing.supported
    if features.probe()[kind].supported:
        assert "symbol missing" in missing.reason


def test_can_attach_rejects_other_kinds():
    with pytest.raises(BadArgumentError):
        features.can_attach("tp", TARGET)


# ---------------------------------------------------------------- choice rules: syscalls

def _my_events(t, timeout=1.0):
    me = threading.get_native_id()
    return [e for e in t.read(timeout) + t.read(0.1) if e.tid == me]


@pytest.mark.kind("tp")
def test_trace_syscall_default_is_the_per_syscall_tracepoint():
    with pytracers.trace_syscall("getppid", pid=os.getpid()) as t:
        assert t.kind == "tp"
        assert "run only when getppid is called" in t.why
        assert "every syscall of the system" in t.why
        ppid = os.getppid()
        evs = _my_events(t)
    assert [(e.name, e.ret, e.pid) for e in evs] == [("getppid", ppid, os.getpid())]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.kind(k))
                                  for k in ("raw_tp", "tp_btf")])
def test_trace_syscall_explicit_kind_states_its_cost(kind):
    with pytracers.trace_syscall("getppid", kind=kind, pid=os.getpid()) as t:
        assert t.kind == kind
        assert f"kind='{kind}' requested" in t.why
        assert "every syscall of the system" in t.why
        ppid = os.getppid()
        evs = _my_events(t)
    assert [(e.name, e.ret) for e in evs] == [("getppid", ppid)]


@pytest.mark.kind("tp_btf")
def test_trace_syscall_falls_back_when_tracepoints_are_missing(monkeypatch):
    real = choose.SyscallTracer

    def no_tp(name, kind="tp", **kw):
        if kind == "tp":
            raise NotSupportedError("tp syscall tracing", "simulated: no events/syscalls")
        return real(name, kind=kind, **kw)
    monkeypatch.setattr(choose, "SyscallTracer", no_tp)
    with pytracers.trace_syscall("getppid", pid=os.getpid()) as t:
        assert t.kind == "tp_btf"
        assert t.why.startswith("tp unavailable (simulated: no events/syscalls)")
        assert "every syscall of the system" in t.why
        ppid = os.getppid()
        assert [(e.name, e.ret) for e in _my_events(t)] == [("getppid", ppid)]


def test_trace_syscall_bad_kind():
    with pytest.raises(BadArgumentError):
        pytracers.trace_syscall("getppid", kind="kprobe")


# ---------------------------------------------------------------- choice rules: functions

def _access_two(tmp_path):
    p = tmp_path / "there"
    p.write_bytes(b"")
    assert os.access(p, os.R_OK)
    assert not os.access(tmp_path / "never-existed", os.R_OK)


def _check_function_events(evs):
    assert [(e.name, e.pid, e.ret) for e in evs] == [(TARGET, os.getpid(), 0),
                                                      (TARGET, os.getpid(), -errno.ENOENT)]
    assert all((e.args.dfd, e.args.mode, e.args.flags) == (AT_FDCWD, os.R_OK, 0)
               and e.latency_ns > 0 for e in evs)


def test_stable_tracepoints_table_and_name_rule():
    # only syscalls this kernel traces: arm64's generic table has no unlink,
    # access or poll (programs call unlinkat, faccessat, ppoll)
    arm64 = os.uname().machine == "aarch64"
    unlink = ["unlinkat"] if arm64 else ["unlink", "unlinkat"]
    assert choose.stable_tracepoints("do_unlinkat") == unlink
    assert choose.stable_tracepoints("filename_unlinkat") == unlink
    assert choose.stable_tracepoints("do_faccessat") == (
        ["faccessat", "faccessat2"] if arm64 else ["access", "faccessat", "faccessat2"])
    assert choose.stable_tracepoints("__x64_sys_openat") == ["openat"]
    assert choose.stable_tracepoints("__arm64_sys_openat") == ["openat"]
    assert choose.stable_tracepoints("ksys_read") == ["read"]
    assert choose.stable_tracepoints("do_sys_poll") == ([] if arm64 else ["poll"])
    assert choose.stable_tracepoints("vfs_read") == []


@pytest.mark.kind("tp")
def test_trace_function_stable_uses_syscall_tracepoints(tmp_path):
    with pytracers.trace_function(TARGET, stable=True, pid=os.getpid()) as t:
        assert t.kind == "tp"
        assert "stable=True" in t.why and "stable interface" in t.why
        _access_two(tmp_path)
        evs = _my_events(t)
    assert [(e.name, e.ret) for e in evs] in (
        [("access", 0), ("access", -errno.ENOENT)],
        [("faccessat", 0), ("faccessat", -errno.ENOENT)])
    assert all(e.args.mode == os.R_OK for e in evs)
    with pytest.raises(TargetNotFoundError, match="stable tracepoint"):
        pytracers.trace_function("vfs_read", stable=True)
    with pytest.raises(BadArgumentError):
        pytracers.trace_function(TARGET, stable=True, kind="kprobe")


@pytest.mark.kind("fentry")
def test_trace_function_prefers_fentry(need, tmp_path):
    fentry = features.probe_one("fentry")
    with need("fentry"):
        if not fentry.supported:            # the chooser would fall back to kprobe
            raise NotSupportedError("fentry", fentry.reason)
        t = pytracers.trace_function(TARGET, pid=os.getpid())
    with t:
        assert t.kind == "fentry"
        assert t.why.startswith("fentry/fexit chosen first")
        _access_two(tmp_path)
        _check_function_events(_my_events(t))


@pytest.mark.kind("kprobe")
def test_trace_function_falls_back_to_kprobe_when_trampolines_refused(need, monkeypatch,
                                                                      tmp_path):
    real = choose.FunctionTracer

    def refuse_trampolines(name, kind="fentry", **kw):
        if kind == "fentry":
            raise NotSupportedError("fentry", "simulated: trampolines refused")
        return real(name, kind=kind, **kw)
    monkeypatch.setattr(choose, "FunctionTracer", refuse_trampolines)
    try:
        t = pytracers.trace_function(TARGET, pid=os.getpid())
    except NotSupportedError as e:
        # both refusals are named: ours, and the kernel's for kprobes
        assert "fentry: simulated: trampolines refused; kprobe: " in e.reason
        with need("kprobe"):
            raise NotSupportedError("kprobe", e.reason.split("kprobe: ", 1)[1]) from e
        raise
    with t:
        assert t.kind == "kprobe"
        assert "fentry was refused (simulated: trampolines refused)" in t.why
        _access_two(tmp_path)
        _check_function_events(_my_events(t))


@pytest.mark.kind("kprobe")
def test_trace_function_explicit_kind_has_no_fallback(need, tmp_path):
    try:
        t = pytracers.trace_function(TARGET, kind="kprobe", pid=os.getpid())
    except NotSupportedError as e:
        assert e.feature == "kprobe"         # only the kind asked for was tried
        with need("kprobe"):
            raise
        raise
    with t:
        assert t.kind == "kprobe" and t.why.startswith("kind='kprobe' requested")
        _access_two(tmp_path)
        _check_function_events(_my_events(t))


@pytest.mark.skipif(VM_KERNEL is not None, reason="kernel-independent (a pure-Python search of "
                    "the BTF's names) and ~20 s under TCG")
def test_trace_function_unknown_name_suggests():
    with pytest.raises(TargetNotFoundError) as ei:
        pytracers.trace_function("do_faccessatt")
    assert TARGET in ei.value.suggestions


def test_trace_function_bad_kind():
    with pytest.raises(BadArgumentError):
        pytracers.trace_function(TARGET, kind="tp_btf")
