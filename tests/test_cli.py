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
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pytest

from pytracers import cli, introspect
from pytracers.errors import NotSupportedError
from pytracers.kernel.symbols import syscall_function
from pytracers.tracers.syscalls import syscall_number

GETPPID_NR = syscall_number("getppid")          # 110 on x86-64, 173 on arm64

from conftest import VM_KERNEL, expected, kernel_label, known_lack

# Under qemu TCG, importing the package takes several seconds.
READY_TIMEOUT = 180.0 if VM_KERNEL else 30.0
RUN_TIMEOUT = 300.0 if VM_KERNEL else 60.0
READY_MARK = b"Ctrl-C to stop"
CLI = [sys.executable, "-m", "pytracers"]


def run(*args: str, timeout: float = RUN_TIMEOUT,
        **kw) -> "subprocess.CompletedProcess[bytes]":
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


def assert_one_line_error(r: "subprocess.CompletedProcess[bytes]", code: int,
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
    """The BPF link/prog/map ids held by process ``pid``'s fds, and its perf
    event fds ("perf_event": fd numbers)."""
    ids: Dict[str, Set[int]] = {"link": set(), "prog": set(), "map": set(), "perf_event": set()}
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                info = f.read()
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == "anon_inode:[perf_event]":
            ids["perf_event"].add(int(fd))
        for kind in ("link", "prog", "map"):
            m = re.search(rf"^{kind}_id:\s*(\d+)", info, re.M)
            if m:
                ids[kind].add(int(m.group(1)))
    return ids


class Forked:
    """``pytracers.cli.main(argv)`` in a forked child: a real process (own pid,
    signals, fds, exit status, stdout/stderr pipes) without starting a new
    interpreter -- `import pytracers` takes 10-20 s under qemu TCG, so the
    kernel matrix could not afford one per test.  The subset of Popen the
    tests use."""

    def __init__(self, argv: Sequence[str]) -> None:
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                   # the child: never returns
            rc = 70
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(w_out, 1)
                os.dup2(w_err, 2)
                os.closerange(3, 65536)                # as exec with close_fds would
                sys.stdin = open(0, closefd=False)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                rc = cli.main(list(argv))
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                import traceback
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(rc)
        os.close(w_out)
        os.close(w_err)
        self.pid = pid
        self.stdout = os.fdopen(r_out, "rb")
        self.stderr = os.fdopen(r_err, "rb")
        self.returncode: Optional[int] = None

    def _reap(self, flags: int) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("pytracers (forked)", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: Optional[float] = None) -> Tuple[bytes, bytes]:
        """Read both pipes to EOF, then reap the child."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bufs = {self.stdout: b"", self.stderr: b""}
        sel = selectors.DefaultSelector()
        for f in bufs:
            if not f.closed:
                sel.register(f, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired("pytracers (forked)", timeout or 0)
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        bufs[key.fileobj] += chunk      # type: ignore[index]
                    else:
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
        for f in bufs:
            f.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()) + 5)
        return bufs[self.stdout], bufs[self.stderr]


class Cli:
    """A long-running CLI process: wait until it is tracing, then stop it.

    ``real=True`` runs ``python -m pytracers`` (the must-show items do);
    otherwise the CLI runs in a forked child (see Forked)."""

    def __init__(self, *args: str, real: bool = False) -> None:
        self.proc: Any
        if real:
            self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        else:
            self.proc = Forked(args)
        self.err = b""
        self.held: Dict[str, Set[int]] = {}

    def wait_ready(self, timeout: float = READY_TIMEOUT, must: bool = True) -> bool:
        """Read stderr until the CLI says it is attached; note its BPF ids.
        If it exits first: fail, or (``must=False``) return False."""
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
                        if must:
                            pytest.fail(f"CLI exited ({rc}) before tracing: {text(self.err)}")
                        return False
                    self.err += chunk
        finally:
            sel.close()
        self.held = fd_bpf_ids(self.proc.pid)
        # Attached means a BPF link, or (tp and kprobe before 5.15) a perf
        # event carrying the program; either way the programs are loaded.
        if not self.held["prog"] or not (self.held["link"] or self.held["perf_event"]):
            self.kill()
            pytest.fail(f"the CLI holds no attached program while tracing: {self.held}")
        return True

    def stop(self, sig: int = signal.SIGINT) -> Tuple[int, bytes, str]:
        """Let records already produced reach the reader (its latency bound is
        0.1 s), then send ``sig`` and collect the output."""
        time.sleep(0.3)
        self.proc.send_signal(sig)
        return self.finish()

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
        out, err = self.proc.communicate()
        self.err += err

    def assert_detached(self) -> None:
        """Nothing the CLI attached or loaded is left in the kernel: its
        links are gone, and so are its programs (an attachment through a
        perf event holds its program, so a freed program is a detached one).
        The kernel frees programs after an RCU grace period (tracing programs
        after an RCU-tasks one), so the ids get a few seconds to go."""
        assert self.proc.returncode is not None
        deadline = time.monotonic() + (60.0 if VM_KERNEL else 10.0)
        while True:
            left_links = self.held["link"] & introspect.link_ids()
            left_progs = self.held["prog"] & introspect.prog_ids()
            if not left_links and not left_progs:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not left_links, f"links still attached after the CLI exited: {left_links}"
        assert not left_progs, f"programs still loaded after the CLI exited: {left_progs}"


class Gate:
    """A child that waits for a byte on stdin and then runs ``code``: its pid
    is known before it acts, so a CLI can be started with --pid first."""

    def __init__(self, code: str, comm: Optional[str] = None) -> None:
        """``comm``: run the interpreter through a symlink of that name, so
        the child's command name is unique (for --comm filters)."""
        exe = sys.executable
        self.tmp: Optional[str] = None
        if comm:
            self.tmp = tempfile.mkdtemp(prefix="pytracers-cli-")
            exe = os.path.join(self.tmp, comm)
            os.symlink(os.path.realpath(sys.executable), exe)
        self.proc = subprocess.Popen(
            [exe, "-c", "import os, sys\nsys.stdin.read(1)\n" + code],
            stdin=subprocess.PIPE)
        self.pid = self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=RUN_TIMEOUT) == 0

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def skip_or_fail_unsupported(kind: str, err: str) -> None:
    """The CLI said exit 4 for ``kind``: the conftest skip rule decides."""
    line = err.strip().splitlines()[-1] if err.strip() else ""
    if expected(kind) and VM_KERNEL:
        pytest.fail(f"{kind} should work on {kernel_label()} but the CLI said: {line}")
    if known_lack(kind, NotSupportedError(kind, line)) is None:
        pytest.fail(f"{kind} not supported for an unexpected reason on {kernel_label()}: {line}")
    pytest.skip(f"{kernel_label()} lacks {kind}: {line}")


