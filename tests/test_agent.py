"""The monitoring agent: start it, make activity, scrape /metrics over HTTP.

The agent runs as a subprocess on 127.0.0.1 (a free port); the test runs a
command under a name nobody else uses a known number of times, makes known
syscalls under another such name, and checks the exported counters moved by
exactly that much; then SIGTERM must stop the agent cleanly with none of its
links left in the kernel.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

from pytracers import introspect

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

N_EXECS = 4
N_GETPGID = 7
N_GETPPID = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> dict:
    """{(metric sample name, frozenset(labels)): value}"""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _link_ids_of(pid: int) -> set:
    """Ids of the BPF links process ``pid`` holds (fdinfo of its link fds)."""
    ids = set()
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                for line in f:
                    if line.startswith("link_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


def _attachment_fds(pid: int) -> int:
    """How many fds of ``pid`` hold an attachment: a BPF link, or a perf event
    (tracepoints on kernels before 5.15 attach through perf events and have
    no BPF link)."""
    n = 0
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        n += target in ("anon_inode:bpf_link", "anon_inode:[perf_event]")
    return n


def _agent_command(port: int) -> list:
    return [sys.executable, "-m", "pytracers", "agent", "--listen", f"127.0.0.1:{port}",
            "--syscalls", "getpgid,getppid"]


@pytest.mark.kind("tp")
def test_agent_exports_what_happened_and_stops_cleanly(tmp_path):
    tag = uuid.uuid4().hex[:8]
    exec_comm = f"ptx{tag}"          # <= 15 bytes: the kernel's comm
    sc_comm = f"pts{tag}"
    os.symlink("/bin/true", tmp_path / exec_comm)   # comm comes from the exec'd path

    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(_agent_command(port), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while True:
                err.seek(0)
                text = err.read()
                if "serving http://127.0.0.1:" in text:
                    break
                assert proc.poll() is None, f"agent exited early:\n{text}"
                assert time.monotonic() < deadline, f"agent not ready:\n{text}"
                time.sleep(0.05)
            # exec enter/exit + 2 syscalls x enter/exit
            assert _attachment_fds(proc.pid) >= 2 + 4
            agent_links = _link_ids_of(proc.pid)      # BPF link ids, where fdinfo has them
            assert agent_links <= introspect.link_ids()

            for _ in range(N_EXECS):
                subprocess.run([str(tmp_path / exec_comm)], check=True)
            child = subprocess.run([sys.executable, "-c", f"""
import os
with open("/proc/self/comm", "w") as f:
    f.write("{sc_comm}")
for _ in range({N_GETPGID}):
    os.getpgid(0)
for _ in range({N_GETPPID}):
    os.getppid()
try:
    os.execv("/nonexistent/{tag}", ["x"])
except OSError:
    pass
