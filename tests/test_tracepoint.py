"""TracepointTracer: any tracepoint, its fields decoded by the running
kernel's format file.  Each test causes the event itself (a rename, a signal,
an exec by a child it controls) and checks the decoded values exactly."""
from __future__ import annotations

import ctypes
import os
import signal
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

import pytracers
from pytracers.tracers.syscalls import syscall_number
from pytracers import cli, tracefs
from pytracers.errors import (BadArgumentError, BadTypeError, NotSupportedError,
                              TargetNotFoundError)
from pytracers.tracers import TracepointTracer
from pytracers.tracers.tracepoint import TP_MAX, TP_SKIP

from test_cli import Cli, json_lines, summary, text

pytestmark = pytest.mark.kind("tp")

PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def _set_comm(name: bytes) -> None:
    if _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _my_comm() -> str:
    with open("/proc/thread-self/comm") as f:
        return f.read().rstrip("\n")


class Child:
    """A forked child that waits for a byte, then runs ``action`` and exits 0
    (or blocks until killed with ``then_block``).  Its pid is known before it
    acts; no new interpreter (costly under qemu TCG).  ``ready()`` waits until
    it has done its setup (``setup`` runs right after the fork)."""

    def __init__(self, action: Callable[[], None] = lambda: None,
                 setup: Callable[[], None] = lambda: None, then_block: bool = False) -> None:
        go_r, go_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                os.close(go_w)
                os.close(up_r)
                setup()
                os.write(up_w, b"u")
                os.read(go_r, 1)
                action()
                if then_block:
                    os.read(go_r, 1)            # EOF when the parent closes: never here
                    signal.pause()
                rc = 0
            finally:
                os._exit(rc)
        os.close(go_r)
        os.close(up_w)
        self.pid = pid
        self._go = go_w
        self._up = up_r
        self.status: Optional[int] = None

    def ready(self) -> "Child":
        assert os.read(self._up, 1) == b"u"
        return self

    def go(self) -> None:
        os.write(self._go, b"g")

    def wait(self) -> int:
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()
        for fd in (self._go, self._up):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _events(t: Any, pred: Callable[[Any], bool], n: int = 1, timeout: float = 5.0) -> List[Any]:
    """The events matching ``pred``: exactly ``n`` (waiting up to ``timeout``
    for them, then a little longer for any extra one)."""
    got: List[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [ev for ev in t.read(0.2) if pred(ev)]
    got += [ev for ev in t.read(0.3) if pred(ev)]
    assert len(got) == n, got
    return got


# ---------------------------------------------------------------- exact events

def test_task_rename_oldcomm_newcomm():
    """prctl(PR_SET_NAME) in a child: task:task_rename with the child as the
    current task, the old and the new name exact."""
    old = _my_comm()
    with TracepointTracer("task:task_rename") as t, Child(lambda: _set_comm(b"pt-tp-renamed")) \
            as child:
        assert t.kind == "tp" and "task:task_rename" in t.why
        child.ready()
        child.go()
        assert child.wait() == 0
        ev, = _events(t, lambda e: e.pid == child.pid)
        assert t.lost == 0 and t.truncated == 0
    # the tracepoint fires just before the task's comm changes
    assert (ev.pid, ev.tid, ev.comm) == (child.pid, child.pid, old)
    assert ev.oldcomm == ev.fields["oldcomm"] == old
    assert ev.newcomm == ev.fields["newcomm"] == "pt-tp-renamed"
    assert ev.fields["pid"] == ev.tp_pid == child.pid     # the renamed task (the current one)
    assert not any(k.startswith("common_") for k in ev.fields)
    assert ev.tracepoint == "task:task_rename"


def test_signal_generate_sig_pid_comm():
    """kill(child, SIGUSR1) from this process: signal:signal_generate in our
    context, naming the target child, its comm and the signal."""
    with Child(setup=lambda: _set_comm(b"pt-tp-target"), then_block=True) as child:
        child.ready()
        with pytracers.trace_tracepoint("signal:signal_generate", pid=os.getpid()) as t:
            assert t.kind == "tp" and "chosen over raw_tp/tp_btf" in t.why
            os.kill(child.pid, signal.SIGUSR1)
            assert os.WTERMSIG(child.wait()) == signal.SIGUSR1
            ev, = _events(t, lambda e: e.fields["pid"] == child.pid)
    f = ev.fields
    assert (ev.pid, ev.tid, ev.comm) == (os.getpid(), threading.get_native_id(), _my_comm())
    assert (f["sig"], f["pid"], f["comm"]) == (signal.SIGUSR1, child.pid, "pt-tp-target")
    assert (ev.sig, ev.tp_pid, ev.tp_comm) == (signal.SIGUSR1, child.pid, "pt-tp-target")
    assert (f["errno"], f["code"], f["result"]) == (0, 0, 0)    # SI_USER, delivered
    assert f["group"] == 1                                        # kill(2) signals the group


def _exec_as(path: str) -> Callable[[], None]:
    return lambda: os.execv(path, [path])


@pytest.fixture
def true_link():
    """/bin/true behind a symlink of a unique name (the exec'd comm)."""
    d = tempfile.mkdtemp(prefix="pytracers-tp-")
    link = os.path.join(d, "pt-tp-exec")
    os.symlink("/bin/true", link)
    yield link
    os.unlink(link)
    os.rmdir(d)


def test_sched_process_exec_data_loc_filename(true_link):
    """The __data_loc char[] filename is decoded exactly; the header is the
    exec'd task with its new comm."""
    with TracepointTracer("sched:sched_process_exec", comm="pt-tp-exec") as t, \
            Child(_exec_as(true_link)) as child:
        child.ready()
        child.go()
        assert child.wait() == 0
        ev, = _events(t, lambda e: True)
        assert t.truncated == 0 and t.lost == 0
    assert (ev.pid, ev.tid, ev.comm) == (child.pid, child.pid, "pt-tp-exec")
    assert ev.filename == ev.fields["filename"] == true_link
    assert (ev.fields["pid"], ev.fields["old_pid"]) == (child.pid, child.pid)
    assert t.copy_bytes > max(f.offset + f.size for f in t.fields) - TP_SKIP


def test_payload_past_the_copied_bytes_is_none_and_counted(true_link):
    """payload_bytes=4: the filename does not fit -- None, counted in
    t.truncated; the fixed fields are still exact."""
    with TracepointTracer("sched:sched_process_exec", comm="pt-tp-exec", payload_bytes=4) \
            as t, Child(_exec_as(true_link)) as child:
        fixed = max(f.offset + f.size for f in t.fields) - TP_SKIP
        assert t.copy_bytes == fixed + 4
        child.ready()
        child.go()
        assert child.wait() == 0
        ev, = _events(t, lambda e: True)
        assert ev.filename is None and ev.fields["filename"] is None
        assert (ev.fields["pid"], ev.fields["old_pid"]) == (child.pid, child.pid)
        assert t.truncated == 1


def test_sched_switch_fixed_fields():
    """Sleeping switches this thread out: prev_pid and prev_comm are ours."""
    tid = threading.get_native_id()
    with TracepointTracer("sched:sched_switch", pid=os.getpid()) as t:
        assert t.copy_bytes == max(f.offset + f.size for f in t.fields) - TP_SKIP
        time.sleep(0.05)
        evs = [e for e in t.read(1.0) if e.fields["prev_pid"] == tid]
    assert evs, "no sched_switch away from this thread"
    for ev in evs:
        assert (ev.pid, ev.tid, ev.comm) == (os.getpid(), tid, _my_comm())
        assert ev.prev_comm == _my_comm() and ev.next_pid != tid
        assert isinstance(ev.next_comm, str)


def test_syscalls_category_decodes_the_bpf_context():
    """syscalls:* hand BPF the syscall number and the argument slots (or the
    return value): those fields, exact."""
    with TracepointTracer("syscalls:sys_exit_getppid", pid=os.getpid()) as t:
        ppid = os.getppid()
        ev, = _events(t, lambda e: e.tid == threading.get_native_id())
    nr = syscall_number("getppid")           # 110 on x86-64, 173 on arm64
    assert ev.fields == {"__syscall_nr": nr, "ret": ppid}
    assert ev.syscall_nr == nr and ev.ret == ppid


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("name", ["sched", "sched:", ":sched_switch", "sched:sched_*",
                                  "../sched:sched_switch", "sched:sched_switch/../x",
                                  "sched: sched_switch"])
def test_malformed_name_is_bad_argument(name):
    with pytest.raises(BadArgumentError, match="category:name"):
        TracepointTracer(name)


def test_bad_argument_types_and_values():
    with pytest.raises(BadTypeError):
        TracepointTracer(42)  # type: ignore[arg-type]
    with pytest.raises(BadArgumentError, match="payload_bytes"):
        TracepointTracer("sched:sched_switch", payload_bytes=TP_MAX + 1)
    with pytest.raises(BadArgumentError, match="tp only"):
        pytracers.trace_tracepoint("sched:sched_switch", kind="raw_tp")


def test_unknown_tracepoint_suggests_close_names():
    with pytest.raises(TargetNotFoundError) as ei:
        TracepointTracer("sched:sched_swich")
    assert ei.value.kind == "tracepoint" and "sched:sched_switch" in ei.value.suggestions


def test_without_tracefs_not_supported_names_it(monkeypatch, tmp_path):
    """No tracefs anywhere (and no mount point to mount it on): NotSupportedError."""
    monkeypatch.setattr(tracefs, "_root", None)
    monkeypatch.setattr(tracefs, "TRACEFS", str(tmp_path / "no-tracing"))
    monkeypatch.setattr(tracefs, "DEBUGFS_TRACING", str(tmp_path / "no-debug-tracing"))
    with pytest.raises(NotSupportedError) as ei:
        TracepointTracer("sched:sched_switch")
    assert ei.value.feature == "tracefs" and "does not exist" in ei.value.reason


@pytest.mark.kernel_independent
def test_parse_format_types():
    text_ = """name: demo
ID: 1
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;
\tfield:const char * ptr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void *addr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:0;
\tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:48;\tsize:28;\tsigned:0;
\tfield:__rel_loc u8[] blob;\toffset:76;\tsize:4;\tsigned:0;

print fmt: "..."
"""
    F = tracefs.Field
    assert tracefs.parse_format(text_) == [
        F("common_type", "unsigned short", 0, 2, False), F("common_pid", "int", 4, 4, True),
        F("name", "__data_loc char[]", 8, 4, False), F("ptr", "const char *", 16, 8, False),
        F("addr", "void *", 24, 8, False), F("comm", "char[16]", 32, 16, False),
        F("saddr", "__u8[sizeof(structsockaddr_in6)]", 48, 28, False),
        F("blob", "__rel_loc u8[]", 76, 4, False)]


@pytest.mark.kernel_independent
def test_object_has_no_core_relocations():
    """tracepoint.bpf.o reads no kernel struct: its .BTF.ext holds no CO-RE
    relocations, so libbpf loads it without the kernel's BTF."""
    import struct
    from elftools.elf.elffile import ELFFile
    with open(pytracers.object_path("tracepoint"), "rb") as f:
        ext = ELFFile(f).get_section_by_name(".BTF.ext").data()
    hdr_len = struct.unpack_from("<I", ext, 4)[0]
    assert hdr_len < 32 or struct.unpack_from("<I", ext, 28)[0] == 0


# ---------------------------------------------------------------- the command line

def test_cli_trace_task_rename_json():
    """`pytracers trace task:task_rename --pid P --json`: one JSON line for the
    child's rename, fields by their kernel names; nothing left attached."""
    old = _my_comm()
    with Child(lambda: _set_comm(b"pt-tp-cli")) as child:
        child.ready()
        c = Cli("trace", "task:task_rename", "--pid", str(child.pid), "--json")
        c.wait_ready()
        child.go()
        assert child.wait() == 0
    rc, out, err = c.stop(signal.SIGINT)
    assert rc == 0, err
    assert "task:task_rename with tp: " in err, err
    events = json_lines(out)
    assert len(events) == 1, events
    e = events[0]
    assert (e["event"], e["tracepoint"]) == ("tracepoint", "task:task_rename")
    assert (e["pid"], e["tid"], e["comm"]) == (child.pid, child.pid, old)
    assert (e["fields"]["oldcomm"], e["fields"]["newcomm"]) == (old, "pt-tp-cli")
    assert summary(err) == (1, 0)
    c.assert_detached()


def test_cli_trace_signal_generate_human_line():
    """Human mode: a header, then one line per event with name=value fields."""
    with Child(setup=lambda: _set_comm(b"pt-tp-sig"), then_block=True) as child:
        child.ready()
        c = Cli("trace", "signal:signal_generate", "--pid", str(os.getpid()))
        c.wait_ready()
        os.kill(child.pid, signal.SIGUSR2)
        assert os.WTERMSIG(child.wait()) == signal.SIGUSR2
        rc, out, err = c.stop(signal.SIGTERM)
    assert rc == 0, err
    lines = text(out).splitlines()
    assert lines[0].split() == ["TIME", "PCOMM", "PID", "TID", "CPU", "FIELDS"], lines
    mine = [ln for ln in lines[1:] if f" pid={child.pid} " in ln and " sig=12 " in ln]
    assert len(mine) == 1, lines
    me = os.getpid()
    assert mine[0].split()[1:4] == [_my_comm(), str(me), str(threading.get_native_id())], mine
    assert f"comm=pt-tp-sig pid={child.pid} group=1 result=0" in mine[0], mine
    c.assert_detached()


@pytest.mark.parametrize("spec, code, needle", [
    ("sched:sched_swich", 3, "did you mean: sched:sched_switch"),
    ("raw_tp:sched:sched_switch", 4, "traced with tp, not raw_tp"),
    ("sched:sched_*", 2, "category:name"),
])
def test_cli_errors(spec, code, needle, capsys):
    assert cli.main(["trace", spec, "--duration", "1"]) == code
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert needle in err and "(hint: " in err, err