# A new interpreter costs 10-20 s under qemu TCG: checks of the entry point
# itself, which do not depend on the kernel, run on the host only.
host_only = pytest.mark.skipif(
    bool(VM_KERNEL), reason="kernel-independent check of the `python -m pytracers` entry "
                            "point; run on the host (an interpreter start costs 10-20 s under TCG)")


def summary(err: str) -> Tuple[int, int]:
    """(events seen, lost) from the end-of-run summary line on stderr."""
    m = re.search(r"(\d+) events? seen(?:, \d+ shown)?, (\d+) lost in [\d.]+ s \(([^)]*)\); "
                  r"probes detached", err)
    assert m, f"no summary on stderr: {err}"
    return int(m.group(1)), int(m.group(2))


def counted_summary(err: str) -> Tuple[int, int]:
    """(calls counted, not counted) from `pytracers syscalls`' summary line."""
    m = re.search(r"(\d+) calls? counted in the kernel, (\d+) not counted in [\d.]+ s "
                  r"\(([^)]*)\); probes detached", err)
    assert m, f"no summary on stderr: {err}"
    return int(m.group(1)), int(m.group(2))


# ---- help, usage, exit codes ------------------------------------------------------------

@host_only
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


@host_only
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


@host_only
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
    c = Cli("exec", "--json", "--duration", "2", real=True)
    c.wait_ready()
    child = subprocess.Popen(["/bin/true", "cli-json-marker"])
    child.wait()
    many = ["/bin/true"] + [f"many-{i}" for i in range(1, 40)]      # more than 32 arguments
    long_child = subprocess.Popen(many)
    long_child.wait()
    rc, out, err = c.finish()
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
    assert ev["args_truncated"] is False
    assert not {"argc", "argbuf", "argbuf_len", "argv"} & set(ev)
    assert isinstance(ev["ts_ns"], int) and abs(ev["time"] - time.time()) < 60
    [cut] = [e for e in events if e["pid"] == long_child.pid]
    assert cut["args"] == many[:32] and cut["args_truncated"] is True
    assert not any(k.startswith("_") for k in ev)
    assert all(e["ret"] == 0 for e in events)          # failed execs only with --failed
    seen, lost = summary(err)
    assert seen >= len(events) and lost == 0
    assert "sys_exit_execve with tp: " in err
    c.assert_detached()


