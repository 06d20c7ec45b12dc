"""pytracers.trace_pipe(): bpf_printk lines from tracefs, parsed (pid, comm,
cpu, timestamp, message), with a timeout and close()."""
from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

import pytracers
from pytracers.errors import BadArgumentError
from pytracers.kernel.tracefs import TraceLine, parse_trace_line

PRINTK = str(Path(__file__).parent / "objects" / "printk.bpf.o")


def _printk_object(tag: int) -> "pytracers.Object":
    o = pytracers.open(PRINTK)
    o.config["cfg_pid"] = os.getpid()
    o.config["cfg_tag"] = tag
    return o.load()


def _mine(lines, tag):
    return [ln for ln in lines if ln.message.startswith(f"pytracers-printk tag={tag} ")]


def test_printk_lines_arrive_parsed():
    """Three getppid() calls by this process: exactly three lines with this
    test's tag, each naming this thread, its comm, a CPU and a timestamp."""
    tag = random.randrange(1, 1 << 30)
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    with _printk_object(tag) as obj, obj.programs["say_hello"].attach(), \
            pytracers.trace_pipe(timeout=1.0) as tp:
        t0 = time.monotonic()
        for _ in range(3):
            os.getppid()
        lines = _mine(list(tp), tag)
    assert len(lines) == 3, lines
    for ln in lines:
        assert isinstance(ln, TraceLine)
        assert ln.message == f"pytracers-printk tag={tag} pid={os.getpid()}"
        assert ln.pid == threading.get_native_id()
        assert ln.comm == comm
        assert 0 <= ln.cpu < os.cpu_count()
        assert ln.event == "bpf_trace_printk"
        assert abs(ln.timestamp - t0) < 60       # the trace clock is close to monotonic
    assert [ln.timestamp for ln in lines] == sorted(ln.timestamp for ln in lines)


def test_timeout_ends_iteration_and_close_is_safe_twice():
    tp = pytracers.trace_pipe(timeout=0.3)
    t0 = time.monotonic()
    rest = list(tp)               # whatever was pending, then 0.3 s of silence
    took = time.monotonic() - t0
    assert all(ln.event == "bpf_trace_printk" for ln in rest)
    assert 0.29 <= took < 10
    tp.close()
    tp.close()
    assert tp.closed
    assert tp.read_line(0.1) is None
    with pytest.raises(BadArgumentError):
        pytracers.trace_pipe(timeout=-1)


def test_close_from_another_thread_ends_a_waiting_reader():
    tp = pytracers.trace_pipe()         # no timeout: waits for ever
    got = []
    th = threading.Thread(target=lambda: got.extend(_mine(tp, -1)))
    th.start()
    time.sleep(0.3)
    tp.close()
    th.join(5)
    assert not th.is_alive()
    assert got == []


@pytest.mark.parametrize("line, expect", [
    ("           <...>-12345   [001] d..31  1234.567890: bpf_trace_printk: hi there",
     ("<...>", 12345, 1, "d..31", 1234.56789, "bpf_trace_printk", "hi there")),
    ("  python3 -m x-99 [000] ....  12.000001: bpf_trace_printk: a: b",
     ("python3 -m x", 99, 0, "....", 12.000001, "bpf_trace_printk", "a: b")),
    ("   kworker/0:1-12 ( 12) [003] 5.000000: sched_switch: x",
     ("kworker/0:1", 12, 3, "", 5.0, "sched_switch", "x")),
    ("          cat-5 [000]    77.123456: bpf_trace_printk: noflags",
     ("cat", 5, 0, "", 77.123456, "bpf_trace_printk", "noflags")),
])
def test_trace_line_format(line, expect):
    assert tuple(parse_trace_line(line))[:7] == expect
    assert parse_trace_line("# tracer: nop") is None
