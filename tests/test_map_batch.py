"""Map batch operations (lookup, lookup-and-delete, update, delete) into numpy
arrays or dicts, their per-entry fallback, lookup_and_delete, the open-map
setters, and maps and links opened from their bpffs pins by another process."""
from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import pytracers
from pytracers import mapbatch
from pytracers.errors import BadArgumentError, KeyNotFoundError
from pytracers.maps import MapType, possible_cpus

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = os.path.join(HERE, "objects", "batch_maps.bpf.o")
SYSCALLS = pytracers.object_path("syscalls")
_libc = ctypes.CDLL(None, use_errno=True)


def _loaded(entries: int = 1024, **setup):
    o = pytracers.open(BATCH)
    o.maps["counts"].max_entries = entries
    o.config["my_pid"] = os.getpid()
    for name, (attr, value) in setup.items():
        setattr(o.maps[name], attr, value)
    return o.load()


def test_update_and_lookup_batch_round_trip():
    """1000 entries written in one batch read back exactly, as arrays and as a
    dict, through the batch path."""
    with _loaded() as obj:
        m = obj.maps["counts"]
        keys = np.arange(1000, dtype=np.uint64) * 7
        assert m.update_batch(keys, keys * 3) == 1000
        assert m.last_batch_path == "batch"
        b = m.lookup_batch()
        assert m.last_batch_path == "batch" and len(b) == 1000
        assert b.keys.dtype == np.uint64 and b.values.dtype == np.uint64
        # (sorted in Python: numpy's SIMD argsort is not trusted under qemu TCG)
        assert sorted(zip(b.keys.tolist(), b.values.tolist())) == \
            [(k, k * 3) for k in keys.tolist()]
        d = b.to_dict()
        assert d == {int(k): int(k) * 3 for k in keys}
        assert m.lookup(7 * 10) == (210).to_bytes(8, "little")


def test_small_chunks_walk_the_whole_map():
    with _loaded() as obj:
        m = obj.maps["counts"]
        m.update_batch({k: k + 1 for k in range(300)})
        b = m.lookup_batch(chunk=64)
        assert b.to_dict() == {k: k + 1 for k in range(300)}


def test_lookup_and_delete_batch_reads_and_empties():
    """Counts from the program (getpgid(5) x3, getpgid(9) x1) come back once
    and the map is empty after; an empty map gives an empty batch."""
    with _loaded() as obj:
        link = obj.programs["bump"].attach()
        for a in (5, 5, 9, 5):
            _libc.getpgid(a)
        link.close()
        m = obj.maps["counts"]
        assert m.lookup_and_delete_batch().to_dict() == {5: 3, 9: 1}
        assert len(m.lookup_batch()) == 0 and m.lookup_batch().to_dict() == {}
        assert list(m.keys()) == []


def test_delete_batch_and_missing_keys():
    with _loaded() as obj:
        m = obj.maps["counts"]
        m.update_batch(list(range(10)), [1] * 10)
        assert m.delete_batch(np.array([1, 2, 3], np.uint64)) == 3
        assert sorted(m.lookup_batch().to_dict()) == [0, 4, 5, 6, 7, 8, 9]
        with pytest.raises(KeyNotFoundError):
            m.delete_batch([4, 2, 5])          # 2 is gone: stops after deleting 4
        assert sorted(m.lookup_batch().to_dict()) == [0, 5, 6, 7, 8, 9]


def test_lookup_and_delete_one_key():
    with _loaded() as obj:
        m = obj.maps["counts"]
        m[11] = 33
        assert m.lookup_and_delete(11) == (33).to_bytes(8, "little")
        assert m.lookup(11) is None and m.lookup_and_delete(11) is None


def test_array_and_percpu_batches():
    """An array: lookup and update in batches, never delete; a per-CPU hash:
    one column per possible CPU."""
    with _loaded() as obj:
        a = obj.maps["slots"]
        assert a.update_batch(range(64), [i * 2 for i in range(64)]) == 64
        b = a.lookup_batch()
        assert sorted(b.to_dict().items()) == [(i, i * 2) for i in range(64)]
        with pytest.raises(BadArgumentError, match="cannot be deleted"):
            a.lookup_and_delete_batch()
        with pytest.raises(BadArgumentError, match="cannot be deleted"):
            a.delete_batch([1])
        p = obj.maps["pcounts"]
        ncpu = possible_cpus()
        p.update_batch([1, 2], [5, [6 + c for c in range(ncpu)]])
        b = p.lookup_batch()
        assert b.values.shape == (2, ncpu)
        assert b.to_dict() == {1: [5] * ncpu, 2: [6 + c for c in range(ncpu)]}


