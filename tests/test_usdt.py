"""USDT probes and the Python tracer, attached for real.

Targets: Debian's /usr/bin/python3.11 (CPython built with --with-dtrace: its
probes are guarded by semaphores), run as a child process -- the venv's own
interpreter has no USDT notes -- and a program built here with gcc and
<sys/sdt.h> (systemtap-sdt-dev), whose probe has a semaphore and arguments of
every size and signedness plus a string.  Each child waits on stdin until the
probes are attached, so every event it causes is expected exactly.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, List

import pytest

from pytracers import features, kinds
from pytracers.choose import trace_python, trace_usdt, usdt_for_function
from pytracers.errors import BadArgumentError, NotSupportedError, TargetNotFoundError
from pytracers.kernel.host import kernel_version
from pytracers.user.usdt import find_probe, parse_args, read_probes

from conftest import VM_KERNEL

PY = "/usr/bin/python3.11"
TIMEOUT = 60.0 if VM_KERNEL else 10.0
CLI = [sys.executable, "-m", "pytracers"]

needs_python = pytest.mark.skipif(
    not os.path.exists(PY) or not read_probes(PY),
    reason=f"{PY} (Debian's CPython with USDT probes) is not installed here")

C_SOURCE = r"""
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#include <stdio.h>

unsigned short pt_test_hit_semaphore __attribute__((section(".probes")));
unsigned short pt_test_plain_semaphore __attribute__((section(".probes")));