@pytest.mark.kind("tp")
def test_exec_human_columns_pid_filter_and_failed(tmp_path):
    """--pid: only that process's execs; --failed: failed ones too (RET is
    -errno); aligned columns under a header."""
    missing = str(tmp_path / "no-such-program")
    with Gate(f"try:\n    os.execv({missing!r}, [{missing!r}, 'x'])\nexcept OSError:\n    pass\n"
              "os.execv('/bin/true', ['/bin/true', 'pid-filter', 'two words'])") as gate:
        c = Cli("exec", "--pid", str(gate.pid), "--failed")
        c.wait_ready()
        subprocess.Popen(["/bin/true", "not-this-one"]).wait()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
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
    c.assert_detached()


@pytest.mark.kind("tp")
def test_exec_columns_show_the_whole_command_line_and_mark_truncation(tmp_path):
    """ARGS is the whole command line (empty arguments as ''), and ends with
    " ..." when the record could not hold all of it (here: 40 arguments)."""
    missing = str(tmp_path / "no-such-program")
    many = [missing] + [f"w{i}" for i in range(1, 40)]
    with Gate(f"try:\n    os.execv({missing!r}, {many!r})\nexcept OSError:\n    pass\n"
              "os.execv('/bin/true', ['/bin/true', '', 'two words', 'x'])") as gate:
        c = Cli("exec", "--pid", str(gate.pid), "--failed")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    header, failed, row = text(out).splitlines()
    assert failed.split()[5] == "-2"
    assert failed.endswith(" " + " ".join(many[:32]) + " ..."), failed
    assert row.endswith(" /bin/true '' 'two words' x"), row
    assert summary(err) == (2, 0)
    c.assert_detached()


@pytest.mark.kind("tp")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_cleanly(sig):
    c = Cli("exec", "--json")
    c.wait_ready()
    child = subprocess.Popen(["/bin/true", "before-signal"])
    child.wait()
    time.sleep(0.3)
    c.proc.send_signal(sig)
    rc, out, err = c.finish()
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"stopped by {sig.name}" in err, err
    seen, lost = summary(err)
    assert lost == 0 and seen >= 1
    events = json_lines(out)
    assert any(e["pid"] == child.pid and e["filename"] == "/bin/true" for e in events)
    c.assert_detached()


# ---- list tracepoints -------------------------------------------------------------------

