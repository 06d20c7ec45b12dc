"""uprobes and uretprobes attached for real: on libc and on a function of a
test program built here, with exact call counts, arguments and return values
from a child process the test controls; and the edge cases a user meets (the
process exits, the binary is replaced, a library loaded later, a pid that
does not exist, a function defined elsewhere)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import pytracers
from pytracers import features, kinds
from pytracers.errors import BadArgumentError, NotSupportedError, TargetNotFoundError
from pytracers.tracers.user_function import UserFunctionTracer
from pytracers.user.targets import resolve_binary
from user_programs import Child, build, events_of

N = 5
pytestmark = [pytest.mark.kind("uprobe")]


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("uprobe-progs"))
    return {"ufunc": build(d, "ufunc.c", "ufunc", "-ldl"),
            "nopie": build(d, "ufunc.c", "ufunc-nopie", "-no-pie", "-fno-PIE", "-ldl"),
            "late": build(d, "ulate.c", "libulate.so", "-shared", "-fPIC"),
            "dir": d}


def test_the_prober_finds_uprobes(need):
    """features.probe() attaches a uprobe and a uretprobe for real."""
    report = features.probe()
    for k in (kinds.UPROBE, kinds.URETPROBE):
        with need(k):
            f = report[k]
            if not f.supported and f.conclusive:
                raise NotSupportedError(k, f.reason)
            assert f.supported, f.reason
            assert "getpid" in f.reason


def test_uprobe_pair_on_a_test_program_function(progs, need):
    """pt_add(i, -1000*i, 200+i, "hello") called N times: N records with the
    DWARF-typed arguments and the exact return values; the record's repr has
    no padding or flags."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child, \
            pytracers.trace_user_function(progs["ufunc"], "pt_add", pid=child.pid) as t:
        assert "uprobe" in t.why and "pt_add" in t.why
        assert child.go() == "done\n"
        evs = events_of(t, want=N)
        child.finish()
    assert len(evs) == N
    for i, ev in enumerate(sorted(evs, key=lambda e: e.ts_ns)):
        assert ev.name == "pt_add" and ev.pid == child.pid
        assert (ev.args.a, ev.args.b, ev.args.c) == (i, -1000 * i, (200 + i) & 0xFF)
        assert ev.args.s > 0                          # a pointer, shown as its address
        assert ev.ret == i - 1000 * i + ((200 + i) & 0xFF) + ord("h")
        assert ev.latency_ns is not None and ev.latency_ns > 0
        r = repr(ev)
        assert "_pad" not in r and "flags" not in r and "args=pt_add_args(a=" in r


