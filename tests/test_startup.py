"""The start and close paths do only what the first event needs (issue 16).

- a per-event SyscallTracer creates the in-kernel stats map with one entry
  (SyscallStats sizes it for its counters);
- a tracer attaches before it makes its ring's reader, and loses nothing
  recorded in between;
- libbpf's DEBUG lines are not formatted unless the ``pytracers.libbpf``
  logger shows DEBUG, and are logged when it does;
- closing an object detaches its perf-event links together (threads): every
  link is gone from the kernel after close(), the other children closed too.
"""
from __future__ import annotations

import logging
import os
import threading

import pytest

from pytracers import _libbpf, introspect, link as link_mod
from pytracers.tracers import SyscallStats, SyscallTracer


@pytest.mark.kind("tp")
def test_per_event_tracer_has_a_one_entry_stats_map():
    """The stats map is SyscallStats' alone: a per-event tracer's is 1 entry
    (the kernel's own max_entries), SyscallStats' the size it asked for."""
    with SyscallTracer("getppid", kind="tp", pid=os.getpid()) as t:
        assert t.object.maps["stats"].max_entries == 1
        os.getppid()
        evs = [e for e in t.read(1.0) if e.name == "getppid"]
        assert len(evs) == 1 and evs[0].ret == os.getppid()
    with SyscallStats("getppid", kind="tp", pid=os.getpid(), max_keys=2048) as s:
        assert s.object.maps["stats"].max_entries == 2048


@pytest.mark.kind("tp")
def test_probes_attach_before_the_reader_is_made(monkeypatch):
    """A tracer attaches, then makes its ring's reader and decoder (they are
    ~6 ms of a start): a call made in between is recorded and delivered."""
    from pytracers.object import Object
    order = []
    made = Object.ring_buffer

    def ring_buffer(self, *a, **kw):
        order.append("reader")
        os.getppid()                        # the probes run already: recorded in the ring
        return made(self, *a, **kw)
    attach = SyscallTracer._attach

    def _attach(self, obj):
        attach(self, obj)
        order.append(f"attached {len(self.links)}")
    monkeypatch.setattr(Object, "ring_buffer", ring_buffer)
    monkeypatch.setattr(SyscallTracer, "_attach", _attach)
    ppid = os.getppid()
    with SyscallTracer("getppid", kind="tp", pid=os.getpid()) as t:
        assert order == ["attached 2", "reader"]
        evs = t.read(1.0)
        assert [(e.name, e.ret) for e in evs] == [("getppid", ppid)]
        os.getppid()
        assert [(e.name, e.ret) for e in t.read(1.0)] == [("getppid", ppid)]


@pytest.mark.kind("tp")
def test_a_reader_that_cannot_be_made_detaches_the_probes(monkeypatch):
    """The reader comes after the attach: when it cannot be made, the
    constructor raises with every link closed and the programs, maps and
    links gone from the kernel -- closed, not left to the collector (the
    half-made tracer is kept here, as a traceback's frame would keep it)."""
    from pytracers.kernel.introspect import kernel_id
    from pytracers.object import Object
    held = {}
    attach = SyscallTracer._attach

    def _attach(self, obj):
        attach(self, obj)
        held["tracer"] = self
        held["links"] = list(self.links)
        ids = {"progs": set(), "maps": set(), "links": set()}
        fds = [p.fd for p in obj.programs.values() if p.fd >= 0] + \
            [m.fd for m in obj.maps.values()] + [k.fd for k in self.links]
        for kid in filter(None, map(kernel_id, fds)):
            ids[kid[0]].add(kid[1])
        held["ids"] = ids

    def ring_buffer(self, *a, **kw):
        raise MemoryError("no reader")
    monkeypatch.setattr(SyscallTracer, "_attach", _attach)
    monkeypatch.setattr(Object, "ring_buffer", ring_buffer)
    with pytest.raises(MemoryError, match="no reader"):
        SyscallTracer("getppid", kind="tp", pid=os.getpid())
    assert held["tracer"].closed
    assert len(held["links"]) == 2 and all(k.closed for k in held["links"])
    assert held["ids"]["progs"] and held["ids"]["maps"]
    assert introspect.still_present(held["ids"], timeout=5.0) == {}


