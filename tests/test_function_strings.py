"""`char *` arguments of kernel functions read as strings (``string_arg``),
through kprobes and trampolines, on the test's own calls.

* a user pointer: do_faccessat's ``const char __user *filename`` (access(2))
  arrives as the path the test passed;
* a kernel pointer: __set_task_comm's ``const char *buf`` (prctl(PR_SET_NAME)
  copies the name into a kernel buffer first) arrives as the thread's new name.

Both functions are called out of line with these parameters from 5.10 to 7.x.
The tests skip only on a kernel known to lack the kind (this host: no kprobes,
trampolines refused) and must pass in the VM kernels that have it.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from pytracers import kinds
from pytracers.errors import BadArgumentError
from pytracers.tracers import FunctionTracer

PR_SET_NAME = 15
KERNEL_KINDS = [kinds.KPROBE, kinds.FENTRY]


@pytest.fixture
def short_dir():
    """A directory with a short path (pytest's tmp_path is longer than the
    63 bytes a string argument keeps)."""
    d = tempfile.mkdtemp(prefix="pts", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _access(d):
    there = os.path.join(d, "there")
    open(there, "wb").close()
    missing = os.path.join(d, "m" * 80)          # longer than the 63 bytes kept
    assert len(there) < 63
    assert os.access(there, os.R_OK)
    assert not os.access(missing, os.R_OK)
    return there, missing


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_a_user_pointer_argument_as_a_string(need, short_dir, kind):
    with need(kind):
        t = FunctionTracer("do_faccessat", kind=kind, pid=os.getpid(), string_arg="filename")
    with t:
        there, missing = _access(short_dir)
        me = threading.get_native_id()
        evs = [e for e in t.read(1.0) + t.read(0.1) if e.tid == me]
    assert [e.args.filename for e in evs] == [there, missing[:63]]
    assert [e.ret for e in evs] == [0, -2]
    assert [e.args.mode for e in evs] == [os.R_OK, os.R_OK]
    assert "str" not in t.event_dict(evs[0])


def test_kprobe_multi_reads_a_string_by_index(need, short_dir):
    """kprobe_multi over a glob: the string argument is given by index (the
    functions' prototypes differ); do_faccessat's filename arrives."""
    with need(kinds.KPROBE_MULTI):
        t = FunctionTracer("do_facces*", kind=kinds.KPROBE_MULTI, pid=os.getpid(),
                           string_arg=1)
    with t:
        there, missing = _access(short_dir)
        me = threading.get_native_id()
        evs = [e for e in t.read(1.0) + t.read(0.1)
               if e.tid == me and e.name == "do_faccessat"]
    assert [e.args.filename for e in evs] == [there, missing[:63]]


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_a_kernel_pointer_argument_as_a_string(need, kind):
    with need(kind):
        t = FunctionTracer("__set_task_comm", kind=kind, pid=os.getpid(), string_arg=1)
    libc = ctypes.CDLL(None, use_errno=True)
    tids = []

    def rename() -> None:
        tids.append(threading.get_native_id())
        assert libc.prctl(PR_SET_NAME, b"pt-str-kernel", 0, 0, 0) == 0

    with t:
        th = threading.Thread(target=rename)
        th.start()
        th.join()
        evs = [e for e in t.read(1.0) + t.read(0.1) if e.tid == tids[0]]
    assert [e.args[1] for e in evs] == ["pt-str-kernel"]       # buf
    assert evs[0].args[2] in (False, 0)                         # exec: not from exec()


def test_string_arg_is_checked_against_the_prototype():
    """Names and types come from the kernel's BTF: no such argument, an
    integer argument, an index past the arity are refused before loading."""
    with pytest.raises(BadArgumentError, match="no argument 'path'"):
        FunctionTracer("do_faccessat", kind=kinds.KPROBE, string_arg="path")
    with pytest.raises(BadArgumentError, match="'int', not a pointer"):
        FunctionTracer("do_faccessat", kind=kinds.KPROBE, string_arg="mode")
    with pytest.raises(BadArgumentError, match="takes 4 argument"):
        FunctionTracer("do_faccessat", kind=kinds.KPROBE, string_arg=5)
    with pytest.raises(BadArgumentError, match="as an index"):
        FunctionTracer("do_facces*", kind=kinds.KPROBE_MULTI, string_arg="filename")


def test_the_record_reads_the_string_in_place_of_the_address():
    """Without attaching (this host may lack kprobes): the kprobe object's
    func_event carries a 64-byte ``str`` and the record class puts it in the
    argument's place, the other arguments typed as before."""
    from pytracers._shipped import object_path
    from pytracers.btf import Btf
    from pytracers.kernel.symbols import signature
    from pytracers.tracers._func_records import (FN_HAS_ARGS, FN_HAS_RET, FN_RETURN,
                                                 function_record_class, signature_shape)
    sig = signature("do_faccessat")
    assert sig is not None
    layout = Btf.from_elf(object_path(kinds.KPROBE)).struct_layout("func_event")
    base = layout.record_class()
    assert "str" in base._fields
    cls = function_record_class(base, lambda ip: "do_faccessat",
                                lambda n: signature_shape(sig), string_arg=1)
    values = dict.fromkeys(base._fields, 0)
    values.update(comm="x", args=(2**64 - 100, 0xffff888000001000, os.R_OK, 0, 0, 0), ret=0,
                  flags=FN_RETURN | FN_HAS_ARGS | FN_HAS_RET, str="/etc/hostname")
    ev = cls(values[f] for f in base._fields)
    assert ev.args == (-100, "/etc/hostname", os.R_OK, 0)
    assert ev.args._fields == ("dfd", "filename", "mode", "flags")


def test_cli_trace_kernel_function_with_a_string_argument(need, short_dir):
    """`pytracers trace kprobe:do_faccessat --pid P --string-arg filename
    --json`: the child's access(2) path arrives as the argument's value."""
    with need(kinds.KPROBE):
        FunctionTracer("do_faccessat", kind=kinds.KPROBE, pid=os.getpid()).close()
    there = os.path.join(short_dir, "cli-there")
    open(there, "wb").close()
    child = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.readline(); "
                              f"os.access({str(there)!r}, os.R_OK)"],
                             stdin=subprocess.PIPE, text=True)
    cli = subprocess.Popen([sys.executable, "-m", "pytracers", "trace", "kprobe:do_faccessat",
                            "--pid", str(child.pid), "--string-arg", "filename", "--json",
                            "-d", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = cli.stderr.readline()
        while line and "Ctrl-C" not in line:
            line = cli.stderr.readline()
        assert line, cli.stderr.read()
        child.communicate("go\n", timeout=60)
        time.sleep(0.5)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=60)
    finally:
        for p in (child, cli):
            if p.poll() is None:
                p.kill()
                p.communicate()
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["args"]["filename"] for r in rows if r["args"]["filename"] == str(there)] \
        == [str(there)], (out, err)
    mine = [r for r in rows if r["args"]["filename"] == str(there)][0]
    assert (mine["pid"], mine["ret"], mine["args"]["mode"]) == (child.pid, 0, os.R_OK)


def test_trace_function_passes_string_arg_and_refuses_it_with_stable():
    import pytracers
    with pytest.raises(BadArgumentError, match="stable=True"):
        pytracers.trace_function("do_faccessat", stable=True, string_arg="filename")
    with pytest.raises(BadArgumentError, match="not a pointer"):
        pytracers.trace_function("do_faccessat", string_arg="mode")


def test_the_kprobe_object_with_a_string_argument_passes_the_verifier():
    """Loading needs no kprobe PMU (uprobes run the same program type): the
    verifier accepts the string read on every kernel that runs the suite,
    this host included."""
    import pytracers
    from pytracers._shipped import object_path
    o = pytracers.open(object_path(kinds.KPROBE))
    o.only("fn_kprobe", "fn_kretprobe")
    o.config["cfg_str_arg"] = 2
    with o.load() as obj:
        assert sorted(obj.programs) == ["fn_kprobe", "fn_kretprobe"]
