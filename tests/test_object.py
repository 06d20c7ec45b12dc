"""The generic object model on real kernel objects (host kinds: tp)."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

import pytracers
from pytracers.errors import (BadArgumentError, BadTypeError, ClosedError,
                              TargetNotFoundError)

EXEC = pytracers.object_path("exec")


def test_open_lists_programs_maps_and_config():
    with pytracers.open(EXEC) as o:
        assert set(o.programs) == {"exec_enter", "exec_exit"}
        assert o.programs["exec_enter"].kind == "tp"
        assert o.programs["exec_enter"].section == "tp/syscalls/sys_enter_execve"
        assert {"events", "lost", "filters", "pending"} <= set(o.maps)
        assert "cfg_pid" in o.config
        assert o.config.get_int("cfg_pid") == 0


def test_config_before_load_and_unknown_names():
    with pytracers.open(EXEC) as o:
        o.config["cfg_pid"] = 4242
        assert o.config.get_int("cfg_pid") == 4242
        o.config["cfg_comm"] = "true"
        assert o.config["cfg_comm"].rstrip(b"\0") == b"true"
        with pytest.raises(TargetNotFoundError) as ei:
            o.config["cfg_pidd"] = 1
        assert "cfg_pid" in ei.value.suggestions
        with pytest.raises(BadArgumentError):
            o.config["cfg_comm"] = "x" * 16          # no room for the NUL
        with pytest.raises(BadArgumentError):
            o.config["cfg_pid"] = 1 << 40             # does not fit a u32
        with pytest.raises(BadTypeError):
            o.config["cfg_pid"] = 1.5                 # type: ignore[assignment]
        with pytest.raises(TargetNotFoundError):
            o.programs["nope"]


def test_ring_size_must_be_power_of_two():
    with pytracers.open(EXEC) as o:
        with pytest.raises(BadArgumentError, match="power of two"):
            o.maps["events"].max_entries = 3 * 4096
        o.maps["events"].max_entries = 1 << 16
        assert o.maps["events"].max_entries == 1 << 16


def test_load_consumes_open_object():
    o = pytracers.open(EXEC)
    obj = o.load()
    try:
        with pytest.raises(ClosedError):
            o.config["cfg_pid"] = 1
        with pytest.raises(ClosedError):
            o.load()
        assert set(obj.programs) == {"exec_enter", "exec_exit"}
        assert obj.programs["exec_enter"].fd > 0
    finally:
        obj.close()
    obj.close()  # safe twice
    with pytest.raises(ClosedError):
        obj.programs["exec_enter"].fd


def test_autoload_off_program_is_not_loaded():
    o = pytracers.open(EXEC)
    o.only("exec_enter")
    assert o.programs["exec_exit"].autoload is False
    with o.load() as obj:
        assert list(obj.programs) == ["exec_enter"]


@pytest.mark.kind("tp")
def test_tp_exec_event_fields_exact():
    """Attach the exec tracepoints, run /bin/true ourselves, check the record."""
    o = pytracers.open(EXEC)
    with o.load() as obj:
        obj.programs["exec_enter"].attach()
        obj.programs["exec_exit"].attach()
        rb = obj.ring_buffer()
        child = subprocess.Popen(["/bin/true", "arg-one"])
        child.wait()
        mine = []
        for rec in rb.events(timeout=2.0):
            ts, pid, tid, cpu, _pad, comm = struct.unpack_from("<QIIII16s", rec)
            if pid == child.pid:
                mine.append(rec)
                break
        assert mine, "no exec event for our child"
        rec = mine[0]
        ts, pid, tid, cpu, _pad, comm = struct.unpack_from("<QIIII16s", rec)
        ppid, uid, ret, argc = struct.unpack_from("<IIiI", rec, 40)
        assert (pid, tid) == (child.pid, child.pid)
        assert ppid == os.getpid()
        assert uid == os.getuid()
        assert ret == 0
        assert comm == b"true".ljust(16, b"\0")     # cleared, not just NUL-ended
        assert rec[56:56 + 256].split(b"\0")[0] == b"/bin/true"
        assert argc == 2
        argbuf_len, truncated = struct.unpack_from("<II", rec, 312)
        assert (argbuf_len, truncated) == (18, 0)
        # the record ends with the used part of argbuf: argv packed, NUL after each
        assert len(rec) == 320 + argbuf_len
        assert rec[320:] == b"/bin/true\0arg-one\0"
        assert obj.maps["lost"].sum_percpu_u64() == 0


def test_maps_lookup_update_delete_iterate():
    with pytracers.open(EXEC).load() as obj:
        pending = obj.maps["pending"]          # hash: u32 tid -> struct exec_event
        value = bytes(range(256)) * (pending.value_size // 256) + b"\1" * (pending.value_size % 256)
        pending.update(7, value)
        assert pending.lookup(7) == value
        assert pending[7] == value
        assert list(pending.keys()) == [struct.pack("<I", 7)]
        assert pending.delete(7) is True
        assert pending.delete(7) is False
        assert pending.lookup(7) is None
        with pytest.raises(KeyError):
            pending[7]
        with pytest.raises(BadArgumentError, match="wrong key size"):
            pending.lookup(b"\0" * 3)
        with pytest.raises(BadArgumentError, match="wrong value size"):
            pending.update(1, b"short")
        lost = obj.maps["lost"]                # per-CPU array
        assert lost.percpu
        per_cpu = lost.lookup(0)
        assert isinstance(per_cpu, list) and all(v == b"\0" * 8 for v in per_cpu)
        with pytest.raises(BadArgumentError, match="ring buffer"):
            obj.maps["events"].lookup(0)


def test_ring_buffer_close_twice_and_parent_close_cascades():
    obj = pytracers.open(EXEC).load()
    rb = obj.ring_buffer()
    link = obj.programs["exec_enter"].attach()
    assert rb.fileno() > 0 and link.fd > 0
    obj.close()
    assert rb.closed and link.closed
    rb.close()
    link.close()
    with pytest.raises(ClosedError):
        rb.read()


@pytest.mark.kind("tp")
def test_dropped_link_stays_attached_until_object_closes():
    with pytracers.open(EXEC).load() as obj:
        obj.programs["exec_enter"].attach()       # result dropped on purpose
        obj.programs["exec_exit"].attach()
        rb = obj.ring_buffer()
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        pids = [struct.unpack_from("<QI", r)[1] for r in rb.events(timeout=1.0)]
        assert child.pid in pids


def test_typed_map_view_decodes_through_btf():
    with pytracers.open(EXEC).load() as obj:
        lost = obj.maps["lost"].typed            # per-CPU u64
        assert all(v == 0 for v in lost[0])
        pending = obj.maps["pending"]            # u32 -> struct exec_event
        raw = bytearray(pending.value_size)
        struct.pack_into("<QIII", raw, 0, 123, 77, 78, 1)
        raw[24:28] = b"abc\0"
        raw[56:60] = b"/x\0\0"
        pending.update(5, bytes(raw))
        ev = pending.typed[5]
        assert (ev.ts_ns, ev.pid, ev.tid, ev.cpu, ev.comm, ev.filename) == (123, 77, 78, 1, "abc", "/x")
        assert dict(pending.typed.items()) == {5: ev}