class _CountingLibc:
    """libc with vsnprintf counted: one call per libbpf message formatted."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def vsnprintf(self, *args):
        self.calls += 1
        return self.real.vsnprintf(*args)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.kind("tp")
def test_libbpf_debug_lines_are_formatted_only_when_logged(monkeypatch, caplog):
    """A load prints hundreds of DEBUG lines: with the logger above DEBUG none
    is formatted; at DEBUG they reach the pytracers.libbpf logger."""
    counting = _CountingLibc(_libbpf.libc)
    monkeypatch.setattr(_libbpf, "libc", counting)
    caplog.set_level(logging.WARNING, logger="pytracers.libbpf")
    SyscallTracer("getppid", kind="tp", pid=os.getpid()).close()
    assert counting.calls == 0
    assert [r for r in caplog.records if r.name == "pytracers.libbpf"] == []
    caplog.set_level(logging.DEBUG, logger="pytracers.libbpf")
    SyscallTracer("getppid", kind="tp", pid=os.getpid()).close()
    debug = [r for r in caplog.records
             if r.name == "pytracers.libbpf" and r.levelno == logging.DEBUG]
    assert len(debug) >= 100 and counting.calls >= len(debug)
    assert any("sc_tp_exit" in r.getMessage() for r in debug)


@pytest.mark.kind("tp")
def test_close_detaches_perf_event_links_together(monkeypatch):
    """Two syscalls' tracepoint pairs: four perf-event links, closed from
    threads at once (each bpf_link__destroy runs on its own thread); after
    close() every link and the ring are closed and no link id is left."""
    # the Thread objects themselves, kept alive here: a finished thread's
    # get_ident() may be reused by the next one (seen on a one-CPU guest)
    threads = []

    class Lib:                           # libbpf, with the thread of each destroy noted
        def __getattr__(self, name):
            return getattr(_libbpf.lib, name)

        def bpf_link__destroy(self, ptr):
            threads.append(threading.current_thread())
            return _libbpf.lib.bpf_link__destroy(ptr)
    monkeypatch.setattr(link_mod, "lib", Lib())
    t = SyscallTracer(["getppid", "getpgid"], kind="tp", pid=os.getpid())
    # BPF links where the kernel makes perf-event attachments links (5.15+;
    # before, libbpf's link is the perf event's fd and there is no link id)
    found = [introspect.kernel_id(k.fd) for k in t.links]
    ids = {kid[1] for kid in found if kid is not None and kid[0] == "links"}
    assert len(t.links) == 4 and len(ids) in (0, 4) and ids <= introspect.link_ids()
    ring = t.ring
    t.close()
    assert all(k.closed for k in t.links) and ring.closed
    assert len(threads) == 4 and len({id(th) for th in threads}) == 4   # (one is this one)
    assert introspect.still_present({"links": ids}, timeout=5.0) == {}


def test_close_together_leaves_non_links_in_order():
    """Resources that are not perf-event links close in the order given."""
    order = []

    class R:
        closed = False

        def __init__(self, n):
            self.n = n

        def close(self):
            order.append(self.n)
    link_mod.close_together([R(1), R(2), R(3)])
    assert order == [1, 2, 3]


_NO_NUMPY_CHILD = r"""
import os, sys
from pytracers.tracers import SyscallTracer
ppid = os.getppid()
with SyscallTracer("getppid", kind="tp", pid=os.getpid(), wakeup_bytes=1 << 20) as t:
    for _ in range(100):
        os.getppid()
    evs = [e for e in t.read(1.0) if e.name == "getppid"]
    print(len(evs), sum(e.ret == ppid for e in evs), "numpy" in sys.modules)
    # `trace --json`'s source: its first records go per event, numpy not loaded
    from pytracers.cli.loop import BatchSource
    lines = []
    src = BatchSource(t, "getppid", lambda rows: lines.append("batch"),
                      lambda rec: lines.append(rec.ret == ppid))
    for _ in range(3):
        os.getppid()
    n = src.poll(5.0, None)
    print(n, lines.count(True), src.warm, "numpy" in sys.modules)
