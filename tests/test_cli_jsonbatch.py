"""The batch JSON formatter of `trace --json` (pytracers/cli/jsonbatch.py)
prints, byte for byte, what the per-event path prints (`output.dumps` of
the record's dict): for every field type, for the CLI's time, and for real
syscall records read from the kernel."""
from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import pytest

from pytracers.cli import jsonbatch as J
from pytracers.cli.output import Clock, dumps

STRINGS = [b"plain", b'quote" back\\slash', b"nl\nand\ttab\x01\x1f", "caf\u00e9 \u2603".encode(),
           b"\xff\xfebad utf-8", b"before\0after NUL", b"", b"0123456789abcdef", b"</script>"]

DTYPE = np.dtype([("u8", "u1"), ("i8", "i1"), ("u16", "<u2"), ("i16", "<i2"), ("u32", "<u4"),
                  ("i32", "<i4"), ("u64", "<u8"), ("i64", "<i8"), ("flag", "?"),
                  ("name", "S16"), ("arr", "<u4", (3,)), ("grid", "<i2", (2, 3))])
INT_EDGES = {"u8": (0, 255), "i8": (-128, 127), "u16": (0, 65535), "i16": (-32768, 32767),
             "u32": (0, 2**32 - 1), "i32": (-2**31, 2**31 - 1), "u64": (0, 2**64 - 1),
             "i64": (-2**63, 2**63 - 1)}

# Under qemu (the kernel matrix) the per-event reference lines cost ~50x more
# to make; a tenth of the records there still covers every rounding case of
# the time window and every edge value (the host runs the full size).
SCALE = 10 if os.environ.get("PYTRACERS_VM_KERNEL") else 1


def sample(n: int, seed: int = 7) -> np.ndarray:
    rng = random.Random(seed)
    a = np.zeros(n, DTYPE)
    for f, (lo, hi) in INT_EDGES.items():
        vals = [rng.choice([lo, hi, 0, -1 if lo < 0 else 1, rng.randint(lo, hi)])
                for _ in range(n)]
        a[f] = np.array(vals, dtype=DTYPE.fields[f][0])
    a["flag"] = [rng.random() < 0.5 for _ in range(n)]
    a["name"] = [rng.choice(STRINGS) for _ in range(n)]
    a["arr"] = np.array([[rng.randint(0, 2**32 - 1) for _ in range(3)] for _ in range(n)])
    a["grid"] = np.array([[[rng.randint(-32768, 32767) for _ in range(3)] for _ in range(2)]
                          for _ in range(n)])
    return a


def per_event(row: np.void) -> str:
    """What the per-event path prints: the decoded values (char arrays as
    str up to the first NUL, arrays as lists) through output.dumps."""
    d = {}
    for f in DTYPE.names:
        v = row[f]
        d[f] = (bytes(v).partition(b"\0")[0].decode("utf-8", "replace")
                if f == "name" else v.tolist())
    return dumps(d) + "\n"