def test_list_tracepoints_json_and_table(capsys):
    assert cli.main(["list", "tracepoints", "sched:sched_process_e*", "--json"]) == 0
    rows = {d["tracepoint"]: d for d in json_lines(capsys.readouterr().out.encode())}
    assert {"sched:sched_process_exec", "sched:sched_process_exit"} <= set(rows)
    assert all(t.startswith("sched:sched_process_e") for t in rows)
    ex = rows["sched:sched_process_exec"]
    assert (ex["category"], ex["name"]) == ("sched", "sched_process_exec")
    assert ex["kinds"][:2] == ["tp", "raw_tp"]
    # sched_process_exec has a BTF-typed tracepoint on every kernel we run on
    assert "tp_btf" in ex["kinds"]

    assert cli.main(["list", "tracepoints", "sys_enter_openat"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["TRACEPOINT", "KINDS", "NOTE"]
    assert lines[1].split()[:2] == ["syscalls:sys_enter_openat", "tp"]
    assert "only via sys_enter" in lines[1]
    assert "1 tracepoint match" in err


def test_list_tracepoints_no_match_is_status_3(capsys):
    assert cli.main(["list", "tracepoints", "no_such_tracepoint_xyz*"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "no tracepoint matches" in err and "(hint: " in err


# ---- agent slot -------------------------------------------------------------------------

def test_agent_subcommand_is_wired(capsys, monkeypatch):
    """`pytracers agent` has the agent's own options; without prometheus_client
    (the `agent` extra) it fails in one line, status 4, saying what to install."""
    assert cli.main(["agent", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--listen" in out and "--syscalls" in out
    monkeypatch.setitem(sys.modules, "prometheus_client", None)     # as if not installed
    assert cli.main(["agent", "--listen", "127.0.0.1:1", "--duration", "1"]) == 4
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "agent is not available" in err and "prometheus_client is missing" in err
    assert "(hint: pip install 'pytracers[agent]')" in err


@pytest.mark.kind("tp_btf")
def test_exec_tp_btf_kind():
    """--kind tp_btf: the same execs seen through sched_process_exec."""
    with Gate("os.execv('/bin/true', ['/bin/true', 'btf'])") as gate:
        c = Cli("exec", "--kind", "tp_btf", "--pid", str(gate.pid), "--json")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    assert "sched:sched_process_exec with tp_btf" in err
    events = json_lines(out)
    assert [(e["event"], e["pid"], e["ppid"], e["comm"], e["filename"]) for e in events] == [
        ("exec", gate.pid, os.getpid(), "true", "/bin/true")]
    assert summary(err) == (1, 0)
    c.assert_detached()


# ---- doctor -----------------------------------------------------------------------------

def test_doctor_json_reports_every_kind_with_its_reason(capsys):
    """Must show: on the host tp/raw_tp/tp_btf are available and kprobe/fentry
    are not, each with its reason; on the VM kernels kprobe/fentry work."""
    r = run("doctor", "--json")
    assert r.returncode == 0, text(r.stderr)
    rows = {d["feature"]: d for d in json_lines(r.stdout)}
    assert set(rows) == {"btf", "ringbuf", "tp", "raw_tp", "tp_btf", "kprobe", "kretprobe",
                         "kprobe_multi", "fentry", "fexit", "fmod_ret", "uprobe", "uretprobe",
                         "usdt", "perf_event", "stacks", "cookies", "tracefs", "lockdown"}
    for d in rows.values():
        assert isinstance(d["available"], bool) and d["reason"], d
        if not d["available"]:
            assert d["conclusive"], d          # run as root: every no is a real answer
    for k in ("btf", "ringbuf", "tp", "raw_tp", "tp_btf", "tracefs", "perf_event", "stacks"):
        assert rows[k]["available"], rows[k]
    if VM_KERNEL:
        for k in ("kprobe", "kretprobe", "fentry", "fexit", "kprobe_multi", "usdt"):
            assert rows[k]["available"] is expected(k), rows[k]
    else:
        from pytracers.kernel.host import lockdown_mode, no_kprobes_reason
        if no_kprobes_reason():                  # this CI host: CONFIG_KPROBES off
            assert not rows["kprobe"]["available"]
            assert "CONFIG_KPROBES is off" in rows["kprobe"]["reason"]
            assert rows["kprobe"]["fix"]
        if lockdown_mode() not in (None, "none"):   # this CI host: trampolines refused
            assert not rows["fentry"]["available"]
            assert "EPERM" in rows["fentry"]["reason"]
            assert rows["fentry"]["fix"]
    if VM_KERNEL:
        return       # the table's layout is the same everywhere; probing again costs ~15 s
    # the table for people says the same
    assert cli.main(["doctor"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["FEATURE", "OK", "REASON"]
    by_name = {line.split()[0]: line for line in table[1:]}
    for name, d in rows.items():
        assert by_name[name].split()[1] == ("yes" if d["available"] else "no"), by_name[name]
        assert d["reason"][:30] in by_name[name]


# ---- trace ------------------------------------------------------------------------------

def test_trace_unknown_function_is_status_3_with_suggestions():
    """Must show: `pytracers trace no_such_function_xyz` exits non-zero with a
    one-line message and suggestions."""
    err = assert_one_line_error(run("trace", "no_such_function_xyz"), 3,
                                "'no_such_function_xyz' not found", "did you mean: ",
                                "list functions")
    suggestions = err.split("did you mean: ", 1)[1].split("?", 1)[0].split(", ")
    assert 1 <= len(suggestions) <= 5 and all(re.fullmatch(r"\w+", s) for s in suggestions)


@pytest.mark.parametrize("spec, kind, by", [
    pytest.param("syscall:getppid", "tp", "pid", marks=pytest.mark.kind("tp")),
    pytest.param("raw_tp:getppid", "raw_tp", "comm", marks=pytest.mark.kind("raw_tp")),
    pytest.param("tp_btf:getppid", "tp_btf", "pid", marks=pytest.mark.kind("tp_btf")),
])
def test_trace_syscall_exact_events(spec, kind, by):
    comm = "pt-cli-getppid"
    with Gate("for _ in range(3): os.getppid()", comm=comm) as gate:
        filt = ["--pid", str(gate.pid)] if by == "pid" else ["--comm", comm]
        c = Cli("trace", spec, *filt, "--json")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    assert f"syscall getppid with {kind}: " in err, err
    events = json_lines(out)
    assert len(events) == 3, events
    for e in events:
        assert (e["event"], e["name"], e["id"]) == ("syscall", "getppid", GETPPID_NR)
        assert e["pid"] == e["tid"] == gate.pid
        assert e["ret"] == os.getpid()            # getppid() of our child: us
        assert e["args"] == {}
        assert e["latency_ns"] > 0 and e["comm"] == comm
        assert "raw_args" not in e and not any(k.startswith("_") for k in e)
    assert summary(err) == (3, 0)
    c.assert_detached()


@pytest.mark.kind("tp_btf")
def test_trace_syscall_no_latency():
    """--no-latency: one program per syscall, at exit; the records carry the
    arguments and return value and a null latency."""
    with Gate("os.getpgid(0); os.getppid()") as gate:
        c = Cli("trace", "tp_btf:getppid", "--no-latency", "--pid", str(gate.pid), "--json")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    assert "without latency: one program per syscall" in err, err
    events = json_lines(out)
    assert [(e["name"], e["args"], e["ret"], e["latency_ns"]) for e in events] == \
        [("getppid", {}, os.getpid(), None)], events
    assert summary(err) == (1, 0)
    c.assert_detached()


# vfs_write(file, buf, count, pos): the same name and parameters on every
# kernel of the matrix (do_unlinkat, for one, is gone by 7.2).
WRITE_GATE = ("fd = os.open('/dev/null', os.O_WRONLY)\n"
              "os.write(fd, b'x' * 12345)\nos.write(fd, b'y' * 777)\nos.close(fd)")


def _check_write_events(events: List[dict], pid: int) -> None:
    """Two vfs_write calls of our child: count and return value exact."""
    assert [(e["event"], e["name"], e["pid"], e["args"]["count"], e["ret"]) for e in events] \
        == [("function", "vfs_write", pid, 12345, 12345),
            ("function", "vfs_write", pid, 777, 777)], events
    for e in events:
        assert e["tid"] == pid and set(e["args"]) == {"file", "buf", "count", "pos"}
        assert e["latency_ns"] is not None and e["latency_ns"] > 0
        assert e["entry"] is False and not {"flags", "raw_args"} & set(e)


@pytest.mark.parametrize("kind", [pytest.param("fentry", marks=pytest.mark.kind("fentry")),
                                  pytest.param("kprobe", marks=pytest.mark.kind("kprobe"))])
def test_trace_function_exact_events(kind):
    with Gate(WRITE_GATE) as gate:
        c = Cli("trace", f"{kind}:vfs_write", "--pid", str(gate.pid), "--json")
        if not c.wait_ready(must=False):
            assert c.proc.returncode == 4, c.err
            skip_or_fail_unsupported(kind, text(c.err))
        gate.release()
    rc, out, err = c.stop(signal.SIGTERM)
    assert rc == 0, err
    assert f"vfs_write with {kind}: --kind {kind} requested" in err, err
    _check_write_events(json_lines(out), gate.pid)
    assert summary(err) == (2, 0)
    c.assert_detached()


def test_trace_function_automatic_choice():
    """fentry first, kprobe when trampolines are refused; neither: status 4
    naming both refusals, with a hint that works on this kernel."""
    from pytracers import features
    fentry, kprobe = features.probe_one("fentry"), features.probe_one("kprobe")
    if not fentry and not kprobe:
        assert_one_line_error(run("trace", "vfs_write"), 4, "not supported",
                              f"fentry: {fentry.reason}", f"kprobe: {kprobe.reason}",
                              "trace syscall:NAME", "doctor")
        fn = syscall_function("getppid")      # __x64_sys_getppid, __arm64_sys_getppid
        assert_one_line_error(run("trace", fn), 4, f"trace --stable {fn}")
        return
    chosen = "fentry" if fentry else "kprobe"
    with Gate(WRITE_GATE) as gate:
        c = Cli("trace", "vfs_write", "--pid", str(gate.pid), "--json")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    assert f"vfs_write with {chosen}: " in err
    assert len([ln for ln in err.splitlines() if " with " in ln]) == 1   # said once
    _check_write_events(json_lines(out), gate.pid)
    c.assert_detached()


# ---- syscalls ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra, kind", [
    pytest.param(["-s", "getppid"], "tp", marks=pytest.mark.kind("tp")),
    pytest.param([], "tp_btf", marks=pytest.mark.kind("tp_btf")),   # all syscalls
])
def test_syscalls_counts_and_latency_per_process(extra, kind):
    with Gate("for _ in range(37): os.getppid()") as gate:
        c = Cli("syscalls", *extra, "--pid", str(gate.pid), "--json", "--top", "0")
        c.wait_ready()
        gate.release()
    rc, out, err = c.stop(signal.SIGTERM)
    assert rc == 0, err
    assert f"with {kind}: " in err and "stopped by SIGTERM" in err
    rows = json_lines(out)
    assert rows and all(r["event"] == "syscall_stats" and r["pid"] == gate.pid for r in rows)
    mine = [r for r in rows if r["syscall"] == "getppid"]
    assert len(mine) == 1, rows
    r = mine[0]
    assert (r["count"], r["errors"]) == (37, 0)
    assert r["total_ns"] > 0 and r["avg_ns"] == r["total_ns"] // 37
    assert 0 < r["p50_ns"] <= r["p99_ns"] and r["avg_ns"] <= r["max_ns"]
    assert r["p99_ns"] <= r["max_ns"] * 1.25          # a bucket's upper bound
    seen, lost = counted_summary(err)
    assert lost == 0 and seen == sum(x["count"] for x in rows)
    assert "counted in the kernel per process and syscall" in err
    if kind == "tp":
        assert {x["syscall"] for x in rows} == {"getppid"}
    c.assert_detached()


def test_syscalls_tp_without_names_is_a_usage_error(capsys):
    assert cli.main(["syscalls", "--kind", "tp", "--duration", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "needs the syscalls named" in err and "-s NAME" in err


@pytest.mark.kind("tp")
def test_closed_stdout_ends_cleanly():
    """`pytracers exec | head -1`: the reader goes away, the CLI stops, detaches
    and exits 0 without a traceback."""
    c = Cli("exec")
    c.wait_ready()
    c.proc.stdout.close()                       # as `head` does once it has enough
    for _ in range(3):
        subprocess.run(["/bin/true"], check=True)
    rc = c.proc.wait(timeout=RUN_TIMEOUT)
    _, err = c.proc.communicate(timeout=RUN_TIMEOUT)
    err = text(c.err + err)
    assert rc == 0, err
    assert "(stdout closed); probes detached" in err and "Traceback" not in err
    c.assert_detached()


@pytest.mark.kind("tp")
def test_trace_json_counts_the_batch_a_closed_stdout_cuts_short():
    """`trace syscall:... --json | head`: the batch whose write finds the pipe
    closed was taken from the ring all the same, and the summary counts it
    (it said "0 events seen, 2000 shown" when only finished reads counted)."""
    import numpy  # noqa: F401  (in the forked CLI too: batches from its first read)
    calls = 2000
    c = Cli("trace", "syscall:getpgid", "-p", str(os.getpid()), "--json")
    c.wait_ready()
    c.proc.stdout.close()
    for _ in range(calls):
        os.getpgid(0)
    rc = c.proc.wait(timeout=RUN_TIMEOUT)
    _, err = c.proc.communicate(timeout=RUN_TIMEOUT)
    err = text(c.err + err)
    assert rc == 0, err
    assert "(stdout closed); probes detached" in err and "Traceback" not in err
    seen, lost = summary(err)
    m = re.search(r"seen, (\d+) shown", err)
    shown = int(m.group(1)) if m else seen
    # it stops at the first failed write: what it took by then, at least one batch
    assert lost == 0 and 0 < seen <= calls and shown <= seen, err
    c.assert_detached()


# ---- in-process: target syntax and exit status of each error class ---------------------

@pytest.mark.parametrize("spec, kind, want", [
    ("do_unlinkat", None, ("function", ["do_unlinkat"], None)),
    ("fentry:do_unlinkat", None, ("function", ["do_unlinkat"], "fentry")),
    ("do_unlinkat", "kprobe", ("function", ["do_unlinkat"], "kprobe")),
    ("vfs_*", None, ("function", ["vfs_*"], "kprobe_multi")),
    ("syscall:openat,read", None, ("syscall", ["openat", "read"], None)),
    ("tp_btf:openat", None, ("syscall", ["openat"], "tp_btf")),
    ("openat", "raw_tp", ("syscall", ["openat"], "raw_tp")),
    ("syscalls:sys_enter_openat", None, ("syscall", ["openat"], None)),
    ("tp:syscalls:sys_exit_read", None, ("syscall", ["read"], "tp")),
    ("sched:sched_process_fork", None, ("process", ["fork"], "tp_btf")),
    ("tp_btf:sched_process_exit", None, ("process", ["exit"], "tp_btf")),
    ("sched:sched_switch", None, ("tracepoint", ["sched:sched_switch"], None)),
    ("tp:sched:sched_process_exec", None, ("tracepoint", ["sched:sched_process_exec"], "tp")),
    ("task:task_rename", "tp", ("tracepoint", ["task:task_rename"], "tp")),
])
def test_parse_target(spec, kind, want):
    t = cli.parse_target(spec, kind)
    assert (t.what, t.names, t.kind) == want


@pytest.mark.parametrize("spec, kind, code", [
    ("fentry:x", "kprobe", 2),            # two different kinds
    ("fentry:", None, 2),                 # no target
    ("syscall:", None, 2),
    ("kprobe:syscall:openat", None, 4),   # syscalls are tp/raw_tp/tp_btf
    ("raw_tp:sched:sched_process_exec", None, 4),   # process events: tp_btf or tp
    ("tp_btf:sched:sched_switch", None, 4),     # other tracepoints: tp only
    ("sched:sched_*", None, 2),                 # one tracepoint, not a glob
])
def test_parse_target_errors(spec, kind, code):
    with pytest.raises(cli.CliError) as ei:
        cli.parse_target(spec, kind)
    assert ei.value.code == code and ei.value.hint


def test_every_error_class_has_its_exit_status():
    from pytracers import errors as E
    cases = [
        (E.TargetNotFoundError("kernel function", "nope_fn", ["nope_fm"]), 3, "list functions"),
        (E.TargetNotFoundError("tracepoint", "a:b"), 3, "list tracepoints"),
        (E.NotSupportedError("kprobe", "CONFIG_KPROBES is off", hint="use kind='fentry'"), 4,
         "--kind fentry"),
        (E.PermissionDeniedError("load", "CAP_BPF"), 5, "run as root"),
        (E.TracefsError("mount failed", 1), 5, "run as root"),     # EPERM
        (E.BadArgumentError("comm too long"), 2, "--help"),
        (E.VerifierError("p", 13, "line 1\nline 2\nR1 invalid mem access"), 1, "--debug"),
        (E.LoadError("load x", 12), 1, ""),
        (RuntimeError("boom"), 1, "bug"),
    ]
    for exc, code, hint in cases:
        got, msg, got_hint = cli.classify(exc, "trace")
        assert got == code, (exc, got)
        assert "\n" not in msg and msg, exc
        assert hint in got_hint, (exc, got_hint)


def test_list_functions_says_which_kinds_attach(capsys):
    """One row per function; a kind the kernel lacks is a "no" with the
    kernel's reason, a kind it has is decided per function (can_attach)."""
    from pytracers import features
    assert cli.main(["list", "functions", "vfs_write", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json_lines(out.encode())
    assert [r["function"] for r in rows] == ["vfs_write"]
    row = rows[0]
    for kind in ("fentry", "kprobe"):
        f = features.probe_one(kind)
        assert row[kind]["ok"] is bool(f.supported), (kind, row[kind])
        if not f.supported:
            assert f.reason in row[kind]["reason"]
            assert f"no*: {kind} is not available on this kernel" in err
        else:
            assert features.can_attach(kind, "vfs_write").reason == row[kind]["reason"]
    if features.kallsyms_functions() is not None:
        assert "kallsyms" in row["symbol"]        # vfs_write is a real symbol everywhere
    assert cli.main(["list", "functions", "vfs_writ*", "--kind", "fentry"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["FUNCTION", "FENTRY", "SYMBOL", "WHY", "NOT"]
    assert "vfs_write" in [ln.split()[0] for ln in lines[1:]]