"""], check=True)
            assert child.returncode == 0

            want = {
                ("pytracers_execs_total", (("comm", exec_comm),)): N_EXECS,
                ("pytracers_exec_failures_total", (("comm", sc_comm),)): 1,
                ("pytracers_syscalls_total", (("comm", sc_comm), ("syscall", "getpgid"))):
                    N_GETPGID,
                ("pytracers_syscalls_total", (("comm", sc_comm), ("syscall", "getppid"))):
                    N_GETPPID,
                ("pytracers_syscall_latency_seconds_count", (("comm", sc_comm),)):
                    N_GETPGID + N_GETPPID,
            }

            def got(samples: dict) -> dict:
                return {k: _get(samples, k[0], **dict(k[1])) for k in want}

            deadline = time.monotonic() + 60
            while True:
                samples = _scrape(url)
                if got(samples) == want or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert got(samples) == want
            time.sleep(0.3)                        # nothing more arrives for our names
            samples = _scrape(url)
            assert got(samples) == want

            # the histogram is consistent: cumulative buckets ending at +Inf == count
            buckets = sorted(((float(dict(lab)["le"]), v) for (name, lab), v in samples.items()
                              if name == "pytracers_syscall_latency_seconds_bucket"
                              and dict(lab)["comm"] == sc_comm))
            assert buckets[-1] == (float("inf"), N_GETPGID + N_GETPPID)
            assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
            assert _get(samples, "pytracers_syscall_latency_seconds_sum", comm=sc_comm) > 0
            # lost events are exported per tracer (and none were lost here)
            for tracer in ("exec", "syscalls"):
                assert ("pytracers_lost_events_total",
                        frozenset({"tracer": tracer}.items())) in samples
                assert _get(samples, "pytracers_events_total", tracer=tracer) >= 1
            assert _get(samples, "pytracers_lost_events_total", tracer="syscalls") == 0
            assert _get(samples, "pytracers_agent_info", exec_kind="tp",
                        syscalls_kind="tp") == 1
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        err.seek(0)
        text = err.read()
    assert rc == 0, text
    assert "Traceback" not in text, text
    assert "stopped, links detached" in text, text
    assert not (introspect.link_ids() & agent_links), "agent links left in the kernel"


def test_numpy_rows_aggregate_like_decoded_records():
    """Stats.add_syscall_rows (the agent's numpy path) and add_syscalls (one
    record at a time) agree on the same events, bucket edges included."""
    import random
    from types import SimpleNamespace

    import numpy as np

    from pytracers.agent import LATENCY_BUCKETS, OTHER_COMM, Stats
    from pytracers.tracers.syscalls import syscall_name

    rnd = random.Random(7)
    edges = [int(b * 1e9) for b in LATENCY_BUCKETS]
    lat = [rnd.choice(edges + [e + 1 for e in edges] + [0, 10**10]) for _ in range(2000)]
    comms = [rnd.choice(["bash", "python", "sshd", "x" * 15, "a"]) for _ in lat]
    ids = [rnd.choice([0, 1, 39, 110, 257]) for _ in lat]
    rows = np.zeros(len(lat), dtype=[("comm", "S16"), ("id", "<i8"), ("latency_ns", "<u8")])
    rows["comm"] = [c.encode() for c in comms]
    rows["id"] = ids
    rows["latency_ns"] = lat
    events = [SimpleNamespace(comm=c, name=syscall_name(i), latency_ns=v)
              for c, i, v in zip(comms, ids, lat)]

    a, b = Stats(), Stats()
    a.add_syscalls(events)
    b.add_syscall_rows(rows[:700])
    b.add_syscall_rows(rows[700:])
    b.add_syscall_rows(rows[:0])
    assert set(a.latency) == set(b.latency) == set(comms)
    assert a.syscalls == b.syscalls
    assert sum(a.syscalls.values()) == len(lat)
    for comm in a.latency:
        assert a.latency[comm].counts == b.latency[comm].counts
        assert a.latency[comm].sum == pytest.approx(b.latency[comm].sum)
    # past max_comms distinct names, the rest count under OTHER_COMM
    c = Stats(max_comms=3)
    c.add_syscall_rows(rows)
    assert len(c.latency) == 4 and OTHER_COMM in c.latency
    assert sum(sum(h.counts) for h in c.latency.values()) == len(lat)



@pytest.mark.kind("tp_btf")
def test_every_syscall_is_traced_with_the_kind_choose_picks():
    """Without --syscalls the agent traces every syscall with the kind
    pytracers.choose.trace_all_syscalls picks (the rule the `syscalls`
    command uses too): tp_btf, the cheapest per call, where the kernel has
    it, else raw_tp -- t.why says which and why; the tracer then sees a
    syscall nobody named."""
    from conftest import expected

    from pytracers.agent import _syscall_tracer
    from pytracers.choose import trace_all_syscalls
    from pytracers.errors import BadArgumentError

    with _syscall_tracer(None, "auto", pid=os.getpid()) as t:
        if t.kind == "raw_tp":                   # a kernel outside the matrix, without tp_btf
            assert not expected("tp_btf"), t.why
            assert t.why.startswith("tp_btf unavailable ("), t.why
        else:
            assert t.kind == "tp_btf", t.kind
        assert t.why.endswith("(every syscall is wanted here, so the per-call cost decides)")
        for _ in range(5):
            os.getppid()
        seen = 0
        deadline = time.monotonic() + 10
        while seen < 5 and time.monotonic() < deadline:
            seen += sum(ev.name == "getppid" for ev in t.read(timeout=0.5))
        assert seen == 5
    with pytest.raises(BadArgumentError, match="name the syscalls"):
        trace_all_syscalls("tp")                 # one tracepoint pair per syscall: not for all
