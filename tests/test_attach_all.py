"""Attach-all (libbpf's auto-attach rules) and the generic attach of program
types of no probe kind: lsm, iter, perf_event, cgroup
(tests/objects/autoattach.bpf.o, multi.bpf.o)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import pytracers
from pytracers import _errmap, kinds
from pytracers.errors import (BadArgumentError, BadTypeError, NotSupportedError,
                              TargetNotFoundError)

from conftest import VM_KERNEL, expected

OBJECTS = Path(__file__).parent / "objects"
AUTO = str(OBJECTS / "autoattach.bpf.o")
MULTI = str(OBJECTS / "multi.bpf.o")


def _load(*enable: str) -> "pytracers.Object":
    o = pytracers.open(AUTO)
    o.config["cfg_pid"] = os.getpid()
    for name in enable:
        o.programs[name].autoload = True
    return o.load()


def _hits(obj) -> list:
    m = obj.maps["hits"]
    return [int.from_bytes(m[i], "little") for i in range(8)]


def test_attach_all_attaches_what_sections_name_and_reports_the_rest():
    with _load() as obj:
        with obj.attach_all() as att:
            assert list(att.links) == ["on_tp", "on_raw_tp", "on_tp_btf"]
            assert set(att.skipped) == {"no_target", "on_sample", "on_sock_create"}
            assert "names no raw_tp target" in att.skipped["no_target"]
            assert "attach_perf_event(fd)" in att.skipped["on_sample"]
            assert "attach_cgroup(path)" in att.skipped["on_sock_create"]
            assert [ln.kind for ln in att] == [kinds.TP, kinds.RAW_TP, kinds.TP_BTF]
            assert att["on_tp"].target == "syscalls:sys_enter_getppid"
            before = _hits(obj)
            os.getppid()
            after = _hits(obj)
        assert after[0] - before[0] == 1            # exactly this getppid
        assert after[1] > before[1] and after[2] > before[2]   # every syscall of ours
        assert after[3:] == before[3:] == [0] * 5
        assert all(ln.closed for ln in att.links.values())
        os.getppid()
        assert _hits(obj)[0] == after[0]            # detached: no more counts


def test_attach_all_stops_at_a_refusal_and_names_the_program(monkeypatch):
    """The first program the kernel refuses: its error (with .program), and
    the links made before it are detached."""
    with pytracers.open(MULTI).load() as obj:
        progs = obj.programs
        real = type(progs["count_enter"]).attach_auto

        def refuse(self):
            if self.name == "count_enter":
                raise TargetNotFoundError("raw tracepoint", "sys_enter")
            return real(self)
        monkeypatch.setattr(type(progs["count_enter"]), "attach_auto", refuse)
        with pytest.raises(TargetNotFoundError) as ei:
            obj.attach_all()
        assert ei.value.program == "count_enter"
        assert not [c for c in obj._children.values() if not c.closed]


def test_iterator_program_runs_and_prints():
    with _load("dump_task") as obj:
        out = obj.programs["dump_task"].read_iter()
        assert out == f"pid {os.getpid()}\n".encode()
        with obj.programs["dump_task"].attach() as link:     # auto-attach: a link
            assert link.kind == "iter" and link.target == "task"


def test_lsm_program_attaches_or_says_why():
    """The BPF LSM: attached and counting this process's opens, or refused
    with the reason (not in the kernel's LSM list; trampolines refused)."""
    try:
        obj = _load("on_file_open")
    except NotSupportedError as e:
        assert e.feature == "lsm" and e.program == "on_file_open"
        active = _errmap.bpf_lsm_active()
        if active is False:
            assert "'bpf' is missing from the kernel's LSM list" in e.reason
        else:
            assert "load refused with EPERM" in e.reason
        if VM_KERNEL and expected(kinds.FENTRY) and active:
            pytest.fail(f"lsm should load where trampolines work ({VM_KERNEL}): {e}")
        pytest.skip(f"this kernel refuses lsm programs: {e.reason}")
    with obj:
        try:
            link = obj.programs["on_file_open"].attach()
        except NotSupportedError as e:
            if VM_KERNEL and not expected(kinds.FENTRY):
                # lsm programs attach through a BPF trampoline (arm64 6.1 has none)
                assert "ENOTSUPP" in e.reason, e.reason
                pytest.skip(f"VM kernel {VM_KERNEL} has no BPF trampolines, which lsm "
                            f"programs attach through: {e.reason}")
            assert "'bpf' is missing" in e.reason
            pytest.skip(f"BPF LSM inactive: {e.reason}")
        with link:
            before = _hits(obj)[6]
            with open("/proc/self/comm"):
                pass
            assert _hits(obj)[6] - before == 1


def test_perf_event_and_cgroup_programs_need_their_target():
    with _load() as obj:
        # perf_event is a probe kind: attach() samples cpu-clock on every CPU
        with obj.programs["on_sample"].attach() as links:
            assert len(links) >= 1 and all(not link.closed for link in links)
        assert links.closed
        with pytest.raises(BadArgumentError, match="needs its event"):
            obj.programs["on_sample"].attach_auto()
        with pytest.raises(BadTypeError):
            obj.programs["on_sample"].attach_perf_event(-1)
        with pytest.raises(TargetNotFoundError):
            obj.programs["on_sock_create"].attach_cgroup("/nonexistent/cgroup")
        with pytest.raises(BadArgumentError, match="not a cgroup v2 directory"):
            obj.programs["on_sock_create"].attach_cgroup("/proc")
        with pytest.raises(BadArgumentError, match="not a cgroup program"):
            obj.programs["on_tp"].attach_cgroup("/proc")


@pytest.fixture
def cgroup2(tmp_path):
    """A cgroup v2 mount: the machine's, else one mounted for the test."""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, path, fstype = line.split()[:3]
            if fstype == "cgroup2":
                yield path
                return
    where = tmp_path / "cgroup2"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "cgroup2", "none", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"no cgroup2 mount and mounting one failed: {res.stderr.strip()}")
    try:
        yield str(where)
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_cgroup_program_counts_sockets_made_in_its_cgroup(cgroup2):
    cg = os.path.join(cgroup2, f"pytracers-test-{os.getpid()}")
    os.mkdir(cg)
    try:
        with _load() as obj:
            with obj.programs["on_sock_create"].attach(cg) as link:
                assert link.target == cg
                child = ("import os, socket; "
                         f"open({os.path.join(cg, 'cgroup.procs')!r}, 'w')"
                         ".write(str(os.getpid())); "
                         "[socket.socket().close() for _ in range(3)]")
                subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
                assert _hits(obj)[5] == 3
                socket.socket().close()          # this process: another cgroup
                assert _hits(obj)[5] == 3
    finally:
        os.rmdir(cg)


def test_perf_event_program_on_a_software_event():
    """attach_perf_event with a perf fd the caller opened (cpu-clock, this
    process): samples are counted."""
    import ctypes
    import struct
    import time
    libc = ctypes.CDLL(None, use_errno=True)
    # struct perf_event_attr (size 128): type SOFTWARE(1), config CPU_CLOCK(0),
    # sample_freq 1000 with the freq bit
    attr = bytearray(128)
    struct.pack_into("<IIQQ", attr, 0, 1, 128, 0, 1000)
    struct.pack_into("<Q", attr, 40, 1 << 10)           # flags: freq
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    from pytracers.perf import NR_PERF_EVENT_OPEN
    # perf_event_open(attr, self, any cpu), CLOEXEC
    fd = libc.syscall(NR_PERF_EVENT_OPEN[os.uname().machine], buf, 0, -1, -1, 8)
    if fd < 0:
        pytest.skip(f"perf_event_open refused: {os.strerror(ctypes.get_errno())}")
    try:
        with _load() as obj, obj.programs["on_sample"].attach_perf_event(fd):
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
            assert _hits(obj)[4] > 0
    finally:
        os.close(fd)