int main(void)
{
	char line[16], name[32];

	printf("ready %u\n", pt_test_hit_semaphore);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	for (int i = 1; i <= 3; i++) {
		long long big = -1000000000000LL * i;
		unsigned char small = 250 + i;
		short neg = -i;

		snprintf(name, sizeof(name), "call-%d", i);
		if (__builtin_expect(pt_test_hit_semaphore != 0, 0))
			DTRACE_PROBE5(pt_test, hit, i, big, small, neg, name);
		DTRACE_PROBE1(pt_test, plain, i * 7);
	}
	printf("done %u\n", pt_test_hit_semaphore);
	fflush(stdout);
	return 0;
}
"""


@pytest.fixture(scope="module")
def sdt_binary(tmp_path_factory: Any) -> str:
    """A PIE program with two USDT probes (pt_test:hit guarded by its semaphore)."""
    probe = subprocess.run(["gcc", "-E", "-x", "c", "-", "-o", os.devnull],
                           input=b"#include <sys/sdt.h>\n", capture_output=True) \
        if shutil.which("gcc") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("building the test program needs gcc and <sys/sdt.h> "
                    "(apt-get install gcc systemtap-sdt-dev)")
    d = tmp_path_factory.mktemp("sdt")
    src, out = d / "sdt_test.c", d / "sdt_test"
    src.write_text(C_SOURCE)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)


class Child:
    """A process that prints a line, waits for "go" on stdin, then runs."""

    def __init__(self, argv: List[str]) -> None:
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        self.first = self.p.stdout.readline().strip()
        self.pid = self.p.pid

    def go(self) -> List[str]:
        out, _ = self.p.communicate("go\n", timeout=TIMEOUT)
        assert self.p.returncode == 0, out
        return out.splitlines()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def python_child(body: str) -> Child:
    """python3.11 running ``body`` after "go"; exits with os._exit (no
    interpreter shutdown: its collections and imports are not the test's)."""
    code = ("import gc, os, sys\ngc.disable()\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            + body + "\nsys.stdout.flush()\nos._exit(0)\n")
    return Child([PY, "-c", code])


def collect(t: Any, done: Callable[[List[Any]], bool]) -> List[Any]:
    got: List[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not done(got):
        got.extend(t.read(0.2))
    return got


# ---- the notes ----------------------------------------------------------------------

def _readelf_notes(path: str) -> List[tuple]:
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True,
                         check=True).stdout
    notes = []
    for m in re.finditer(r"Provider: (\S+)\s+Name: (\S+)\s+Location: (0x[0-9a-f]+), Base: "
                         r"(0x[0-9a-f]+), Semaphore: (0x[0-9a-f]+)\s+Arguments: ([^\n]*)", out):
        prov, name, loc, base, sem, args = m.groups()
        notes.append((prov, name, int(loc, 16), int(base, 16), int(sem, 16), args.strip()))
    return notes


@needs_python
def test_notes_of_python_match_readelf():
    """Every stapsdt note of python3.11, as readelf -n prints it: provider,
    name, address, base, semaphore and argument specs."""
    ours = [(p.provider, p.name, p.pc, p.base, p.semaphore, p.arg_specs)
            for p in read_probes(PY)]
    theirs = _readelf_notes(PY)
    assert ours == theirs and len(ours) >= 8
    gc_start = find_probe(PY, "python:gc__start")
    assert [(a.size, a.signed) for a in gc_start.args] == [(4, True)]
    assert gc_start.address == gc_start.pc          # not prelinked: .stapsdt.base == base


def test_notes_of_a_built_program_match_readelf(sdt_binary):
    ours = [(p.provider, p.name, p.pc, p.base, p.semaphore, p.arg_specs)
            for p in read_probes(sdt_binary)]
    assert ours == _readelf_notes(sdt_binary)
    hit = find_probe(sdt_binary, "pt_test:hit")
    assert hit.semaphore != 0
    assert [(a.size, a.signed) for a in hit.args] == [(4, True), (8, True), (1, False),
                                                      (2, True), (8, False)]


def test_argument_specs_parse_size_sign_and_location():
    a, b, c, d = parse_args("-4@%edi 8@-16(%rbp) 2@$5 %rax")
    assert (a.size, a.signed, a.location) == (4, True, "%edi")
    assert (b.size, b.signed, b.location) == (8, False, "-16(%rbp)")
    assert (c.size, c.signed, c.location) == (2, False, "$5")
    assert (d.size, d.signed, d.location) == (8, False, "%rax")
    assert a.value(2**64 - 5) == -5 and c.value(0x1_0005) == 5


def test_arm64_argument_specs_keep_their_memory_operands_whole():
    """arm64's notes write a memory operand with a space (bookworm's arm64
    python3.11: gc__start's one argument is ``-4@[sp, 152]``)."""
    args = parse_args("-4@[sp, 152] 8@x1 -2@[x19] 8@[x2, -8] 4@5")
    assert [(a.size, a.signed, a.location) for a in args] == [
        (4, True, "[sp, 152]"), (8, False, "x1"), (2, True, "[x19]"), (8, False, "[x2, -8]"),
        (4, False, "5")]


@needs_python
def test_unknown_probe_names_the_close_ones():
    with pytest.raises(TargetNotFoundError) as ei:
        find_probe(PY, "python:gc_start")
    assert ei.value.suggestions[0] == "python:gc__start"
    with pytest.raises(TargetNotFoundError, match="has no USDT probes"):
        find_probe("/bin/true", "x:y")


@pytest.mark.kernel_independent
def test_an_interpreter_without_usdt_probes_is_said_so():
    """The venv's interpreter (not Debian's) has no notes: the Python tracer
    refuses it by name instead of attaching nothing.  (Read from the ELF file,
    before any attach: the host checks it; an arm64 guest's interpreter is
    Debian's, which has the notes.)"""
    exe = os.path.realpath(sys.executable)
    if read_probes(exe):
        pytest.skip(f"{exe} has USDT probes")
    with pytest.raises(TargetNotFoundError, match="this interpreter has no USDT probes"):
        trace_python(exe)


@needs_python
def test_usdt_is_preferred_where_the_binary_has_a_probe_of_that_name():
    assert usdt_for_function(PY, "gc__start") == "python:gc__start"
    assert usdt_for_function(PY, "python:import__find__load__start") == \
        "python:import__find__load__start"
    assert usdt_for_function(PY, "PyObject_Malloc") is None


# ---- attached for real ----------------------------------------------------------------

@needs_python
def test_feature_prober_attaches_usdt(need):
    with need(kinds.USDT):
        f = features.probe_one(kinds.USDT, refresh=True)
        if not f.supported and f.conclusive:
            raise NotSupportedError(kinds.USDT, f.reason)
    assert f.supported, f
    assert "python:gc__start" in f.reason


@needs_python
def test_import_probe_delivers_the_module_name(need):
    """import__find__load__start in one process: the module the script
    imports, exactly once, read as a string from the probe's argument."""
    child = python_child("import colorsys")
    try:
        with need(kinds.USDT):
            t = trace_usdt(PY, "python:import__find__load__start", pid=child.pid, strings=[0])
        with t:
            assert "stable" in t.why
            child.go()
            got = collect(t, lambda evs: any(e.args == ("colorsys",) for e in evs))
        names = [e.args[0] for e in got]
        assert names.count("colorsys") == 1, names
        assert {e.pid for e in got} == {child.pid}
        assert all(e.provider == "python" and e.name == "import__find__load__start"
                   for e in got)
    finally:
        child.kill()


@needs_python
def test_python_tracer_pairs_gc_and_imports(need):
    """gc__start/gc__done paired: the generation of each gc.collect(N), in
    order, and the 100 reference cycles made before the last one collected;
    an import with its load time."""
    child = python_child(
        "gc.collect(0); gc.collect(2); gc.collect(1)\n"
        "for i in range(100):\n    x = []; x.append(x)\ndel x\n"
        "gc.collect(2)\nimport colorsys")
    try:
        with need(kinds.USDT):
            t = trace_python(pid=child.pid)
        with t:
            assert os.path.realpath(t.path) == os.path.realpath(PY)
            child.go()
            got = collect(t, lambda evs: any(type(e).__name__ == "PyImport"
                                             and e.module == "colorsys" for e in evs))
        gcs = [e for e in got if type(e).__name__ == "PyGC"]
        assert [g.generation for g in gcs] == [0, 2, 1, 2], gcs
        assert gcs[-1].collected == 100
        assert all(g.duration_ns and g.duration_ns > 0 for g in gcs)
        imp = [e for e in got if type(e).__name__ == "PyImport" and e.module == "colorsys"]
        assert len(imp) == 1 and imp[0].found is True and imp[0].duration_ns > 0
        assert t.event_dict(imp[0])["event"] == "PyImport"
    finally:
        child.kill()


@needs_python
def test_function_returns_fire_for_inlined_calls_and_entries_do_not(need):
    """The measurement t.why reports: f called 7 times from Python code gives
    7 function__return events and no function__entry for f (CPython 3.11)."""
    child = python_child("def f(x):\n    return x + 1\nfor i in range(7):\n    f(i)\n"
                         "print('end')")
    try:
        with need(kinds.USDT):
            t = trace_python(pid=child.pid, functions=True)
        with t:
            assert "function__entry does not fire" in t.why
            child.go()
            got = collect(t, lambda evs: sum(1 for e in evs if type(e).__name__ == "PyCall"
                                             and e.function == "f") >= 7)
        calls = [(e.phase, e.line) for e in got
                 if type(e).__name__ == "PyCall" and e.function == "f"]
        assert calls == [("return", 6)] * 7, calls     # line 6: "return x + 1"
        assert all(e.file == "<string>" for e in got
                   if type(e).__name__ == "PyCall" and e.function == "f")
    finally:
        child.kill()


def test_own_probe_with_semaphore_exact_arguments(need, sdt_binary):
    """A probe guarded by its semaphore fires only while attached (libbpf
    raises the semaphore through the uprobe's reference counter); every
    argument arrives with its size and sign, the string read as asked."""
    child = Child([sdt_binary])
    try:
        assert child.first == "ready 0"
        with need(kinds.USDT):
            t = trace_usdt(sdt_binary, ["pt_test:hit", "pt_test:plain"], pid=child.pid,
                           strings={"pt_test:hit": [4]})
        with t:
            out = child.go()
            got = collect(t, lambda evs: len(evs) >= 6)
            assert t.lost == 0
        assert out == ["done 1"]              # the semaphore, while attached
        hits = [e.args for e in got if e.name == "hit"]
        assert hits == [(i, -1000000000000 * i, 250 + i, -i, f"call-{i}") for i in (1, 2, 3)]
        assert [e.args for e in got if e.name == "plain"] == [(7,), (14,), (21,)]
        assert len(got) == 6
    finally:
        child.kill()


def test_system_wide_attach_to_a_pie_binary(need, sdt_binary):
    """Without pid= libbpf needs BPF cookies (5.15) for a position-independent
    binary; before that, NotSupportedError says so and names pid=."""
    if kernel_version() < (5, 15):
        with pytest.raises(NotSupportedError) as ei:
            trace_usdt(sdt_binary, "pt_test:plain")
        assert ei.value.min_kernel == "5.15" and "pid=" in (ei.value.hint or "")
        return
    with need(kinds.USDT):
        t = trace_usdt(sdt_binary, "pt_test:plain")
    with t:
        child = Child([sdt_binary])
        child.go()
        got = collect(t, lambda evs: len([e for e in evs if e.pid == child.pid]) >= 3)
    assert [e.args for e in got if e.pid == child.pid] == [(7,), (14,), (21,)]


@needs_python
def test_program_attach_takes_binary_provider_name(need):
    """Program.attach("BINARY:PROVIDER:NAME") on a usdt program (the kind's
    attach style); a missing probe is a TargetNotFoundError before libbpf."""
    import pytracers
    with pytracers.open(pytracers.object_path(kinds.USDT)).load() as obj:
        prog = obj.programs["usdt_probe"]
        assert prog.kind == kinds.USDT
        with need(kinds.USDT):
            link = prog.attach(f"{PY}:python:gc__start")
        assert link.kind == kinds.USDT and "python:gc__start" in link.target
        with pytest.raises(TargetNotFoundError):
            prog.attach(f"{PY}:python:gc__begin")
        with pytest.raises(BadArgumentError, match="binary:provider:name"):
            prog.attach("gc__start")


def test_bad_usdt_arguments_are_refused(sdt_binary):
    with pytest.raises(BadArgumentError, match="no argument 9"):
        trace_usdt(sdt_binary, "pt_test:hit", strings=[9])
    with pytest.raises(BadArgumentError, match="not pointer-sized"):
        trace_usdt(sdt_binary, "pt_test:hit", strings=[0])
    with pytest.raises(TargetNotFoundError, match="USDT probe 'pt_test:hits'"):
        trace_usdt(sdt_binary, "pt_test:hits")


# ---- the command line --------------------------------------------------------------------

@needs_python
def test_cli_list_usdt_json_is_the_notes():
    r = subprocess.run([*CLI, "list", "usdt", PY, "--json"], capture_output=True,
                       timeout=TIMEOUT * 3)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(d["provider"], d["name"], d["address"], d["semaphore"], " ".join(d["args"]))
            for d in rows] == [(p.provider, p.name, p.address, p.semaphore_address,
                                p.arg_specs) for p in read_probes(PY)]


def _cli_ready(need: Any, *argv: str) -> "subprocess.Popen[bytes]":
    """The CLI started and attached (its ready line seen on stderr)."""
    cli = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    while b"Ctrl-C to stop" not in err:
        line = cli.stderr.readline()
        if not line:
            break
        err += line
    if b"Ctrl-C to stop" not in err:
        cli.kill()
        cli.wait()
        with need(kinds.USDT):
            raise NotSupportedError(kinds.USDT, err.decode())
        pytest.fail(err.decode())
    return cli


def _cli_rows(cli: "subprocess.Popen[bytes]") -> List[dict]:
    time.sleep(0.5)
    cli.send_signal(2)
    out, err = cli.communicate(timeout=TIMEOUT)
    assert cli.returncode == 0, err
    return [json.loads(line) for line in out.decode().splitlines()]


def test_cli_trace_usdt_prints_the_arguments(need, sdt_binary):
    """`pytracers trace usdt:BINARY:pt_test:hit --pid PID --strings 4 --json`."""
    child = Child([sdt_binary])
    try:
        cli = _cli_ready(need, "trace", f"usdt:{sdt_binary}:pt_test:hit", "--pid",
                         str(child.pid), "--strings", "4", "--json", "-d", str(TIMEOUT * 3))
        assert child.go() == ["done 1"]
        rows = _cli_rows(cli)
        assert [(d["event"], d["name"], d["args"]) for d in rows] == \
            [("usdt", "hit", [i, -1000000000000 * i, 250 + i, -i, f"call-{i}"])
             for i in (1, 2, 3)]
    finally:
        child.kill()


@needs_python
def test_cli_python_reports_collections_and_imports(need):
    """`pytracers python --pid PID --json`: the child's gc.collect(1) and its
    import of colorsys, one JSON object each."""
    child = python_child("gc.collect(1)\nimport colorsys")
    try:
        cli = _cli_ready(need, "python", "--pid", str(child.pid), "--json",
                         "-d", str(TIMEOUT * 3))
        child.go()
        rows = _cli_rows(cli)
        assert [(d["event"], d["generation"]) for d in rows if d["event"] == "PyGC"] == \
            [("PyGC", 1)]
        assert [d["module"] for d in rows if d["event"] == "PyImport"] == ["colorsys"]
    finally:
        child.kill()
