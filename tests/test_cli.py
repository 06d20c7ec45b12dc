"""The `pytracers` command line, run as a subprocess (`python -m pytracers`).

Each test checks what the CLI prints (stdout only JSON lines with --json,
the human parts on stderr), the exact fields of the events the test itself
caused, the exit status of each error class, and that the BPF links and
programs the CLI process held are gone from the kernel afterwards (read from
its /proc/PID/fdinfo while it runs, so other processes' objects never count).
"""
from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

from pytracers import cli, introspect

from conftest import VM_KERNEL, expected

# Under qemu TCG, importing the package takes several seconds.
READY_TIMEOUT = 180.0 if VM_KERNEL else 30.0
RUN_TIMEOUT = 300.0 if VM_KERNEL else 60.0
READY_MARK = b"Ctrl-C to stop"
CLI = [sys.executable, "-m", "pytracers"]


def run(*args: str, timeout: float = RUN_TIMEOUT,
        **kw) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([*CLI, *args], capture_output=True, timeout=timeout, **kw)


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def json_lines(stdout: bytes) -> List[dict]:
    """Every stdout line must be one JSON object."""
    out = []
    for line in text(stdout).splitlines():
        obj = json.loads(line)          # raises (fails the test) on anything else
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def assert_one_line_error(r: subprocess.CompletedProcess, code: int,  # type: ignore[type-arg]
                          *needles: str) -> str:
    err = text(r.stderr).strip()
    assert r.returncode == code, (r.returncode, err)
    assert r.stdout == b"", text(r.stdout)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert "error:" in err and "(hint: " in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def fd_bpf_ids(pid: int) -> Dict[str, Set[int]]:
    """The BPF link/prog/map ids held by process ``pid``'s fds."""
    ids: Dict[str, Set[int]] = {"link": set(), "prog": set(), "map": set()}
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                info = f.read()
        except OSError:
            continue
        for kind in ids:
            m = re.search(rf"^{kind}_id:\s*(\d+)", info, re.M)
            if m:
                ids[kind].add(int(m.group(1)))
    return ids


