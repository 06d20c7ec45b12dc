"""Function tracers (kprobe/kretprobe, fentry/fexit, kprobe_multi) and the
fmod_ret policy, on the test's own calls.  They skip on a kernel known to lack
the kind (naming what it lacks) and must pass in the VM kernels that have it.

The target is do_faccessat (access(2)), present from 5.10 to 7.x with the
same parameters, but ``long do_faccessat(...)`` on 5.10 and ``int`` on 7.x:
the tracer types the return value from the running kernel's BTF, so -ENOENT
reads as -2 either way.  (do_unlinkat, the issue's example, is gone in 7.x:
renamed filename_unlinkat.)
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import pytest

from pytracers.errors import BadArgumentError
from pytracers.tracers import FmodRetPolicy, FunctionTracer
from pytracers.tracers.function import signature

from conftest import VM_KERNEL

AT_FDCWD = -100
TARGET = "do_faccessat"


def _comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def _access_two(tmp_path):
    """access(R_OK) on a file we created, then on a missing one."""
    p = tmp_path / "there"
    p.write_bytes(b"")
    assert os.access(p, os.R_OK)
    assert not os.access(tmp_path / "never-existed", os.R_OK)


def _check_two_calls(evs, name=TARGET, latency=True):
    me = threading.get_native_id()
    mine = [e for e in evs if e.tid == me and not e.entry]
    assert len(mine) == 2, mine
    ok, missing = mine
    for ev in (ok, missing):
        assert (ev.pid, ev.tid, ev.comm, ev.name) == (os.getpid(), me, _comm(), name)
        assert ev.args._fields == ("dfd", "filename", "mode", "flags")
        assert (ev.args.dfd, ev.args.mode, ev.args.flags) == (AT_FDCWD, os.R_OK, 0)
        if latency:
            assert ev.latency_ns > 0
    assert ok.ret == 0
    assert missing.ret == -errno.ENOENT


@pytest.mark.kind("kretprobe")      # the return value and latency come from the kretprobe
def test_kprobe_kretprobe_do_faccessat(need, tmp_path):
    with need("kprobe"):
        t = FunctionTracer(TARGET, kind="kprobe", pid=os.getpid())
    with t:
        assert t.kind == "kprobe"
        _access_two(tmp_path)
        _check_two_calls(t.read(1.0) + t.read(0.1))
        assert t.lost == 0


@pytest.mark.kind("fentry")
def test_fentry_fexit_do_faccessat(need, tmp_path):
    with need("fentry"):
        t = FunctionTracer(TARGET, kind="fentry", pid=os.getpid())
    with t:
        assert t.kind == "fentry"
        _access_two(tmp_path)
        _check_two_calls(t.read(1.0) + t.read(0.1))


@pytest.mark.kind("fexit")
def test_fexit_alone_has_args_and_ret_but_no_latency(need, tmp_path):
    with need("fexit"):
        t = FunctionTracer(TARGET, kind="fentry", pid=os.getpid(), measure_latency=False)
    with t:
        assert list(t.object.programs) == ["fn_fexit"]
        _access_two(tmp_path)
        evs = [e for e in t.read(1.0) + t.read(0.1) if e.tid == threading.get_native_id()]
        _check_two_calls(evs, latency=False)
        assert [e.latency_ns for e in evs] == [None, None]


@pytest.mark.kind("kprobe")
def test_kprobe_entry_events(need, tmp_path):
    with need("kprobe"):
        t = FunctionTracer(TARGET, kind="kprobe", pid=os.getpid(), entry_events=True)
    with t:
        _access_two(tmp_path)
        evs = [e for e in t.read(1.0) + t.read(0.1) if e.tid == threading.get_native_id()]
    assert [e.entry for e in evs] == [True, False, True, False]
    assert evs[0].ret is None and evs[0].args.dfd == AT_FDCWD and evs[0].latency_ns is None


@pytest.mark.kind("kprobe_multi")
def test_kprobe_multi_glob(need, tmp_path):
    with need("kprobe_multi"):
        t = FunctionTracer("do_facces*", kind="kprobe_multi", pid=os.getpid())
    with t:
        assert t.kind == "kprobe_multi"
        _access_two(tmp_path)
        _check_two_calls(t.read(1.0) + t.read(0.1))


def test_function_tracer_arguments():
    with pytest.raises(BadArgumentError):
        FunctionTracer("do_*", kind="kprobe")
    with pytest.raises(BadArgumentError):
        FunctionTracer(TARGET, kind="uprobe")
    # (a misspelt name's suggestions: test_features.py, through trace_function)


def test_signature_from_kernel_btf():
    sig = signature(TARGET)
    assert sig is not None
    assert sig.params == ("dfd", "filename", "mode", "flags")
    assert sig.types[0] == "int" and sig.types[2] == "int"
    assert sig.ret_type in ("int", "long int")      # long on 5.10
    assert sig.ret_conv is not None and sig.ret_conv(0xFFFFFFFE if sig.ret_type == "int"
                                                     else 2**64 - 2) == -2
    assert sig.slots == 4
    # the example was renamed in 7.x; its parameters stayed
    unlink = signature("do_unlinkat") or signature("filename_unlinkat")
    assert unlink is not None and unlink.params == ("dfd", "name")


# ---------------------------------------------------------------- fmod_ret

CHILD = r"""
import os, sys
for line in sys.stdin:
    try:
        os.close(os.open(sys.argv[1], os.O_RDONLY))
        print("ok", flush=True)
    except OSError as e:
        print(os.strerror(e.errno) if e.errno != 1 else "EPERM", flush=True)