def test_struct_values_as_a_dtype():
    """Values typed by a structured dtype (the BTF layout's): fields named
    count and index, read per column."""
    with _loaded() as obj:
        st = obj.maps["stats"]
        dt = obj.btf.struct_layout("slot_stat").numpy_dtype()
        vals = np.zeros(3, dt)
        vals["count"] = [10, 20, 30]
        vals["index"] = [1, 2, 3]
        st.update_batch(np.array([1, 2, 3], np.uint32), vals)
        b = st.lookup_batch(value_dtype=dt, key_dtype=np.uint32)
        got = dict(zip(b.keys.tolist(), zip(b.values["count"].tolist(),
                                               b.values["index"].tolist())))
        assert got == {1: (10, 1), 2: (20, 2), 3: (30, 3)}
        with pytest.raises(BadArgumentError, match="dtype"):
            st.lookup_batch(value_dtype=np.uint64)


class _NoBatchLib:
    """libbpf as on a kernel without batch map operations (EOPNOTSUPP)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name.endswith("_batch"):
            return lambda *a: -errno.EOPNOTSUPP
        return getattr(self._real, name)


def test_per_entry_fallback_gives_the_same_results(monkeypatch):
    """Where the kernel refuses batch operations, the same calls give the same
    results one entry at a time, and say so in last_batch_path."""
    with _loaded() as obj:
        m = obj.maps["counts"]
        monkeypatch.setattr(mapbatch, "lib", _NoBatchLib(mapbatch.lib))
        assert m.update_batch({k: k * k for k in range(50)}) == 50
        assert m.last_batch_path == "per-entry"
        assert m.lookup_batch().to_dict() == {k: k * k for k in range(50)}
        assert m.last_batch_path == "per-entry"
        assert m.delete_batch([0, 1]) == 2
        assert m.lookup_and_delete_batch().to_dict() == {k: k * k for k in range(2, 50)}
        assert m.last_batch_path == "per-entry"
        assert len(m.lookup_batch()) == 0
        p = obj.maps["pcounts"]
        p.update_batch([3], [4])
        assert p.lookup_batch().to_dict() == {3: [4] * possible_cpus()}


def test_open_map_setters_before_load():
    """Type, key and value size, flags and size set before load are what the
    kernel creates: the array `slots` becomes a hash (deletable), `stats`
    gets 32-byte values (its program not loaded)."""
    o = pytracers.open(BATCH)
    om = o.maps["slots"]
    om.map_type = MapType.HASH
    om.max_entries = 128
    assert om.map_type == MapType.HASH
    o.maps["stats"].value_size = 32
    o.maps["stats"].key_size = 8
    assert (o.maps["stats"].key_size, o.maps["stats"].value_size) == (8, 32)
    o.maps["pcounts"].map_flags = o.maps["pcounts"].map_flags | 1   # BPF_F_NO_PREALLOC
    o.programs["bump"].autoload = False
    with o.load() as obj:
        s = obj.maps["slots"]
        assert (s.type, s.max_entries) == (MapType.HASH, 128)
        s[1] = 2
        assert s.delete(1)
        assert (obj.maps["stats"].key_size, obj.maps["stats"].value_size) == (8, 32)
    with pytest.raises(pytracers.errors.ClosedError):
        om.map_type = MapType.ARRAY


def test_pinned_map_read_by_another_process(tmp_path):
    """A map pinned by this process is opened by a child through its bpffs
    path and read with a batch lookup; the child writes one key back."""
    path = f"/sys/fs/bpf/pytracers_batch_{os.getpid()}"
    with _loaded() as obj:
        m = obj.maps["counts"]
        m.update_batch({1: 10, 2: 20})
        m.pin(path)
        try:
            code = ("import pytracers\n"
                    f"m = pytracers.open_pinned_map({path!r})\n"
                    "print(sorted(m.lookup_batch().to_dict().items()), m.type_name, m.key_size)\n"
                    "m[3] = 30\n"
                    "m.close()\n")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == "[(1, 10), (2, 20)] hash 8"
            assert m.lookup_batch().to_dict() == {1: 10, 2: 20, 3: 30}
            with pytracers.open_pinned_map(path) as pm:
                assert pm.name == "counts" and pm.max_entries == 1024
            with pytest.raises(BadArgumentError, match="not a link"):
                pytracers.open_pinned_link(path)
        finally:
            os.unlink(path)


def test_pinned_link_opened_by_path():
    """A raw_tp link pinned here is found by path: its program id is the one
    we attached; a map path is refused as a link and vice versa."""
    path = f"/sys/fs/bpf/pytracers_link_{os.getpid()}"
    o = pytracers.open(SYSCALLS)
    o.only("sc_raw_enter")
    with o.load() as obj:
        link = obj.programs["sc_raw_enter"].attach()
        link.pin(path)
        try:
            with pytracers.open_pinned_link(path) as pl:
                assert pl.prog_id > 0 and pl.id > 0
            with pytest.raises(BadArgumentError, match="not a map"):
                pytracers.open_pinned_map(path)
        finally:
            os.unlink(path)
    with pytest.raises(pytracers.errors.MapError) as ei:
        pytracers.open_pinned_map(path)
    assert ei.value.errno == errno.ENOENT
