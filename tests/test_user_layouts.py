"""Users' own objects: event structs clang left out of BTF (given as C text, a
numpy dtype or a ctypes Structure), variable-length records, and record fields
named like tuple methods.  The object (tests/objects/data_events.bpf.c)
reserves its records through a local pointer, as real tools do."""
from __future__ import annotations

import ctypes
import os
import pickle

import numpy as np
import pytest

import pytracers
from pytracers.btf import StructLayout
from pytracers.btf.foreign import layout_from_c, layout_from_ctypes, layout_from_dtype
from pytracers.errors import BadTypeError, BtfNotFoundError, BtfUnsupportedError

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_EVENTS = os.path.join(HERE, "objects", "data_events.bpf.o")
BATCH = os.path.join(HERE, "objects", "batch_maps.bpf.o")

EVENT_C = """
/* the tool's header, unchanged */
#ifndef EVENT_H
#define EVENT_H
#define TASK_COMM_LEN 16
struct event {
    __u32 pid;
    __u32 count;
    __u64 index;
    char comm[TASK_COMM_LEN];
};
#endif
"""
BLOB_C = "struct blob { __u32 len; __u32 kind; __u8 data[]; } __attribute__((packed));"

_libc = ctypes.CDLL(None, use_errno=True)


def _getpgid(arg: int) -> None:
    _libc.getpgid(arg)          # the probe fires on entry, whatever the result


class CEvent(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("count", ctypes.c_uint32),
                ("index", ctypes.c_uint64), ("comm", ctypes.c_char * 16)]


EVENT_DTYPE = np.dtype([("pid", "<u4"), ("count", "<u4"), ("index", "<u8"), ("comm", "S16")])


def _loaded():
    o = pytracers.open(DATA_EVENTS)
    o.config["my_pid"] = os.getpid()          # a .bss variable, set before load
    return o.load()


def test_missing_struct_error_says_why_and_what_to_pass():
    """The struct is reached only through bpf_ringbuf_reserve's pointer, so it
    is not in the object's BTF: the error says clang left it out and names the
    three ways to pass the layout."""
    with _loaded() as obj:
        with pytest.raises(BtfNotFoundError) as ei:
            obj.ring_buffer("rb", event="event")
        msg = str(ei.value)
        assert "no struct 'event' in BTF" in msg
        assert "only when a global variable or a map declaration uses it" in msg
        assert "bpf_ringbuf_reserve" in msg
        assert "numpy dtype" in msg and "ctypes.Structure" in msg
        assert 'event="struct event { ... };"' in msg


@pytest.mark.parametrize("spec", ["c", "dtype", "ctypes"])
def test_events_decode_through_a_layout_given_by_the_user(spec):
    """Three getpgid calls: each record decodes with exact values through the
    C header text, a numpy dtype or a ctypes Structure; the fields named
    `count` and `index` read the fields, not tuple's methods."""
    event = {"c": EVENT_C, "dtype": EVENT_DTYPE, "ctypes": CEvent}[spec]
    with _loaded() as obj:
        rb = obj.ring_buffer("rb", event=event)
        link = obj.programs["on_getpgid"].attach()
        for arg in (5, 40, 3):
            _getpgid(arg)
        recs = rb.read()
        link.close()
    assert [(r.pid, r.count, r.index) for r in recs] == [
        (os.getpid(), 1, 5), (os.getpid(), 2, 40), (os.getpid(), 3, 3)]
    assert all(isinstance(r.count, int) and isinstance(r.index, int) for r in recs)
    assert recs[0].comm == open("/proc/self/comm").read().strip()[:15]
    assert recs[0]._asdict()["count"] == 1
    assert tuple.count(recs[0], 5) == 1 and tuple.index(recs[0], 5) == 2