def test_every_field_type_matches_the_per_event_output():
    """Ints of every width at their limits and negative, bool, strings with
    quotes, backslashes, control characters, non-ASCII and invalid UTF-8,
    bytes after a NUL, 1-D and 2-D integer arrays: the same bytes as
    dumps() line by line, across batches sharing the string table."""
    parts = J.record_parts(DTYPE, DTYPE.names)
    assert parts is not None
    fmt = J.BatchJson([J.Literal("{"), *parts, J.Literal("}\n")])
    a = sample(3000 // SCALE)
    for batch in (a[:1], a[1:1000 // SCALE], a[1000 // SCALE:]):
        want = "".join(per_event(r) for r in batch).encode()
        assert fmt.format(batch) == want
        for line in want.splitlines():
            json.loads(line)
    # a strided view (as consume_views may hand over) formats the same
    assert fmt.format(a[::3]) == "".join(per_event(r) for r in a[::3]).encode()
    assert fmt.format(a[:0]) == b""


def test_types_without_a_batch_form_are_refused():
    dt = np.dtype([("x", "<f8"), ("v", "V8")])
    assert J.field_parts(dt, "x") is None and J.field_parts(dt, "v") is None


@pytest.mark.parametrize("offset_ns", [time.time_ns() - time.monotonic_ns(), 15 * 10**17,
                                       -5 * 10**8])
def test_time_matches_round_of_the_per_event_clock(offset_ns):
    """The CLI's time, round((ts + offset) / 1e9, 6), for every ns of a
    window (all the rounding cases: halves, trailing zeros, whole seconds),
    random timestamps, and an offset outside the exact range (fallback)."""
    clock = Clock()
    clock.offset_ns = offset_ns
    base = 10**9 * 1234 - 2000
    ts = np.concatenate([np.arange(base, base + 200_000 // SCALE, dtype=np.uint64),
                         np.random.default_rng(3).integers(10**9, 10**15, 50_000 // SCALE,
                                                           dtype=np.uint64)])
    rows = np.zeros(len(ts), [("ts_ns", "<u8")])
    rows["ts_ns"] = ts
    got = J.BatchJson([J.Time("ts_ns", offset_ns), J.Literal("\n")]).format(rows)
    want = "".join(json.dumps(round(clock.wall(t), 6)) + "\n" for t in ts.tolist())
    assert got == want.encode()


@pytest.mark.kind("tp")
@pytest.mark.parametrize("latency", [False, True])
def test_syscall_records_from_the_kernel_match(latency):
    """Real getpgid records (several distinct argument values, this process
    and its comm): the batch lines equal the CLI's per-event lines for the
    same records."""
    from pytracers.tracers import SyscallTracer
    with SyscallTracer("getpgid", kind="tp", pid=os.getpid(), measure_latency=latency) as t:
        for p in (0, os.getpid(), 0, 1, 0):
            os.getpgid(p)
        rows = t.ring.read_batch(timeout=5.0)
        assert len(rows) == 5
        clock = Clock()
        fmt = J.syscall_formatter(t, rows.dtype, "syscall", clock.offset_ns)
        decode = t.ring.decoder
        want = []
        for i in range(len(rows)):
            d = t.event_dict(decode(rows[i:i + 1].tobytes(), 0))
            d = {"event": d.get("event", "syscall"), "time": round(clock.wall(d["ts_ns"]), 6),
                 **d}
            want.append(dumps(d) + "\n")
        got = fmt.format(rows)
        assert got == "".join(want).encode()
        evs = [json.loads(x) for x in got.splitlines()]
        assert [e["args"]["pid"] for e in evs] == [0, os.getpid(), 0, 1, 0]
        assert all(e["name"] == "getpgid" and e["pid"] == os.getpid() for e in evs)
        # (tp without latency falls back to the timed pair before 5.15)
        assert all((e["latency_ns"] is None) != t.measure_latency for e in evs)


@pytest.mark.kind("tp")
def test_trace_json_prints_per_event_until_the_first_backlog():
    """`trace --json` reads its first records one at a time (no numpy import
    before the first line) and switches to whole batches at the first
    backlog over WARM_BYTES, for good; every record goes to exactly one of
    the two paths."""
    from pytracers.cli.loop import BatchSource
    from pytracers.tracers import SyscallTracer
    with SyscallTracer("getpgid", kind="tp", pid=os.getpid()) as t:
        events, batches = [], []
        src = BatchSource(t, "getpgid", lambda rows: batches.append(rows["ts_ns"].copy()),
                          lambda rec: events.append(rec.ts_ns))
        src.warm = True                  # as in a fresh CLI process, where numpy is not loaded
        for _ in range(3):
            os.getpgid(0)
        assert src.poll(5.0, None) == 3
        assert len(events) == 3 and not batches and src.warm
        calls = 2 * BatchSource.WARM_BYTES // t.ring.dtype.itemsize + 1
        for _ in range(calls):
            os.getpgid(0)
        assert t.ring.pending_bytes() > BatchSource.WARM_BYTES
        got = 0
        while got < calls:
            n = src.poll(5.0, None)
            assert n, f"only {got} of {calls} records came back"
            got += n
        assert got == calls and not src.warm and len(events) == 3
        assert sum(len(b) for b in batches) == calls
        os.getpgid(0)                    # a small read after the switch is a batch too
        assert src.poll(5.0, None) == 1 and len(events) == 3
        ts = np.concatenate(batches)
        assert len(set(ts.tolist())) == calls + 1 and all(e < ts[0] for e in events)
        assert t.lost == 0
