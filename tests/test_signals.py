"""Signals, forks and callback errors leave nothing attached and nothing lost.

Each signal test forks a child that loads and attaches real programs and
reports the kernel ids of what it holds (from /proc/self/fdinfo); the parent
signals it and then checks, by walking the kernel's ids, that every one of
those programs, maps and links is gone.  Only the child's own ids are
checked, so other processes' BPF objects do not matter.  (Forked, not
spawned: a new Python that imports pytracers takes ~15 s under qemu.)
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from typing import IO, Any, Callable, Dict, List, Set, Tuple

import pytest

import pytracers
from pytracers.tracers.syscalls import syscall_number
from pytracers import introspect

EXEC = pytracers.object_path("exec")
SYSCALLS = pytracers.object_path("syscalls")

Say = Callable[[str], None]


def report(say: Say) -> None:
    ids = introspect.process_ids()
    say("IDS " + " ".join(f"{k}:{i}" for k, v in ids.items() for i in v))


def load_and_attach() -> Any:
    o = pytracers.open(SYSCALLS)
    o.only("sc_raw_enter", "sc_raw_exit")
    o.config["cfg_filter_ids"] = 1
    o.config["cfg_pid"] = os.getpid()
    obj = o.load()
    obj.maps["syscall_ids"][110] = b"\x01"
    for p in obj.programs.values():
        p.attach()
    return obj


def _ids(line: str) -> Dict[str, Set[int]]:
    out: Dict[str, Set[int]] = {"progs": set(), "maps": set(), "links": set()}
    for item in line.split()[1:]:
        k, _, v = item.partition(":")
        out[k].add(int(v))
    return out


def _merge(into: Dict[str, Set[int]], more: Dict[str, Any]) -> None:
    for k, v in more.items():
        into[k] |= set(v)


def _gone(ids, timeout: float = 10.0):
    return introspect.still_present(ids, timeout)


class Child:
    """A forked child running ``body(say)``; ``say`` writes a line to the parent.
    KeyboardInterrupt and SystemExit are reported and turned into exit codes
    (130, the SystemExit code); signals keep their default actions."""

    def __init__(self, body: Callable[[Say], None]) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            code = 0

            def say(line: str) -> None:
                os.write(w, (line + "\n").encode())
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                body(say)
            except KeyboardInterrupt:
                say("KeyboardInterrupt")
                code = 130
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:  # noqa: BLE001
                say(f"ERROR {e!r}")
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        self.pid = pid
        self.out: IO[str] = os.fdopen(r)
        self.status: Any = None
        self.lines: List[str] = []

    def read_until(self, word: str, ids: Dict[str, Set[int]]) -> None:
        while True:
            line = self.out.readline()
            if not line:
                raise AssertionError(f"child exited before {word!r}: {self.lines}")
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("IDS"):
                _merge(ids, _ids(line))
            if line == word:
                return

    def wait(self, timeout: float = 60.0) -> Tuple[List[str], int]:
        """The rest of its output and its wait status (killed after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
            else:
                time.sleep(0.02)
        self.lines += [ln.rstrip("\n") for ln in self.out.readlines()]
        self.out.close()
        return self.lines, self.status

    def reap(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()


@pytest.mark.kind("raw_tp")
@pytest.mark.parametrize("sig,handled", [
    (signal.SIGINT, "default"),        # KeyboardInterrupt inside poll()
    (signal.SIGTERM, "default"),       # killed: the kernel releases everything
    (signal.SIGTERM, "exit"),          # an agent turning SIGTERM into SystemExit
], ids=["sigint-keyboardinterrupt", "sigterm-killed", "sigterm-systemexit"])
def test_signal_during_poll_leaves_nothing_attached(sig: int, handled: str) -> None:
    def body(say: Say) -> None:
        if handled == "exit":
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
        with load_and_attach() as obj:
            rb = obj.ring_buffer()
            report(say)
            say("READY")
            rb.poll(None, lambda r: None)      # blocks: nothing matches
        say("UNREACHED")

    child = Child(body)
    ids: Dict[str, Set[int]] = {"progs": set(), "maps": set(), "links": set()}
    try:
        child.read_until("READY", ids)
        assert ids["links"] and ids["progs"] and ids["maps"], ids
        assert _gone(ids, timeout=0) == ids, "the child's objects must exist while it runs"
        time.sleep(0.2)                    # let it block in epoll
        os.kill(child.pid, sig)
        lines, status = child.wait()
    finally:
        child.reap()
    assert "UNREACHED" not in lines
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in lines and os.WEXITSTATUS(status) == 130
    elif handled == "exit":
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    left = _gone(ids)
    print(f"{signal.Signals(sig).name}/{handled}: child held {ids}; left {left}")
    assert not left


@pytest.mark.kind("raw_tp")
def test_sigterm_during_load_leaves_nothing() -> None:
    """Kill the child while it loads objects over and over (it is inside
    bpf_object__load most of the time); what it held, read from its fdinfo
    just before the kill and reported after each load, is all gone."""
    def body(say: Say) -> None:
        n = 0
        while True:
            obj = load_and_attach()
            report(say)
            obj.close()
            n += 1
            if n == 3:
                say("LOADING")

    child = Child(body)
    ids: Dict[str, Set[int]] = {"progs": set(), "maps": set(), "links": set()}
    try:
        child.read_until("LOADING", ids)
        time.sleep(0.05)
        _merge(ids, introspect.process_ids(child.pid))     # what it holds right now
        os.kill(child.pid, signal.SIGTERM)
        _, status = child.wait()
    finally:
        child.reap()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    left = _gone(ids)
    print(f"SIGTERM during load: child held {sum(map(len, ids.values()))} objects; left {left}")
    assert not left


def _link_ids(obj: Any, links: List[Any]) -> Dict[str, Set[int]]:
    ids: Dict[str, Set[int]] = {"progs": set(), "maps": set(), "links": set()}
    for fd in [ln.fd for ln in links] + [pr.fd for pr in obj.programs.values()]:
        kid = introspect.kernel_id(fd)
        if kid:
            ids[kid[0]].add(kid[1])
    return ids


@pytest.mark.kind("raw_tp")
def test_callback_exception_stops_read_and_propagates_after_detach() -> None:
    """The callback's exception stops the read at the record that raised
    (the next records stay in the ring), propagates unchanged, and leaving
    the ``with`` block detaches everything."""
    class Stop(Exception):
        pass

    seen: List[bytes] = []

    def cb(rec: bytes) -> None:
        seen.append(rec)
        if len(seen) == 2:
            raise Stop("from the callback")

    with pytest.raises(Stop, match="from the callback"):
        o = pytracers.open(SYSCALLS)
        o.only("sc_raw_enter", "sc_raw_exit")
        o.config["cfg_filter_ids"] = 1
        o.config["cfg_pid"] = os.getpid()
        with o.load() as obj:
            obj.maps["syscall_ids"][syscall_number("getppid")] = b"\x01"
            links = [pr.attach() for pr in obj.programs.values()]
            ids = _link_ids(obj, links)
            rb = obj.ring_buffer()
            for _ in range(5):
                os.getppid()
            try:
                rb.poll(1.0, cb)
            finally:
                assert len(seen) == 2 and rb.delivered == 2
                assert len(rb.read(0)) == 3          # the rest were left in the ring
    assert all(ln.closed for ln in links)
    assert not _gone(ids), "links still attached after the exception left the with block"


@pytest.mark.kind("tp")
@pytest.mark.parametrize("child_does", ["close", "exit", "_exit"])
def test_fork_after_attach_child_does_not_detach_parent(child_does: str) -> None:
    """A child forked after attach shares the fds; whatever it does with its
    copies (close the object, exit, _exit) the parent's probe keeps working."""
    o = pytracers.open(EXEC)
    with o.load() as obj:
        links = [pr.attach() for pr in obj.programs.values()]
        ids = _link_ids(obj, links)
        rb = obj.ring_buffer()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                if child_does == "close":
                    obj.close()
                    os._exit(0)
                if child_does == "exit":
                    sys.exit(0)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert _gone(ids, timeout=0) == {k: v for k, v in ids.items() if v}, "the child's exit detached the parent's probes"
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        pids: List[int] = []
        deadline = time.monotonic() + 5
        while child.pid not in pids and time.monotonic() < deadline:
            pids += [struct.unpack_from("<I", r, 8)[0] for r in rb.read(0.2)]
        assert child.pid in pids, "no exec event after the fork: the parent's probe was detached"


@pytest.mark.kind("tp")
def test_tracer_callback_exception_propagates_after_detach() -> None:
    """The same through a tracer: the exception leaves ``with tracer`` after
    the tracer closed, and no probe of it is left in the kernel."""
    class Stop(Exception):
        pass

    def cb(ev: Any) -> None:
        raise Stop(f"event of pid {ev.pid}")

    with pytest.raises(Stop, match=f"event of pid {os.getpid()}"):
        with pytracers.SyscallTracer(["getppid"], kind="tp", pid=os.getpid()) as t:
            ids = _link_ids(t.object, t.links)
            assert ids["links"] or ids["progs"]
            for _ in range(3):
                os.getppid()
            t.poll(2.0, cb)
    assert t.closed and all(ln.closed for ln in t.links)
    assert not _gone(ids), "probes still attached after the exception left the tracer"