def test_variable_length_records_carry_their_tail_and_length():
    """struct blob ends in a flexible array: each record's last field holds the
    bytes that came for it, and rec._length is the record's length."""
    with _loaded() as obj:
        rb = obj.ring_buffer("blobs", event=BLOB_C)
        link = obj.programs["on_getpgid"].attach()
        for arg in (5, 0, 31):
            _getpgid(arg)
        recs = rb.read()
        link.close()
    assert [(r.len, r.kind, r.data, r._length) for r in recs] == [
        (5, 7, bytes(range(1, 6)), 13), (0, 7, b"", 8), (31, 7, bytes(range(1, 32)), 39)]
    assert recs[0]._fields == ("len", "kind", "data")


def test_the_three_layouts_agree_with_each_other():
    """C text, dtype and ctypes give the same offsets, sizes and dtype."""
    c, d, t = layout_from_c(EVENT_C), layout_from_dtype(EVENT_DTYPE, "event"), \
        layout_from_ctypes(CEvent)
    for lay in (c, d, t):
        assert lay.size == 32
        assert [(f.name, f.offset, f.size, f.kind) for f in lay.fields] == [
            ("pid", 0, 4, "uint"), ("count", 4, 4, "uint"), ("index", 8, 8, "uint"),
            ("comm", 16, 16, "char_array")]
        assert lay.numpy_dtype() == c.numpy_dtype()


def test_c_layouts_nested_arrays_and_choice_of_struct():
    """Nested structs flatten to dotted names, number arrays keep their shape,
    `name` picks one of several structs; bitfields and parse errors are clear."""
    text = """
    struct inner { __s16 a; __u8 b; };
    struct outer { struct inner in; __u64 hist[4]; float f; char tag[3]; };
    """
    lay = layout_from_c(text)
    assert lay.name == "outer" and lay.size == 48
    assert [(f.name, f.offset, f.kind) for f in lay.fields] == [
        ("in.a", 0, "int"), ("in.b", 2, "uint"), ("hist", 8, "array"),
        ("f", 40, "float"), ("tag", 44, "char_array")]
    raw = (b"\xff\xff\x07\x00" + bytes(4) + b"".join(i.to_bytes(8, "little") for i in range(4))
           + np.float32(1.5).tobytes() + b"ab\0" + bytes(1))
    r = lay.decode(raw)
    assert (r.in_a, r.in_b, r.hist, r.f, r.tag) == (-1, 7, (0, 1, 2, 3), 1.5, "ab")
    assert layout_from_c(text, "inner").size == 4
    with pytest.raises(BtfNotFoundError):
        layout_from_c(text, "nope")
    packed = layout_from_c("struct p { __u8 a; __u64 b; } __attribute__((packed));")
    assert (packed.size, packed.fields[1].offset) == (9, 1)
    with pytest.raises(BtfUnsupportedError, match="bitfield"):
        layout_from_c("struct bf { __u32 a:3; __u32 b:29; };")
    with pytest.raises(BtfUnsupportedError, match="cannot parse"):
        layout_from_c("struct broken { __u32 a }")


def test_bad_event_argument_types():
    with _loaded() as obj:
        with pytest.raises(BadTypeError):
            obj.ring_buffer("rb", event=3.5)


def test_btf_records_read_count_and_index_fields():
    """A BTF struct (the batch object's map value) with fields `count` and
    `index`: its records read the fields; they pickle and keep the values."""
    with pytracers.open(BATCH) as o:
        obj = o.load()
    with obj:
        lay = obj.btf.struct_layout("slot_stat")
        rec = lay.decode((7).to_bytes(8, "little") + (9).to_bytes(8, "little"))
        assert (rec.count, rec.index) == (7, 9)
        back = pickle.loads(pickle.dumps(rec))
        assert (back.count, back.index) == (7, 9) and back == rec
        st = obj.maps["stats"]
        st.update(3, (11).to_bytes(8, "little") + (12).to_bytes(8, "little"))
        assert (st.typed[3].count, st.typed[3].index) == (11, 12)


def test_a_layout_object_passes_through():
    lay = layout_from_c(EVENT_C)
    from pytracers.btf.foreign import event_layout
    assert event_layout(None, lay) is lay
    assert isinstance(lay, StructLayout)
