"""Batch map operations: many entries per bpf() call, into numpy arrays or dicts.

:meth:`Map.lookup_batch <pytracers.maps.Map.lookup_batch>` and its siblings
call libbpf's ``bpf_map_lookup_batch``, ``bpf_map_lookup_and_delete_batch``,
``bpf_map_update_batch`` and ``bpf_map_delete_batch``: the kernel copies
whole runs of keys and values in one system call (hash maps from kernel 5.6,
arrays from 5.9 for lookup and update; arrays cannot delete).  Where the
kernel (or the map type) has no batch operation, the same result comes from
one call per entry, and :attr:`Map.last_batch_path` says which path ran
(``"batch"`` or ``"per-entry"``).

Results are a :class:`Batch`: ``keys`` and ``values`` numpy arrays (numbers
of 1, 2, 4 or 8 bytes as unsigned integers unless ``key_dtype`` /
``value_dtype`` say otherwise, other sizes as ``V<n>`` bytes; per-CPU values
have one column per possible CPU), and ``to_dict()``.

A lookup-and-delete batch is atomic per entry: a value counted by a program
while we read is either in the returned batch or left in the map, never lost
(which read-then-delete cannot promise).
"""
from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ._libbpf import checked, ffi, lib
from .errors import ENOTSUPP, BadArgumentError, BadTypeError, MapError

if TYPE_CHECKING:  # pragma: no cover
    import numpy

    from .maps import Map

__all__ = ["Batch", "lookup_batch", "update_batch", "delete_batch"]

_UNSUPPORTED = (_errno.EOPNOTSUPP, ENOTSUPP)   # no batch op for this kernel / map type
_ARRAY_TYPES = (2, 6)                          # maps.MapType.ARRAY, PERCPU_ARRAY (no import cycle)


class Batch(NamedTuple):
    """Keys and values read in one go: two numpy arrays of the same length."""

    keys: Any
    values: Any

    def __len__(self) -> int:
        return len(self.keys)

    def to_dict(self) -> Dict[Any, Any]:
        """``{key: value}``: numbers as ints, bytes-like keys and values as
        bytes, per-CPU values as lists."""
        return dict(zip(_py(self.keys), _py(self.values)))


def _py(arr: Any) -> List[Any]:
    if arr.dtype.kind == "V":
        if arr.ndim == 2:
            return [[bytes(x) for x in row] for row in arr]
        return [bytes(x) for x in arr]
    return arr.tolist()


def _dtype(size: int, given: Any) -> Any:
    import numpy as np
    if given is not None:
        dt = np.dtype(given)
        if dt.itemsize != size:
            raise BadArgumentError(f"dtype {dt} is {dt.itemsize} bytes; the map's is {size}")
        return dt
    return np.dtype(f"<u{size}") if size in (1, 2, 4, 8) else np.dtype(f"V{size}")


def _opts(flags: int = 0) -> Any:
    o = ffi.new("struct bpf_map_batch_opts *")
    o.sz = ffi.sizeof("struct bpf_map_batch_opts")
    o.elem_flags = flags
    return o


def _values_out(m: "Map", raw: Any, n: int, vdt: Any) -> Any:
    """The values of ``n`` entries from the kernel's buffer layout."""
    import numpy as np
    from .maps import possible_cpus
    if not m.percpu:
        return np.frombuffer(raw, vdt, count=n).copy()
    ncpu = possible_cpus()
    return np.ndarray((n, ncpu), vdt, buffer=raw, strides=(ncpu * m._slot, m._slot)).copy()