"""


def test_fmod_ret_policy_is_opt_in():
    with pytest.raises(BadArgumentError, match="enable=True"):
        FmodRetPolicy(pid=12345)
    with pytest.raises(BadArgumentError, match="enable=True"):
        FmodRetPolicy(pid=12345, enable=1)  # type: ignore[arg-type]
    with pytest.raises(BadArgumentError):
        FmodRetPolicy(pid=0, enable=True)
    with pytest.raises(BadArgumentError):
        FmodRetPolicy(pid=1, enable=True)
    with pytest.raises(BadArgumentError):
        FmodRetPolicy(pid=os.getpid(), enable=True)
    with pytest.raises(TypeError):
        FmodRetPolicy(enable=True)  # type: ignore[call-arg]


@pytest.mark.kind("fmod_ret")
def test_fmod_ret_denies_open_for_our_child_only(need, tmp_path):
    f = tmp_path / "guarded"
    f.write_text("secret")
    child = subprocess.Popen([sys.executable, "-S", "-c", CHILD, str(f)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None

    def try_open() -> str:
        child.stdin.write("go\n")
        child.stdin.flush()
        return child.stdout.readline().strip()

    try:
        assert try_open() == "ok"
        with need("fmod_ret"):
            policy = FmodRetPolicy("security_file_open", pid=child.pid, errno=errno.EPERM,
                                   enable=True)
        with policy:
            assert policy.kind == "fmod_ret"
            assert try_open() == "EPERM"
            # everyone else is untouched
            with open(f) as mine:
                assert mine.read() == "secret"
            evs = policy.read(1.0)
            assert [(e.pid, e.retval) for e in evs] == [(child.pid, -errno.EPERM)]
            assert policy.hits == 1
        assert try_open() == "ok"          # link destroyed: the child opens again
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()


@pytest.mark.kind("fentry")
def test_fentry_on_a_function_with_an_argument_old_verifiers_hide(need, tmp_path):
    """vfs_read(struct file *, char *buf, size_t count, loff_t *pos): 5.10's
    verifier will not let a trampoline program read an int pointer (pos); the
    tracer skips that slot and reports it as None instead of failing."""
    f = tmp_path / "data"
    f.write_bytes(b"0123456789")
    with need("fentry"):
        t = FunctionTracer("vfs_read", kind="fentry", pid=os.getpid())
    with t:
        assert set(t.skipped_args) <= {"pos"}
        if VM_KERNEL == "5.10":
            assert t.skipped_args == ["pos"]     # the retry path, exercised
        fd = os.open(f, os.O_RDONLY)
        try:
            assert os.read(fd, 7) == b"0123456"
        finally:
            os.close(fd)
        me = threading.get_native_id()
        evs = [e for e in t.read(1.0) + t.read(0.1) if e.tid == me and e.args.count == 7]
    assert len(evs) == 1
    ev = evs[0]
    assert ev.ret == 7
    for name in ("buf", "pos"):
        if name in t.skipped_args:
            assert getattr(ev.args, name) is None
        else:
            assert getattr(ev.args, name) != 0