def test_a_char_pointer_read_as_a_string(progs, need):
    """string_arg="s": pt_add's const char * arrives as the string it points
    to ("hello"), the other arguments unchanged; kind="uprobe" reads it at
    entry the same way."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child, \
            UserFunctionTracer(progs["ufunc"], "pt_add", pid=child.pid, string_arg="s") as t, \
            UserFunctionTracer(progs["ufunc"], "pt_add", pid=child.pid, string_arg=3,
                               kind="uprobe") as te:
        assert child.go() == "done\n"
        evs = events_of(t, want=N)
        entries = events_of(te, want=N)
        child.finish()
    assert [e.args.s for e in evs] == ["hello"] * N
    assert [e.args.s for e in entries] == ["hello"] * N
    assert sorted(e.args.a for e in evs) == list(range(N))
    assert "str" not in t.event_dict(evs[0])
    with pytest.raises(BadArgumentError, match="no argument 'nope'"):
        UserFunctionTracer(progs["ufunc"], "pt_add", string_arg="nope")


def test_kernel_function_events_have_the_same_shape():
    """The record class of kernel function events, built over the same
    func_event layout from a kernel BTF prototype: vfs_fsync_range has four
    arguments (not six), its int return is sign-converted, and repr shows no
    padding or flags -- without attaching (this host may lack kprobes)."""
    from pytracers._shipped import object_path
    from pytracers.kernel.symbols import signature
    from pytracers.tracers._func_records import (FN_HAS_ARGS, FN_HAS_RET, FN_RETURN,
                                                 function_record_class, signature_shape)
    sig = signature("vfs_fsync_range")
    if sig is None:
        pytest.skip("no BTF for vfs_fsync_range on this kernel")
    from pytracers.btf import Btf
    base = Btf.from_elf(object_path("kprobe")).struct_layout("func_event").record_class()
    cls = function_record_class(base, lambda ip: "vfs_fsync_range",
                                lambda name: signature_shape(sig))
    values = dict.fromkeys(base._fields, 0)
    values.update({"comm": "x", "args": (0xFFFF888000001000, 5, 2 ** 64 - 1, 1, 77, 88),
                   "ret": (2 ** 32 - 5), "latency_ns": 7,
                   "flags": FN_RETURN | FN_HAS_ARGS | FN_HAS_RET})
    ev = cls(values[f] for f in base._fields)
    assert ev.args._fields == sig.params and len(ev.args) == 4
    assert ev.args[2] == -1                    # loff_t end: signed 64-bit
    assert ev.ret == -5                        # int
    assert ev.latency_ns is None               # FN_HAS_LATENCY not set
    r = repr(ev)
    assert "_hdr_pad" not in r and "_pad" not in r and "flags" not in r
    assert "name='vfs_fsync_range'" in r and "ret=-5" in r


def test_uprobe_pair_on_libc(progs, need):
    """libc's labs, called through a pointer N times with -7i-1: N records,
    ret its absolute value; the argument typed by DWARF where libc's debug
    file is installed (``long int i``, found through .debug_aranges by the
    symbol's address), else arg0, the raw register."""
    from pytracers.user.symbols import symbol_table
    typed = symbol_table(resolve_binary("libc")).debug_file is not None
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child, \
            pytracers.trace_user_function("libc", "labs", pid=child.pid) as t:
        assert resolve_binary("libc") in t.why
        assert child.go() == "done\n"
        evs = events_of(t, want=N)
        child.finish()
    assert len(evs) == N
    for i, ev in enumerate(sorted(evs, key=lambda e: e.ts_ns)):
        if typed:
            assert ev.args._fields == ("i",) and ev.args.i == -7 * i - 1
        else:
            assert ev.args.arg0 == (-7 * i - 1) & 0xFFFFFFFFFFFFFFFF   # no DWARF: raw
        assert ev.ret == 7 * i + 1


def test_entry_only_and_return_only(progs, need):
    """kind="uprobe": one entry record per call, arguments and no ret;
    kind="uretprobe": return values and no arguments."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child, \
            UserFunctionTracer(progs["ufunc"], "pt_neg", pid=child.pid, kind="uprobe") as te, \
            UserFunctionTracer(progs["ufunc"], "pt_neg", pid=child.pid,
                               kind="uretprobe") as tr:
        assert child.go() == "done\n"
        entries = events_of(te, want=N)
        returns = events_of(tr, want=N)
        child.finish()
    assert [e.args.x for e in entries] == [i - 2 for i in range(N)]
    assert all(e.entry and e.ret is None and e.latency_ns is None for e in entries)
    assert [e.ret for e in returns] == [2 - i for i in range(N)]
    assert all(e.args is None for e in returns)


def test_non_pie_program(progs, need):
    """A non-PIE executable: the file offset is not the address, and the probe
    still fires exactly N times."""
    with need(kinds.UPROBE), Child([progs["nopie"], "calls", str(N)]) as child, \
            pytracers.trace_user_function(progs["nopie"], "pt_neg", pid=child.pid) as t:
        assert child.go() == "done\n"
        evs = events_of(t, want=N)
        child.finish()
    assert sorted(e.ret for e in evs) == sorted(2 - i for i in range(N))


def test_the_traced_process_exits(progs, need):
    """With pid=, events() ends by itself once the process has exited and its
    records are read (no timeout given); the count is exact and closing
    detaches cleanly (the leak check runs after)."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child:
        t = pytracers.trace_user_function(progs["ufunc"], "pt_neg", pid=child.pid)
        try:
            child.go()
            assert child.finish() == 0
            evs = list(t.events())           # returns: the process is gone
            assert t.process_exited
            assert len(evs) == N and t.delivered == N
        finally:
            t.close()


def test_binary_replaced_on_disk(progs, need, tmp_path):
    """A uprobe stays on the inode it was set on: after the file is replaced
    the tracer says so, a process started from the new file is not traced,
    and one still running the old file is.  Attached after the replacement
    with that process's pid, the old file is reached through /proc/PID/exe."""
    path = str(tmp_path / "ufunc")
    shutil.copy(progs["ufunc"], path)
    with need(kinds.UPROBE), Child([path, "calls", str(N)]) as old, \
            pytracers.trace_user_function(path, "pt_neg") as t:
        assert not t.replaced_on_disk
        shutil.copy(progs["ufunc"], path + ".new")
        os.replace(path + ".new", path)
        assert t.replaced_on_disk
        with pytracers.trace_user_function(path, "pt_neg", pid=old.pid) as t_old:
            assert t_old.binary == f"/proc/{old.pid}/exe"
            with Child([path, "calls", str(N)]) as new:
                assert new.go() == "done\n"
                new.finish()
            assert old.go() == "done\n"
            old.finish()
            evs = events_of(t, timeout=2.0)
            evs_old = events_of(t_old, timeout=2.0)
    assert {e.pid for e in evs} == {old.pid} and len(evs) == N
    assert len(evs_old) == N


def test_a_library_loaded_after_attaching(progs, need):
    """The process has not loaded the library yet: the probe is set on the
    file for that process and fires once it dlopens it and calls pt_late."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "late", progs["late"], str(N)]) as child:
        from pytracers.user.targets import mapped_files
        assert progs["late"] not in mapped_files(child.pid)
        with pytracers.trace_user_function(progs["late"], "pt_late", pid=child.pid) as t:
            assert child.go() == "done\n"
            evs = events_of(t, want=N)
            child.finish()
    assert sorted(e.ret for e in evs) == [3 * i for i in range(N)]
    assert sorted(e.args.x for e in evs) == list(range(N))


def test_a_process_in_another_root(progs, need, tmp_path):
    """A process chrooted into its own root (as in a container): its
    "/ufunc" is found through /proc/PID/root, and the probe fires for it
    exactly N times."""
    root = tmp_path / "root"
    root.mkdir()
    build(str(root), "ufunc.c", "ufunc", "-static", "-ldl")
    with need(kinds.UPROBE), Child(["/ufunc", "calls", str(N)],
                                   preexec_fn=lambda: os.chroot(str(root))) as child:
        path = resolve_binary("/ufunc", pid=child.pid)
        assert path == f"/proc/{child.pid}/root/ufunc"
        # maps name it from our root (ROOT/ufunc); the openable path is the
        # process's own view, checked by inode
        from pytracers.user.targets import mapped_files
        assert f"{root}/ufunc" in mapped_files(child.pid)
        assert path in mapped_files(child.pid, openable=True)
        with pytracers.trace_user_function("/ufunc", "pt_neg", pid=child.pid) as t:
            assert child.go() == "done\n"
            evs = events_of(t, want=N)
            child.finish()
    assert sorted(e.args.x for e in evs) == [i - 2 for i in range(N)]


def test_a_pid_that_does_not_exist(progs):
    """TargetNotFoundError naming the process, before anything is loaded."""
    with pytest.raises(TargetNotFoundError, match="process") as ei:
        pytracers.trace_user_function("libc", "labs", pid=2 ** 22 + 4321)
    assert ei.value.what == "process"


def test_a_function_defined_in_a_library(progs):
    """labs is called by the program but lives in libc: the error says where."""
    with pytest.raises(TargetNotFoundError, match="imports it") as ei:
        pytracers.trace_user_function(progs["ufunc"], "labs")
    assert resolve_binary("libc") in str(ei.value)
    with pytest.raises(TargetNotFoundError) as ei:
        pytracers.trace_user_function(progs["ufunc"], "pt_ad")
    assert "pt_add" in ei.value.suggestions


def test_program_attach_by_spec_and_kind_checks(progs, need):
    """Program.attach("BINARY:SYMBOL") on a loaded uprobe program; a kprobe
    program refuses attach_uprobe."""
    from pytracers._shipped import object_path
    with need(kinds.UPROBE), pytracers.open(object_path("uprobe")) as o:
        o.only("ufn_entry")
        with o.load() as obj:
            prog = obj.programs["ufn_entry"]
            assert prog.kind == kinds.UPROBE
            link = prog.attach(f"{progs['ufunc']}:pt_add")
            assert link.kind == kinds.UPROBE and link.offset > 0
            with pytest.raises(BadArgumentError, match="already attached"):
                prog.attach(f"{progs['ufunc']}:pt_add")
            link.close()
            with pytest.raises(BadArgumentError, match="BINARY:SYMBOL"):
                prog.attach("pt_add")


def test_cli_trace_uprobe_until_the_process_exits(progs, need):
    """`pytracers trace uprobe:PATH:pt_add --pid P --string-arg s --json`: one
    JSON line per call with args (the char * as its string) and ret; the
    command ends by itself when P exits and reports the count."""
    with need(kinds.UPROBE), Child([progs["ufunc"], "calls", str(N)]) as child:
        cli = subprocess.Popen([sys.executable, "-m", "pytracers", "trace",
                                f"uprobe:{progs['ufunc']}:pt_add", "--pid", str(child.pid),
                                "--string-arg", "s", "--json", "-d", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = cli.stderr.readline()
            while line and "Ctrl-C" not in line:
                line = cli.stderr.readline()
            assert "uprobe" in line, line
            assert child.go() == "done\n"
            child.finish()
            out, err = cli.communicate(timeout=20)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.communicate()
    assert cli.returncode == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["args"]["a"] for r in rows] == list(range(N))
    assert [r["args"]["s"] for r in rows] == ["hello"] * N
    assert [r["ret"] for r in rows] == [i - 1000 * i + ((200 + i) & 0xFF) + ord("h")
                                        for i in range(N)]
    assert f"{N} events seen" in err and f"process {child.pid} exited" in err


def test_cli_list_symbols(progs):
    """`pytracers list symbols PATH 'pt_*' --json`: the three functions with
    their offsets; an unknown glob exits 3 (not found); --pid resolves the
    library through that process."""
    res = subprocess.run([sys.executable, "-m", "pytracers", "list", "symbols", progs["ufunc"],
                          "pt_*", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(r["name"] for r in rows) == ["pt_add", "pt_loop", "pt_neg"]
    assert all(r["offset"] > 0 and r["table"] == ".symtab" for r in rows)
    res = subprocess.run([sys.executable, "-m", "pytracers", "list", "symbols", "libc",
                          "nosuchfunction*"], capture_output=True, text=True)
    assert res.returncode == 3 and "no function" in res.stderr
    res = subprocess.run([sys.executable, "-m", "pytracers", "list", "symbols", "libc",
                          "getpid", "--pid", str(os.getpid()), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[0])
    assert row["binary"] == resolve_binary("libc", pid=os.getpid()) and row["name"] == "getpid"