class Cli:
    """A long-running CLI process: wait until it is tracing, then stop it."""

    def __init__(self, *args: str, **kw) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, **kw)
        self.err = b""
        self.held: Dict[str, Set[int]] = {}

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Read stderr until the CLI says it is attached; note its BPF ids."""
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while READY_MARK not in self.err:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    pytest.fail(f"CLI not ready after {timeout} s; stderr: {text(self.err)}")
                if sel.select(left):
                    chunk = os.read(self.proc.stderr.fileno(), 65536)
                    if not chunk:
                        rc = self.proc.wait()
                        self.kill()
                        pytest.fail(f"CLI exited ({rc}) before tracing: {text(self.err)}")
                    self.err += chunk
        finally:
            sel.close()
        self.held = fd_bpf_ids(self.proc.pid)
        assert self.held["link"], f"the CLI holds no BPF link while tracing: {self.held}"

    def finish(self, timeout: float = RUN_TIMEOUT) -> Tuple[int, bytes, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.err += err
        return self.proc.returncode, out, text(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def assert_detached(self) -> None:
        """Nothing the CLI attached or loaded is left in the kernel."""
        assert self.proc.returncode is not None
        left_links = self.held["link"] & introspect.link_ids()
        left_progs = self.held["prog"] & introspect.prog_ids()
        assert not left_links, f"links still attached after the CLI exited: {left_links}"
        assert not left_progs, f"programs still loaded after the CLI exited: {left_progs}"


def summary(err: str) -> Tuple[int, int]:
    """(events seen, lost) from the end-of-run summary line on stderr."""
    m = re.search(r"(\d+) events? seen(?:, \d+ shown)?, (\d+) lost in [\d.]+ s \(([^)]*)\); "
                  r"probes detached", err)
    assert m, f"no summary on stderr: {err}"
    return int(m.group(1)), int(m.group(2))


# ---- help, usage, exit codes ------------------------------------------------------------

def test_help_documents_subcommands_and_exit_codes(capsys):
    r = run("--help")
    assert r.returncode == 0
    out = text(r.stdout)
    for sub in ("doctor", "list", "trace", "exec", "syscalls", "agent"):
        assert re.search(rf"^\s+{sub}\s", out, re.M), sub
    for code, word in ((2, "usage"), (3, "not found"), (4, "not supported"),
                       (5, "permission denied")):
        assert re.search(rf"^\s+{code}\s+{word}", out, re.M), (code, out)

    # every streaming subcommand takes the common options
    for sub, opts in (("exec", ("--pid", "--comm", "--duration", "--json", "--failed")),
                      ("trace", ("--pid", "--comm", "--duration", "--json", "--kind")),
                      ("syscalls", ("--pid", "--comm", "--duration", "--json", "--kind"))):
        assert cli.main([sub, "--help"]) == 0
        usage = capsys.readouterr().out
        for opt in opts:
            assert opt in usage, (sub, opt)
        assert "exit status:" in usage


def test_usage_error_as_a_process():
    assert_one_line_error(run("exec", "--pid", "nope"), 2, "not a process id")


@pytest.mark.parametrize("argv, needle", [
    (["exec", "--duration", "-1"], "positive number of seconds"),
    (["trace"], "required"),
    (["trace", "--kind", "uprobe", "x"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["agent", "--listen", "localhost"], "HOST:PORT"),
    (["list", "functions"], "required"),
])
def test_usage_errors_are_one_line_with_status_2(argv, needle, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "(hint: " in err, err


def test_without_capabilities_is_one_line_with_status_5():
    """Root with every capability dropped (uid 0 keeps read access to the
    interpreter under /root; SECBIT_NOROOT stops exec from granting caps)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    r = subprocess.run([setpriv, "--securebits=+noroot,+noroot_locked", "--bounding-set=-all",
                        "--inh-caps=-all", *CLI, "exec", "--duration", "1"],
                       capture_output=True, timeout=RUN_TIMEOUT)
    assert_one_line_error(r, 5, "permission denied", "CAP_BPF", "run as root")


# ---- exec -------------------------------------------------------------------------------

@pytest.mark.kind("tp")
def test_exec_json_reports_our_bin_true():
    """Must show: `pytracers exec --json --duration 2` while the test runs
    /bin/true prints a JSON line whose filename is /bin/true and whose pid is
    the child's."""
    cli = Cli("exec", "--json", "--duration", "2")
    cli.wait_ready()
    child = subprocess.Popen(["/bin/true", "cli-json-marker"])
    child.wait()
    rc, out, err = cli.finish()
    assert rc == 0, err
    events = json_lines(out)
    mine = [e for e in events if e["pid"] == child.pid]
    assert len(mine) == 1, (child.pid, events)
    ev = mine[0]
    assert ev["event"] == "exec"
    assert ev["filename"] == "/bin/true"
    assert ev["pid"] == ev["tid"] == child.pid
    assert ev["ppid"] == os.getpid()
    assert ev["uid"] == os.getuid()
    assert ev["ret"] == 0
    assert ev["comm"] == "true"
    assert ev["args"] == ["/bin/true", "cli-json-marker"]
    assert isinstance(ev["ts_ns"], int) and abs(ev["time"] - time.time()) < 60
    assert not any(k.startswith("_") for k in ev)
    assert all(e["ret"] == 0 for e in events)          # failed execs only with --failed
    seen, lost = summary(err)
    assert seen >= len(events) and lost == 0
    assert "tracing with tp" in err
    cli.assert_detached()