def lookup_batch(m: "Map", *, delete: bool = False, key_dtype: Any = None,
                 value_dtype: Any = None, chunk: Optional[int] = None) -> Batch:
    """Every entry of ``m`` (deleting each as it is read when ``delete``)."""
    import numpy as np
    m._not_ring()
    kdt = _dtype(m.key_size, key_dtype)
    vdt = _dtype(m.value_size, value_dtype)
    fn = lib.bpf_map_lookup_and_delete_batch if delete else lib.bpf_map_lookup_batch
    if delete and m.type in _ARRAY_TYPES:
        raise BadArgumentError(f"array map {m.name}: entries cannot be deleted "
                               f"(read it with lookup_batch and reset it with update_batch)")
    n_max = max(1, int(chunk or m.max_entries))
    ncpu_slot = m._slot * (_ncpus() if m.percpu else 1)
    keys = bytearray(m.key_size * n_max)
    vals = bytearray(ncpu_slot * n_max)
    kbuf, vbuf = ffi.from_buffer(keys), ffi.from_buffer(vals)
    token_size = max(m.key_size, 8)
    tok_in, tok_out = ffi.new("char[]", token_size), ffi.new("char[]", token_size)
    count = ffi.new("__u32 *")
    opts = _opts()
    got_k: List[bytes] = []
    got_v: List[bytes] = []
    first = True
    what = f"{'lookup and delete' if delete else 'look up'} a batch of map {m.name!r}"
    while True:
        count[0] = n_max
        try:
            res = checked(fn, m.fd, ffi.NULL if first else tok_in, tok_out, kbuf, vbuf, count,
                          opts, what=what, error=MapError, expected=(_errno.ENOENT,),
                          refine=lambda err, log: _batch_refused(m, what, err, first))
        except _NoBatch:
            m.last_batch_path = "per-entry"
            return _per_entry_lookup(m, delete, kdt, vdt)
        n = int(count[0])
        got_k.append(bytes(keys[:n * m.key_size]))
        got_v.append(bytes(vals[:n * ncpu_slot]))
        if res is None:            # ENOENT: that was the last run
            break
        first = False
        ffi.memmove(tok_in, tok_out, token_size)
    m.last_batch_path = "batch"
    kraw, vraw = b"".join(got_k), b"".join(got_v)
    total = len(kraw) // m.key_size if m.key_size else 0
    return Batch(np.frombuffer(kraw, kdt, count=total).copy(), _values_out(m, vraw, total, vdt))


_FALLBACK = object()


class _NoBatch(MapError):
    """Internal: the kernel has no batch operation for this map (caught here)."""


def _ncpus() -> int:
    from .maps import possible_cpus
    return possible_cpus()


def _batch_refused(m: "Map", what: str, err: int, first: bool = True) -> Optional[BaseException]:
    if err in _UNSUPPORTED and first:
        return _NoBatch(what, err)
    if err == _errno.ENOSPC:
        return MapError(what, err, "a hash bucket holds more entries than one call can "
                        "return: pass a larger chunk=")
    return None


def _per_entry_lookup(m: "Map", delete: bool, kdt: Any, vdt: Any) -> Batch:
    import numpy as np
    ks: List[bytes] = []
    vs: List[Any] = []
    for k in list(m.keys()):
        v = m.lookup_and_delete(k) if delete else m.lookup(k)
        if v is None:
            continue
        ks.append(k)
        vs.append(b"".join(x.ljust(m._slot, b"\0") for x in v) if isinstance(v, list) else v)
    return Batch(np.frombuffer(b"".join(ks), kdt, count=len(ks)).copy(),
                 _values_out(m, b"".join(vs), len(ks), vdt))


def _as_bytes(m: "Map", what: str, items: Any, size: int, n: Optional[int]) -> Tuple[bytes, int]:
    """Keys or values (a numpy array, bytes, or a sequence of ints / bytes)
    packed back to back; returns (bytes, count)."""
    import numpy as np
    from .maps import _encode
    if isinstance(items, np.ndarray):
        arr = np.ascontiguousarray(items)
        if arr.dtype.itemsize * (arr.shape[-1] if arr.ndim > 1 else 1) != size and \
                arr.dtype.itemsize != size:
            raise BadArgumentError(f"{what} dtype {arr.dtype} does not match the map's "
                                   f"{size}-byte {what}s")
        if arr.dtype.kind in "iu" and arr.dtype.itemsize == size:
            arr = arr.astype(f"<{arr.dtype.kind}{size}", copy=False)
        raw = arr.tobytes()
    elif isinstance(items, (bytes, bytearray, memoryview)):
        raw = bytes(items)
    else:
        raw = b"".join(_encode(what, x, size) for x in items)
    if size == 0 or len(raw) % size:
        raise BadArgumentError(f"{what}s are {len(raw)} bytes, not a multiple of {size}")
    count = len(raw) // size
    if n is not None and count != n:
        raise BadArgumentError(f"{n} keys but {count} values")
    return raw, count