"""


@pytest.mark.kind("tp")
def test_first_events_are_read_without_importing_numpy():
    """A tracer's start and a first batch of 100 records (one run in the ring)
    read every record, exactly, without importing numpy (tens of ms before
    a CLI's first line); so do `trace --json`'s first records (BatchSource
    starts per event in a process without numpy)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _NO_NUMPY_CHILD], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["100", "100", "False", "3", "3", "True", "False"]


_PROFILE_CHILD = r"""
import os, sys, time
import pytracers
with pytracers.Profiler(frequency=99, pid=os.getpid()) as p:
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        pass
    prof = p.result()
named = sum(f.symbol != "[unknown]" for s in prof.samples for f in s.kstack + s.ustack)
print(prof.total > 0, prof.stats["symbolized"] > 0, named > 0, "numpy" in sys.modules)
"""


def test_a_profile_is_symbolised_without_importing_numpy():
    """A profile's few hundred distinct addresses are looked up one by one
    (kallsyms' sorted lines bisected, ELF tables read with struct): a whole
    profile, from start to symbolised frames, never imports numpy (~110 ms
    of CPU, a third of a short profile's)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _PROFILE_CHILD], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True", "True", "False"]


_PARSER_CHILD = r"""
import sys
from pytracers.cli.entry import COMMANDS, build_parser
args = build_parser(["trace", "syscall:getpgid", "--json"]).parse_args(
    ["trace", "syscall:getpgid", "--json"])
loaded = sorted({m.lstrip(".") for _c, m in COMMANDS if "pytracers.cli" + m in sys.modules})
full = build_parser().format_help()
print(args.command, args.target, args.json, ",".join(loaded),
      all(c in full for c, _m in COMMANDS), "pytracers.kernel.symbols" in sys.modules,
      "shutil" in sys.modules, "json" in sys.modules)
"""


def test_cli_imports_only_the_named_commands_module():
    """`pytracers trace ...` builds the trace command alone (its module and
    the usdt one it uses), parsed as before; with no command named, --help
    lists every command; neither loads kernel.symbols (dataclasses, inspect)
    nor shutil (argparse's own formatter imports it, with bz2 and lzma), nor
    json (imported by the first JSON line, after the probes attach)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _PARSER_CHILD], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["trace", "syscall:getpgid", "True", "trace,usdt", "True",
                                  "False", "False", "False"]


@pytest.mark.kernel_independent
@pytest.mark.parametrize("columns", [None, "57", "0", "x"])
def test_cli_help_width_is_argparse_s(monkeypatch, columns):
    """The command line's formatter measures the terminal without shutil and
    finds the width argparse's own would (COLUMNS, else the terminal, else 80)."""
    import argparse
    import shutil
    from pytracers.cli.options import Formatter
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert Formatter("p")._width == argparse.RawDescriptionHelpFormatter("p")._width
    assert Formatter("p")._width == shutil.get_terminal_size().columns - 2


_LOGGING_CHILD = r"""
import sys
from pytracers.cli.entry import main
rc = main(["trace", "syscall:pt_no_such_syscall", "--json"])
before = "logging" in sys.modules
import logging
print(rc, before, logging.getLogger().level, logging.getLogger("pytracers.libbpf").level,
      len(logging.getLogger().handlers))
"""


def test_cli_configures_logging_only_when_it_is_imported():
    """Without --debug a command that logs nothing never imports logging; if
    something imports it later, it is configured as before (root WARNING
    with one stderr handler, libbpf's messages off)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _LOGGING_CHILD], capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.split() == ["3", "False", "30", "50", "1"], res.stderr
    assert "pt_no_such_syscall" in res.stderr