@pytest.mark.kind("tp")
def test_exec_human_columns_pid_filter_and_failed(tmp_path):
    """--pid: only that process's execs; --failed: failed ones too (RET is
    -errno); aligned columns under a header."""
    missing = str(tmp_path / "no-such-program")
    gate = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys\nsys.stdin.read(1)\n"
         f"try:\n    os.execv({missing!r}, [{missing!r}, 'x'])\nexcept OSError:\n    pass\n"
         "os.execv('/bin/true', ['/bin/true', 'pid-filter', 'two words'])"],
        stdin=subprocess.PIPE)
    try:
        cli_ = Cli("exec", "--pid", str(gate.pid), "--failed", "--duration", "1")
        cli_.wait_ready()
        subprocess.Popen(["/bin/true", "not-this-one"]).wait()
        assert gate.stdin is not None
        gate.stdin.write(b"g")
        gate.stdin.close()
        gate.wait(timeout=10)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.wait()
    rc, out, err = cli_.finish()
    assert rc == 0, err
    lines = text(out).splitlines()
    assert len(lines) == 3, lines
    header, failed, row = lines
    assert header.split() == ["TIME", "PCOMM", "PID", "PPID", "UID", "RET", "ARGS"]
    for line in (failed, row):
        assert re.match(r"\d\d:\d\d:\d\d ", line), line
    assert failed.split()[2:6] == [str(gate.pid), str(os.getpid()), str(os.getuid()), "-2"]
    assert failed.endswith(f"{missing} x"), failed
    assert row.split()[1:6] == ["true", str(gate.pid), str(os.getpid()), str(os.getuid()), "0"]
    assert row.endswith("/bin/true pid-filter 'two words'"), row
    # columns line up: each value ends where its right-aligned header ends
    for col in ("PID", "PPID", "UID", "RET"):
        end = header.index(col) + len(col)
        for line in (failed, row):
            assert line[end - 1] != " " and line[end] == " ", (col, header, line)
    assert summary(err) == (2, 0)
    cli_.assert_detached()


@pytest.mark.kind("tp")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_cleanly(sig):
    cli = Cli("exec", "--json")
    cli.wait_ready()
    child = subprocess.Popen(["/bin/true", "before-signal"])
    child.wait()
    time.sleep(0.3)
    cli.proc.send_signal(sig)
    rc, out, err = cli.finish()
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"stopped by {sig.name}" in err, err
    seen, lost = summary(err)
    assert lost == 0 and seen >= 1
    events = json_lines(out)
    assert any(e["pid"] == child.pid and e["filename"] == "/bin/true" for e in events)
    cli.assert_detached()


# ---- list tracepoints -------------------------------------------------------------------

def test_list_tracepoints_json_and_table():
    r = run("list", "tracepoints", "sched:sched_process_e*", "--json")
    assert r.returncode == 0, text(r.stderr)
    rows = {d["tracepoint"]: d for d in json_lines(r.stdout)}
    assert {"sched:sched_process_exec", "sched:sched_process_exit"} <= set(rows)
    assert all(t.startswith("sched:sched_process_e") for t in rows)
    ex = rows["sched:sched_process_exec"]
    assert (ex["category"], ex["name"]) == ("sched", "sched_process_exec")
    assert ex["kinds"][:2] == ["tp", "raw_tp"]
    # sched_process_exec has a BTF-typed tracepoint on every kernel we run on
    assert "tp_btf" in ex["kinds"]

    r = run("list", "tracepoints", "sys_enter_openat")
    assert r.returncode == 0, text(r.stderr)
    lines = text(r.stdout).splitlines()
    assert lines[0].split() == ["TRACEPOINT", "KINDS", "NOTE"]
    assert lines[1].split()[:2] == ["syscalls:sys_enter_openat", "tp"]
    assert "only via sys_enter" in lines[1]
    assert "1 tracepoint match" in text(r.stderr)


def test_list_tracepoints_no_match_is_status_3(capsys):
    assert cli.main(["list", "tracepoints", "no_such_tracepoint_xyz*"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "no tracepoint matches" in err and "(hint: " in err


# ---- agent slot -------------------------------------------------------------------------

def test_agent_subcommand_is_wired(capsys):
    assert cli.main(["agent", "--help"]) == 0
    assert "--listen" in capsys.readouterr().out
    try:
        import pytracers.agent  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "pytracers.agent":
            raise
        assert cli.main(["agent", "--listen", "127.0.0.1:1", "--duration", "1"]) == 4
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1
        assert "agent is not available" in err and "(hint: " in err