def _percpu_values(m: "Map", values: Any, n: int) -> bytes:
    """Per-CPU values: one value per entry (every CPU), or per entry and CPU."""
    import numpy as np
    from .maps import _encode
    ncpu = _ncpus()
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[1] == ncpu:
        rows = [[x.tobytes() for x in row] for row in values]
    else:
        rows = []
        for v in values:
            if isinstance(v, np.generic):
                v = v.item()
            per = v if isinstance(v, (list, tuple)) else [v] * ncpu
            if len(per) != ncpu:
                raise BadArgumentError(f"per-CPU map {m.name} needs {ncpu} values per key")
            rows.append([_encode("value", x, m.value_size) for x in per])
    if len(rows) != n:
        raise BadArgumentError(f"{n} keys but {len(rows)} values")
    return b"".join(x.ljust(m._slot, b"\0") for row in rows for x in row)


def update_batch(m: "Map", keys: Any, values: Any = None, flags: int = 0) -> int:
    """Set many entries: ``keys``/``values`` as numpy arrays or sequences, or
    ``keys`` a dict; returns how many were written."""
    m._not_ring()
    if values is None:
        if not isinstance(keys, Mapping):
            raise BadTypeError("update_batch takes a dict, or keys and values")
        keys, values = list(keys.keys()), list(keys.values())
    kraw, n = _as_bytes(m, "key", keys, m.key_size, None)
    if m.percpu:
        vraw = _percpu_values(m, values, n)
    else:
        vraw, _ = _as_bytes(m, "value", values, m.value_size, n)
    if n == 0:
        return 0
    count = ffi.new("__u32 *", n)
    what = f"update a batch of map {m.name!r}"
    try:
        checked(lib.bpf_map_update_batch, m.fd, ffi.from_buffer(kraw), ffi.from_buffer(vraw),
                count, _opts(flags), what=what, error=MapError,
                refine=lambda err, log: _batch_refused(m, what, err)
                or m._update_refused(err, keys[0] if len(keys) else 0))
    except _NoBatch:
        m.last_batch_path = "per-entry"
        vstep = len(vraw) // n
        for i in range(n):
            k = kraw[i * m.key_size:(i + 1) * m.key_size]
            v = vraw[i * vstep:(i + 1) * vstep]
            if m.percpu:
                m.update(k, [v[j * m._slot:j * m._slot + m.value_size]
                             for j in range(_ncpus())], flags)
            else:
                m.update(k, v, flags)
        return n
    m.last_batch_path = "batch"
    return int(count[0])


def delete_batch(m: "Map", keys: Any) -> int:
    """Delete many keys; returns how many were deleted.  A missing key stops
    the kernel's batch with :class:`~pytracers.errors.KeyNotFoundError`
    after the keys before it were deleted."""
    from .errors import KeyNotFoundError
    m._not_ring()
    if m.type in _ARRAY_TYPES:
        raise BadArgumentError(f"array map {m.name}: entries cannot be deleted")
    kraw, n = _as_bytes(m, "key", keys, m.key_size, None)
    if n == 0:
        return 0
    count = ffi.new("__u32 *", n)
    what = f"delete a batch from map {m.name!r}"
    try:
        res = checked(lib.bpf_map_delete_batch, m.fd, ffi.from_buffer(kraw), count, _opts(),
                      what=what, error=MapError, expected=(_errno.ENOENT,),
                      refine=lambda err, log: _batch_refused(m, what, err))
    except _NoBatch:
        res = _FALLBACK
    if res is None:
        m.last_batch_path = "batch"
        done = int(count[0])
        raise KeyNotFoundError(kraw[done * m.key_size:(done + 1) * m.key_size],
                               f"map {m.name!r} (after deleting {done})")
    if res is _FALLBACK:
        m.last_batch_path = "per-entry"
        done = 0
        for i in range(n):
            if m.delete(kraw[i * m.key_size:(i + 1) * m.key_size]):
                done += 1
        return done
    m.last_batch_path = "batch"
    return int(count[0])
