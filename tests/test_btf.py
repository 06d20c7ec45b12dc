"""Tests for pytracers.btf: hand-built BTF blobs, corrupt input, live kernel BTF, clang objects."""
from __future__ import annotations

import difflib
import os
import pickle
import random
import shutil
import struct
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

import pytracers
from pytracers import btf as B
from pytracers import errors as E
from pytracers.btf import (Btf, BtfDecodeError, BtfError, BtfNotFoundError, BtfUnsupportedError,
                           FuncProto, Kind, StructLayout)

VMLINUX = "/sys/kernel/btf/vmlinux"
CLANG = "/usr/bin/clang-19"


# --------------------------------------------------------------------------- blob builder

class BtfBuilder:
    """Builds raw BTF bytes: header + type records + string section.

    With ``base`` it builds split BTF: type ids and string offsets continue
    after the base's.
    """

    def __init__(self, base: Optional["BtfBuilder"] = None) -> None:
        self.base = base
        self.strs = bytearray(b"" if base else b"\0")
        self.str_start: int = base.str_start + len(base.strs) if base else 0
        self.first_id = base.next_id if base else 1
        self.recs: List[List[int]] = []
        self._offs: Dict[str, int] = {}

    @property
    def next_id(self) -> int:
        return self.first_id + len(self.recs)

    def s(self, name: str) -> int:
        if not name:
            return 0
        if self.base is not None and name in self.base._offs:
            return self.base._offs[name]   # split BTF may reuse base strings
        if name not in self._offs:
            self._offs[name] = self.str_start + len(self.strs)
            self.strs += name.encode() + b"\0"
        return self._offs[name]

    def add(self, kind: int, name: str = "", vlen: int = 0, st: int = 0, extra: Sequence[int] = (),
            kflag: int = 0) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.recs.append([self.s(name), info, st, *[x & 0xFFFFFFFF for x in extra]])
        return self.next_id - 1

    # one helper per kind
    def int_(self, name: str, size: int, enc: int = 0, bits: Optional[int] = None,
             bit_off: int = 0) -> int:
        nbits = size * 8 if bits is None else bits
        return self.add(1, name, 0, size, [(enc << 24) | (bit_off << 16) | nbits])

    def ptr(self, t: int) -> int:
        return self.add(2, "", 0, t)

    def array(self, elem: int, n: int, index: int = 0) -> int:
        return self.add(3, "", 0, 0, [elem, index, n])

    def struct(self, name: str, size: int, members: Sequence[Tuple[str, int, int]],
               union: bool = False, kflag: int = 0) -> int:
        extra: List[int] = []
        for mname, mtype, off in members:
            extra += [self.s(mname), mtype, off]
        return self.add(5 if union else 4, name, len(members), size, extra, kflag)

    def enum(self, name: str, size: int, values: Sequence[Tuple[str, int]], signed: bool = False) -> int:
        extra: List[int] = []
        for n, v in values:
            extra += [self.s(n), v]
        return self.add(6, name, len(values), size, extra, int(signed))

    def enum64(self, name: str, values: Sequence[Tuple[str, int]], signed: bool = False) -> int:
        extra: List[int] = []
        for n, v in values:
            v &= (1 << 64) - 1
            extra += [self.s(n), v & 0xFFFFFFFF, v >> 32]
        return self.add(19, name, len(values), 8, extra, int(signed))

    def fwd(self, name: str, union: bool = False) -> int:
        return self.add(7, name, 0, 0, (), int(union))

    def typedef(self, name: str, t: int) -> int:
        return self.add(8, name, 0, t)

    def volatile(self, t: int) -> int:
        return self.add(9, "", 0, t)

    def const(self, t: int) -> int:
        return self.add(10, "", 0, t)

    def restrict(self, t: int) -> int:
        return self.add(11, "", 0, t)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add(12, name, linkage, proto)

    def func_proto(self, ret: int, params: Sequence[Tuple[str, int]]) -> int:
        extra: List[int] = []
        for n, t in params:
            extra += [self.s(n), t]
        return self.add(13, "", len(params), ret, extra)

    def var(self, name: str, t: int, linkage: int = 1) -> int:
        return self.add(14, name, 0, t, [linkage])

    def datasec(self, name: str, size: int, vars_: Sequence[Tuple[int, int, int]]) -> int:
        extra: List[int] = []
        for t, off, sz in vars_:
            extra += [t, off, sz]
        return self.add(15, name, len(vars_), size, extra)

    def float_(self, name: str, size: int) -> int:
        return self.add(16, name, 0, size)

    def decl_tag(self, name: str, t: int, component: int = -1) -> int:
        return self.add(17, name, 0, t, [component])

    def type_tag(self, name: str, t: int) -> int:
        return self.add(18, name, 0, t)

    def build(self, order: str = "<", hdr_extra: bytes = b"") -> bytes:
        types = b"".join(struct.pack(f"{order}{len(r)}I", *r) for r in self.recs)
        hdr_len = 24 + len(hdr_extra)
        hdr = struct.pack(f"{order}HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(types), len(types),
                          len(self.strs)) + hdr_extra
        return hdr + types + bytes(self.strs)


INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


def make_sample() -> Tuple[BtfBuilder, Dict[str, int]]:
    """A blob with every kind, an event struct and a few functions."""
    b = BtfBuilder()
    ids: Dict[str, int] = {}
    ids["int"] = b.int_("int", 4, INT_SIGNED)
    ids["uint"] = b.int_("unsigned int", 4)
    ids["char"] = b.int_("char", 1, INT_SIGNED)
    ids["uchar"] = b.int_("unsigned char", 1)
    ids["ushort"] = b.int_("unsigned short", 2)
    ids["ull"] = b.int_("unsigned long long", 8)
    ids["ll"] = b.int_("long long", 8, INT_SIGNED)
    ids["bool"] = b.int_("_Bool", 1, INT_BOOL)
    ids["u64"] = b.typedef("u64", ids["ull"])
    ids["u32"] = b.typedef("u32", ids["uint"])
    ids["s32"] = b.typedef("s32", ids["int"])
    ids["u16"] = b.typedef("u16", ids["ushort"])
    ids["u8"] = b.typedef("u8", ids["uchar"])
    ids["float"] = b.float_("float", 4)
    ids["double"] = b.float_("double", 8)
    ids["comm_arr"] = b.array(ids["char"], 16, ids["int"])
    ids["u64x3"] = b.array(ids["u64"], 3, ids["int"])
    ids["u8x3"] = b.array(ids["u8"], 3, ids["int"])
    ids["inner"] = b.struct("inner", 8, [("a", ids["u32"], 0), ("b", ids["u16"], 32)])
    ids["union"] = b.struct("", 4, [("x", ids["u32"], 0), ("f", ids["float"], 0)], union=True)
    ids["state"] = b.enum("state", 4, [("ST_A", 0), ("ST_B", -1)], signed=True)
    ids["int_ptr"] = b.ptr(ids["int"])
    ids["anon"] = b.struct("", 4, [("c", ids["u16"], 0), ("d", ids["u16"], 16)])
    ids["event"] = b.struct("event", 96, [
        ("ts", ids["u64"], 0),
        ("pid", ids["s32"], 64),
        ("tid", ids["u32"], 96),
        ("comm", ids["comm_arr"], 128),
        ("args", ids["u64x3"], 256),
        ("in", ids["inner"], 448),
        ("u", ids["union"], 512),
        ("flag", ids["bool"], 544),
        ("raw", ids["u8x3"], 552),
        ("st", ids["state"], 576),
        ("p", ids["int_ptr"], 640),
        ("", ids["anon"], 704),
    ])
    ids["event_t"] = b.typedef("event_t", ids["event"])
    # qualifiers, tags, functions
    ids["const_char"] = b.const(ids["char"])
    ids["const_char_ptr"] = b.ptr(ids["const_char"])
    ids["user_tag"] = b.type_tag("user", ids["const_char"])
    ids["user_ptr"] = b.ptr(ids["user_tag"])
    ids["vol_int"] = b.volatile(ids["int"])
    ids["restrict_ptr"] = b.restrict(ids["int_ptr"])
    ids["file_fwd"] = b.fwd("file")
    ids["file_ptr"] = b.ptr(ids["file_fwd"])
    ids["u_fwd"] = b.fwd("uu", union=True)
    ids["big"] = b.enum64("big", [("BIG_A", 1 << 40), ("BIG_NEG", -5)], signed=True)
    ids["proto_open"] = b.func_proto(ids["int"], [("dfd", ids["int"]), ("name", ids["user_ptr"]),
                                                  ("f", ids["file_ptr"])])
    ids["do_open"] = b.func("do_open", ids["proto_open"], 1)
    ids["proto_void"] = b.func_proto(0, [])
    ids["do_nothing"] = b.func("do_nothing", ids["proto_void"], 0)
    ids["proto_va"] = b.func_proto(ids["int"], [("fmt", ids["const_char_ptr"]), ("", 0)])
    ids["printk"] = b.func("printk", ids["proto_va"], 2)
    ids["cb_proto"] = b.func_proto(0, [("", ids["int"]), ("", ids["restrict_ptr"])])
    ids["cb_ptr"] = b.ptr(ids["cb_proto"])
    ids["const_ptr"] = b.const(ids["int_ptr"])
    ids["arr_ptr"] = b.ptr(ids["comm_arr"])
    ids["ptr_arr"] = b.array(ids["const_char_ptr"], 4, ids["int"])
    ids["ops"] = b.struct("ops", 8, [("cb", ids["cb_ptr"], 0)])
    ids["do_cb"] = b.func("do_cb", b.func_proto(ids["vol_int"], [
        ("cb", ids["cb_ptr"]), ("cp", ids["const_ptr"]), ("ap", ids["arr_ptr"]),
        ("pa", ids["ptr_arr"]), ("big", ids["big"]), ("u", ids["u_fwd"])]))
    ids["tag"] = b.decl_tag("noinline", ids["do_open"], -1)
    ids["ptag"] = b.decl_tag("nonnull", ids["do_open"], 1)
    ids["var"] = b.var("my_event", ids["event"], 1)
    ids["sec"] = b.datasec(".bss", 96, [(ids["var"], 0, 96)])
    return b, ids


@pytest.fixture(scope="module")
def sample() -> Tuple[Btf, Dict[str, int]]:
    b, ids = make_sample()
    return Btf.from_bytes(b.build()), ids


EVENT_FIELDS = [
    # name, offset, size, kind, count
    ("ts", 0, 8, "uint", 1),
    ("pid", 8, 4, "int", 1),
    ("tid", 12, 4, "uint", 1),
    ("comm", 16, 16, "char_array", 16),
    ("args", 32, 24, "array", 3),
    ("in.a", 56, 4, "uint", 1),
    ("in.b", 60, 2, "uint", 1),
    ("u", 64, 4, "bytes", 4),
    ("flag", 68, 1, "bool", 1),
    ("raw", 69, 3, "bytes", 3),
    ("st", 72, 4, "int", 1),
    ("p", 80, 8, "ptr", 1),
    ("c", 88, 2, "uint", 1),
    ("d", 90, 2, "uint", 1),
]


def pack_event(order: str = "<", comm: bytes = b"bash\0garbage\0\0\0\0") -> bytes:
    buf = bytearray(96)
    struct.pack_into(order + "QiI", buf, 0, 1234567890123, -42, 7)
    buf[16:32] = comm.ljust(16, b"\0")[:16]
    struct.pack_into(order + "3Q", buf, 32, 1, 2, 2**64 - 1)
    struct.pack_into(order + "IH", buf, 56, 0xDEADBEEF, 513)
    struct.pack_into(order + "I", buf, 64, 0x01020304)
    buf[68] = 1
    buf[69:72] = b"\x01\x02\xff"
    struct.pack_into(order + "i", buf, 72, -1)
    struct.pack_into(order + "Q", buf, 80, 0xFFFF888000001000)
    struct.pack_into(order + "HH", buf, 88, 3, 4)
    return bytes(buf)


# --------------------------------------------------------------------------- sample blob

@pytest.mark.kernel_independent
def test_every_kind_parses(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, ids = sample
    kinds = {t.kind for t in btf.types()}
    assert kinds == set(Kind) - {Kind.VOID}
    btf.validate()
    assert len(btf) == max(ids.values())
    assert btf.type(0).kind == Kind.VOID and btf.type_str(0) == "void"


@pytest.mark.kernel_independent
def test_decoded_types(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, ids = sample
    t = btf.type(ids["int"])
    assert (t.kind, t.name, t.size, t.int_bits, t.signed) == (Kind.INT, "int", 4, 32, True)
    assert t.kind.name == "INT" and t.kind_name == "int"
    assert btf.type(ids["bool"]).is_bool and btf.type(ids["char"]).is_char
    arr = btf.type(ids["comm_arr"])
    assert arr.array == B.ArrayInfo(ids["char"], ids["int"], 16)
    ev = btf.type(ids["event"])
    assert ev.size == 96 and ev.vlen == 12 and ev.member("pid") == B.Member("pid", ids["s32"], 64)
    assert ev.member("nope") is None
    en = btf.type(ids["state"])
    assert en.signed and [(v.name, v.value) for v in en.enum_values] == [("ST_A", 0), ("ST_B", -1)]
    e64 = btf.type(ids["big"])
    assert [(v.name, v.value) for v in e64.enum_values] == [("BIG_A", 1 << 40), ("BIG_NEG", -5)]
    assert btf.type(ids["u_fwd"]).is_fwd_union and not btf.type(ids["file_fwd"]).is_fwd_union
    f = btf.type(ids["printk"])
    assert f.linkage_name == "extern" and btf.type(ids["do_nothing"]).linkage_name == "static"
    assert btf.type(ids["proto_va"]).is_varargs
    assert btf.type(ids["tag"]).component_idx == -1 and btf.type(ids["ptag"]).component_idx == 1
    v = btf.type(ids["var"])
    assert v.linkage == 1 and v.linkage_name == "global" and v.type_id == ids["event"]
    sec = btf.type(ids["sec"])
    assert sec.secinfo == (B.VarSecinfo(ids["var"], 0, 96),)
    assert btf.type(ids["user_tag"]).name == "user"
    assert btf.kind_of(ids["event"]) == Kind.STRUCT and btf.name_of(ids["event"]) == "event"
    assert btf.type(btf.type(ids["event"])) is btf.type(ids["event"])


@pytest.mark.kernel_independent
def test_find_resolve_size(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, ids = sample
    assert btf.get("event", "struct").id == ids["event"]
    assert btf.get("event", Kind.STRUCT).id == ids["event"]
    assert btf.find("event", "typedef") is None
    assert btf.find("event") is not None and btf.find("nope") is None
    assert btf.get("u64").kind == Kind.TYPEDEF
    assert [t.id for t in btf.find_all("int")] == [ids["int"]]
    assert [t.name for t in btf.find_all(kind="func")] == ["do_open", "do_nothing", "printk", "do_cb"]
    assert len(btf.find_all()) == len(btf) and btf.find_all(kind=Kind.VOID) == []
    assert btf.has("do_open", "func") and not btf.has("do_open", "struct")
    assert btf.find("", "ptr") is not None    # anonymous types can be found by ""
    assert btf.find("a\0b") is None
    with pytest.raises(ValueError):
        btf.find("x", "no-such-kind")
    assert btf.resolve(ids["u64"]).id == ids["ull"]
    assert btf.resolve(ids["user_tag"]).id == ids["char"]
    assert btf.resolve(btf.type(ids["event_t"])).id == ids["event"]
    assert btf.size_of(ids["event_t"]) == 96
    assert btf.size_of(ids["u64x3"]) == 24
    assert btf.size_of(ids["int_ptr"]) == 8
    assert btf.size_of(ids["var"]) == 96
    for bad in ("do_open", "proto_open", "file_fwd"):
        with pytest.raises(BtfError):
            btf.size_of(ids[bad])
    with pytest.raises(BtfError):
        btf.type(10_000)
    with pytest.raises(BtfNotFoundError) as ei:
        btf.get("evnt", "struct")
    assert "event" in ei.value.suggestions and isinstance(ei.value, KeyError)
    assert "did you mean: event" in str(ei.value)


@pytest.mark.kernel_independent
def test_type_strings(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, ids = sample
    ts = btf.type_str
    assert ts(ids["int"]) == "int"
    assert ts(ids["u64"]) == "u64"
    assert ts(ids["const_char_ptr"]) == "const char *"
    assert ts(ids["user_ptr"]) == "const char *"            # type tags are dropped
    assert ts(ids["file_ptr"]) == "struct file *"
    assert ts(ids["u_fwd"]) == "union uu"
    assert ts(ids["comm_arr"]) == "char [16]"
    assert ts(ids["comm_arr"], "comm") == "char comm[16]"
    assert ts(ids["cb_ptr"]) == "void (*)(int, int *restrict)"
    assert ts(ids["cb_ptr"], "cb") == "void (*cb)(int, int *restrict)"
    assert ts(ids["const_ptr"]) == "int *const"
    assert ts(ids["arr_ptr"]) == "char (*)[16]"
    assert ts(ids["ptr_arr"], "pa") == "const char *pa[4]"
    assert ts(ids["vol_int"]) == "volatile int"
    assert ts(ids["union"]) == "union {...}"
    assert ts(ids["state"]) == "enum state"
    assert ts(ids["big"]) == "enum big"
    assert ts(ids["do_open"]) == "int do_open(int, const char *, struct file *)"
    assert ts(ids["proto_va"]) == "int (const char *, ...)"
    assert ts(ids["var"]) == "struct event my_event"
    assert ts(ids["sec"]) == "SEC('.bss')"


@pytest.mark.kernel_independent
def test_functions_and_protos(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, _ = sample
    assert btf.functions() == ["do_cb", "do_nothing", "do_open", "printk"]
    assert btf.functions("do_*") == ["do_cb", "do_nothing", "do_open"]
    assert btf.functions("do_open") == ["do_open"]
    assert btf.functions("do_op") == []
    assert btf.functions("[dp]*n*") == ["do_nothing", "do_open", "printk"]
    p = btf.func_proto("do_open")
    assert p == FuncProto("do_open", [("dfd", "int"), ("name", "const char *"), ("f", "struct file *")],
                          "int", varargs=False, linkage="global",
                          param_type_ids=p.param_type_ids, ret_type_id=p.ret_type_id)
    assert str(p) == "int do_open(int dfd, const char *name, struct file *f)"
    assert str(btf.func_proto("do_nothing")) == "void do_nothing(void)"
    pk = btf.func_proto("printk")
    assert pk.varargs and pk.params == [("fmt", "const char *")] and pk.linkage == "extern"
    assert str(pk) == "int printk(const char *fmt, ...)"
    cb = btf.func_proto("do_cb")
    assert cb.ret == "volatile int"
    assert cb.params[0] == ("cb", "void (*)(int, int *restrict)")
    assert str(cb).startswith("volatile int do_cb(void (*cb)(int, int *restrict), int *const cp,")
    with pytest.raises(BtfNotFoundError) as ei:
        btf.func_proto("do_opne")
    assert ei.value.suggestions[0] == "do_open"
    assert btf.suggest("do_opne")[0] == "do_open"
    assert btf.suggest("evnt", "struct") == ["event"]
    assert btf.suggest("zzzzzz") == []


# --------------------------------------------------------------------------- layouts

def check_event_layout(layout: StructLayout, fields: Sequence[Tuple[str, int, int, str, int]] = EVENT_FIELDS) -> None:
    assert layout.size == 96
    got = [(f.name, f.offset, f.size, f.kind, f.count) for f in layout.fields]
    assert got == list(fields)


@pytest.mark.kernel_independent
def test_struct_layout(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, ids = sample
    layout = btf.struct_layout("event")
    assert layout.name == "event" and layout.byteorder == "<"
    check_event_layout(layout)
    args = layout.field("args")
    assert (args.elem_kind, args.elem_size, args.shape, args.type_name) == ("uint", 8, (3,), "u64 [3]")
    assert layout.field("comm").type_name == "char [16]"
    assert layout.struct.size == 96
    assert layout.format == "<QiI16s3QIH2x4s?3si4xQHH4x"
    # same layout through a typedef name, a type id and a BtfType
    assert btf.struct_layout("event_t").fields == layout.fields
    assert btf.struct_layout(ids["event"]).fields == layout.fields
    assert btf.struct_layout(btf.type(ids["event_t"])).fields == layout.fields
    with pytest.raises(BtfNotFoundError):
        btf.struct_layout("evnt")
    with pytest.raises(BtfUnsupportedError):
        btf.struct_layout(ids["union"])
    with pytest.raises(BtfUnsupportedError):
        btf.struct_layout(ids["int"])


@pytest.mark.kernel_independent
def test_numpy_dtype(sample: Tuple[Btf, Dict[str, int]]) -> None:
    np = pytest.importorskip("numpy")
    btf, _ = sample
    layout = btf.struct_layout("event")
    dt = layout.numpy_dtype()
    assert dt.itemsize == 96
    assert dt.fields is not None and dt.names is not None
    assert {n: dt.fields[n][1] for n in dt.names} == {f[0]: f[1] for f in EVENT_FIELDS}
    assert dt["comm"] == np.dtype("S16")
    assert dt["args"].shape == (3,) and dt["args"].base == np.dtype("<u8")
    assert dt["pid"] == np.dtype("<i4") and dt["flag"] == np.dtype("?")
    assert dt["raw"].shape == (3,) and dt["p"] == np.dtype("<u8")
    arr = np.frombuffer(pack_event() * 3, dtype=dt)
    assert arr["pid"].tolist() == [-42] * 3
    assert arr["comm"][0] == b"bash\0garbage"      # numpy strips trailing NULs only
    assert np.frombuffer(pack_event(comm=b"bash"), dtype=dt)["comm"][0] == b"bash"
    assert arr["args"][1].tolist() == [1, 2, 2**64 - 1]
    assert arr["in.b"][2] == 513 and arr["st"][0] == -1


EXPECTED_RECORD = {
    "ts": 1234567890123, "pid": -42, "tid": 7, "comm": "bash", "args": (1, 2, 2**64 - 1),
    "in.a": 0xDEADBEEF, "in.b": 513, "u": b"\x04\x03\x02\x01", "flag": True,
    "raw": b"\x01\x02\xff", "st": -1, "p": 0xFFFF888000001000, "c": 3, "d": 4,
}


@pytest.mark.kernel_independent
def test_decoder(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, _ = sample
    layout = btf.struct_layout("event")
    dec = layout.decoder()
    assert layout.decoder() is dec
    rec = dec(pack_event())
    assert rec._asdict() == EXPECTED_RECORD
    assert isinstance(rec, tuple) and isinstance(rec, layout.record_class())
    assert rec.comm == "bash" and rec.in_a == 0xDEADBEEF and rec.in_b == 513 and rec.pid == -42
    assert rec._fields == tuple(EXPECTED_RECORD)
    assert repr(rec).startswith("event(ts=1234567890123, pid=-42, tid=7, comm='bash'")
    # offset into a bigger buffer, memoryview and bytearray
    buf = b"\xaa" * 5 + pack_event()
    assert dec(buf, 5) == rec and dec(memoryview(buf), 5) == rec and dec(bytearray(buf), 5) == rec
    assert layout.decode(pack_event()) == rec
    # strings: no NUL, invalid UTF-8, empty
    assert dec(pack_event(comm=b"A" * 16)).comm == "A" * 16
    assert dec(pack_event(comm=b"\xff\xfeok\0")).comm == "\ufffd\ufffdok"
    assert dec(pack_event(comm=b"\0xyz")).comm == ""
    with pytest.raises(struct.error):
        dec(b"short")
    # pickle round trip
    again = pickle.loads(pickle.dumps(rec))
    assert again == rec and again._fields == rec._fields and again.comm == "bash"
    cls = layout.record_class()
    assert cls._make(range(14))[3] == 3


@pytest.mark.kernel_independent
def test_decoder_string_memo_stays_correct(sample: Tuple[Btf, Dict[str, int]]) -> None:
    btf, _ = sample
    dec = btf.struct_layout("event").decoder()
    rnd = random.Random(7)
    for i in range(B._STR_CACHE_MAX * 2 + 10):
        raw = rnd.randbytes(rnd.randrange(0, 17))
        want = raw.partition(b"\0")[0].decode("utf-8", "replace")
        assert dec(pack_event(comm=raw)).comm == want


@pytest.mark.kernel_independent
def test_plain_decoder_and_big_layouts() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    i8 = b.int_("s8", 1, INT_SIGNED)
    dbl = b.float_("double", 8)
    i128 = b.int_("__int128", 16, INT_SIGNED)
    b.struct("plain", 24, [("a", u32, 0), ("b", i8, 32), ("c", dbl, 64), ("e", u32, 128)])
    b.struct("one", 4, [("a", u32, 0)])
    big = b.array(u32, 300)
    b.struct("big", 1200, [("v", big, 0)])
    b.struct("wide", 32, [("x", i128, 0), ("ld", b.float_("long double", 16), 128)])
    b.struct("empty", 0, [])
    grid = b.array(b.array(u32, 3), 2)
    flex = b.array(u32, 0)
    b.struct("grid", 28, [("g", grid, 0), ("n", u32, 192), ("tail", flex, 224)])
    btf = Btf.from_bytes(b.build())
    plain = btf.struct_layout("plain")
    assert plain.format == "<Ib3xdI4x"
    assert plain.decode(struct.pack("<Ib3xdI4x", 5, -1, 2.5, 9)) == (5, -1, 2.5, 9)
    assert btf.struct_layout("one").decode(b"\x01\0\0\0") == (1,)
    vals = list(range(300))
    rec = btf.struct_layout("big").decode(struct.pack("<300I", *vals))
    assert rec.v == tuple(vals)
    w = btf.struct_layout("wide")
    assert [(f.kind, f.size, f.count) for f in w.fields] == [("int", 16, 1), ("bytes", 16, 16)]
    wrec = w.decode((-3).to_bytes(16, "little", signed=True) + b"\x01" * 16)
    assert wrec.x == -3 and wrec.ld == b"\x01" * 16
    assert btf.struct_layout("empty").decode(b"") == ()
    g = btf.struct_layout("grid")
    assert [(f.name, f.kind, f.count, f.shape) for f in g.fields] == [
        ("g", "array", 6, (2, 3)), ("n", "uint", 1, ())]
    assert g.decode(struct.pack("<7I", *range(7))) == (tuple(range(6)), 6, b"")
    # the flexible array member ends the struct: a variable-length record
    assert g.tail is not None and (g.tail.name, g.tail.offset) == ("tail", 28)
    var = g.decode(struct.pack("<9I", *range(9)), 0, 36)
    assert var.tail == struct.pack("<2I", 7, 8) and var._length == 36
    np = pytest.importorskip("numpy")
    assert g.numpy_dtype()["g"].shape == (2, 3)
    assert w.numpy_dtype()["x"] == np.dtype("V16")


@pytest.mark.kernel_independent
def test_bitfields_rejected() -> None:
    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    b.struct("bf_kflag", 4, [("a", u32, (3 << 24) | 0), ("b", u32, (5 << 24) | 3)], kflag=1)
    bits = b.int_("u32", 4, bits=3)
    b.struct("bf_legacy", 4, [("a", bits, 0)])
    b.struct("bf_unaligned", 4, [("a", b.int_("u8", 1), 3)])
    btf = Btf.from_bytes(b.build())
    for name in ("bf_kflag", "bf_legacy", "bf_unaligned"):
        with pytest.raises(BtfUnsupportedError, match="bitfield"):
            btf.struct_layout(name)


@pytest.mark.kernel_independent
def test_big_endian_blob() -> None:
    b, _ = make_sample()
    btf = Btf.from_bytes(b.build(">"))
    assert btf.byteorder == ">"
    btf.validate()
    assert btf.functions() == ["do_cb", "do_nothing", "do_open", "printk"]
    layout = btf.struct_layout("event")
    check_event_layout(layout)
    assert layout.decoder()(pack_event(">"))._asdict() == dict(EXPECTED_RECORD, u=b"\x01\x02\x03\x04")
    np = pytest.importorskip("numpy")
    assert layout.numpy_dtype()["pid"] == np.dtype(">i4")
    assert [(v.name, v.value) for v in btf.get("big").enum_values] == [("BIG_A", 1 << 40), ("BIG_NEG", -5)]


@pytest.mark.kernel_independent
def test_longer_header_is_accepted() -> None:
    b, _ = make_sample()
    btf = Btf.from_bytes(b.build(hdr_extra=b"\0" * 8))
    assert btf.struct_layout("event").size == 96


@pytest.mark.kernel_independent
def test_split_btf_and_module(tmp_path: Any) -> None:
    base, ids = make_sample()
    split = BtfBuilder(base)
    mod_s = split.struct("mod_state", 16, [("ev", ids["event_t"], 0), ("n", ids["int"], 64)])
    mod_s2 = split.struct("mod_event", 16, [("ts", ids["u64"], 0), ("comm", split.array(ids["char"], 8), 64)])
    split.func("mod_init", split.func_proto(ids["int"], [("st", split.ptr(mod_s))]))
    split.func("do_open", ids["proto_open"])    # same name as a base function
    base_btf = Btf.from_bytes(base.build())
    mod = Btf.from_bytes(split.build(), base=base_btf)
    assert mod.start_id == base_btf.end_id == split.first_id
    assert mod.type(ids["event"]).name == "event"          # base ids resolve
    assert mod.get("mod_state").id == mod_s
    assert mod.get("event", "struct").id == ids["event"]   # searches the base too
    assert [t.id for t in mod.find_all("do_open", "func")] == [ids["do_open"], mod.end_id - 1]
    assert mod.functions() == ["do_open", "mod_init"]
    assert mod.functions(include_base=True) == ["do_cb", "do_nothing", "do_open", "mod_init", "printk"]
    assert str(mod.func_proto("mod_init")) == "int mod_init(struct mod_state *st)"
    assert mod.struct_layout("mod_event").decode(struct.pack("<Q8s", 5, b"kworker\0")) == (5, "kworker")
    mod.validate()
    with pytest.raises(BtfError):
        mod.type(mod.end_id)
    # Btf.module() reads <sysfs_dir>/<name> on top of <sysfs_dir>/vmlinux
    (tmp_path / "vmlinux").write_bytes(base.build())
    (tmp_path / "mymod").write_bytes(split.build())
    try:
        m = Btf.module("mymod", sysfs_dir=str(tmp_path))
        assert Btf.module("mymod", sysfs_dir=str(tmp_path)) is m
        assert m.base is Btf.vmlinux(str(tmp_path / "vmlinux"))
        assert m.functions("mod_*") == ["mod_init"]
        assert Btf.module_names(str(tmp_path)) == ["mymod"]
        with pytest.raises(BtfNotFoundError) as ei:
            Btf.module("mymd", sysfs_dir=str(tmp_path))
        assert ei.value.suggestions == ["mymod"]
        with pytest.raises(ValueError):
            Btf.module("../etc", sysfs_dir=str(tmp_path))
    finally:
        B._MODULE_CACHE.pop((str(tmp_path), "mymod"), None)
        B._VMLINUX_CACHE.pop(str(tmp_path / "vmlinux"), None)


@pytest.mark.kernel_independent
def test_close_matches_equals_difflib_when_small() -> None:
    rnd = random.Random(1)
    alphabet = "abcdefg_"
    names = sorted({"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 14)))
                    for _ in range(600)})
    for _ in range(40):
        word = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 14)))
        for cutoff in (0.0, 0.6, 0.8):
            want = difflib.get_close_matches(word, names, 5, cutoff)
            assert B._close_matches(word, names, 5, cutoff, budget=10**9) == want
    assert B._close_matches("x", names, 0, 0.6) == []
    with pytest.raises(ValueError):
        B._close_matches("x", names, 3, 1.5)


# --------------------------------------------------------------------------- corrupt input

def _valid() -> bytes:
    return make_sample()[0].build()


def _hdr(data: bytes, **kw: int) -> bytes:
    names = ["magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len"]
    vals = dict(zip(names, struct.unpack_from("<HBBIIIII", data)))
    vals.update(kw)
    return struct.pack("<HBBIIIII", *(vals[n] for n in names)) + data[24:]


def _set_word(data: bytes, type_id: int, word: int, value: int) -> bytes:
    """Overwrite word ``word`` of type ``type_id``'s record (sample blob layout)."""
    btf = Btf.from_bytes(data)
    off = 24 + 4 * (btf._starts[type_id - 1] + word)
    return data[:off] + struct.pack("<I", value) + data[off + 4:]


def _loop_blob() -> bytes:
    b = BtfBuilder()
    a = b.typedef("A", 2)
    b.typedef("B", a)
    b.struct("s", 4, [("m", a, 0)])
    return b.build()


def _self_struct_blob() -> bytes:
    b = BtfBuilder()
    b.struct("s", 4, [("m", 1, 0)])    # a struct containing itself by value
    return b.build()


def _ptr_loop_blob() -> bytes:
    b = BtfBuilder()
    b.ptr(2)
    b.const(1)
    return b.build()


def _sample_id(name: str) -> int:
    return make_sample()[1][name]


CORRUPT: List[Tuple[str, Callable[[], bytes], Callable[[Btf], Any]]] = [
    ("empty", lambda: b"", lambda b: None),
    ("truncated header", lambda: _valid()[:10], lambda b: None),
    ("truncated header after hdr_len", lambda: _valid()[:20], lambda b: None),
    ("bad magic", lambda: b"\x12\x34" + _valid()[2:], lambda b: None),
    ("bad version", lambda: _valid()[:2] + b"\x02" + _valid()[3:], lambda b: None),
    ("hdr_len too small", lambda: _hdr(_valid(), hdr_len=8), lambda b: None),
    ("hdr_len past end", lambda: _hdr(_valid(), hdr_len=1 << 30), lambda b: None),
    ("type section past end", lambda: _hdr(_valid(), type_len=1 << 20), lambda b: None),
    ("string section past end", lambda: _hdr(_valid(), str_len=1 << 20), lambda b: None),
    ("type section misaligned", lambda: _hdr(_valid(), type_len=_hdr_field("type_len") - 2),
     lambda b: None),
    ("record cut short", lambda: _hdr(_valid(), type_len=_hdr_field("type_len") - 4),
     lambda b: None),
    ("overlapping sections", lambda: _hdr(_valid(), str_off=0), lambda b: None),
    ("strings not NUL-terminated", lambda: _valid()[:-1] + b"x", lambda b: None),
    ("strings not starting with NUL", lambda: _strs_first_byte(), lambda b: None),
    ("name offset out of range", lambda: _set_word(_valid(), 1, 0, 1 << 20),
     lambda b: b.type(1)),
    ("name offset out of range (validate)", lambda: _set_word(_valid(), 1, 0, 1 << 20),
     lambda b: b.validate()),
    ("member name offset out of range", lambda: _set_word(_valid(), _sample_id("event"), 3, 99999),
     lambda b: b.struct_layout(_sample_id("event"))),
    ("member type id out of range", lambda: _set_word(_valid(), _sample_id("event"), 4, 5000),
     lambda b: b.struct_layout("event")),
    ("member type id out of range (validate)", lambda: _set_word(_valid(), _sample_id("event"), 4, 5000),
     lambda b: b.validate()),
    ("param type id out of range", lambda: _set_word(_valid(), _sample_id("proto_open"), 4, 77777),
     lambda b: b.func_proto("do_open")),
    ("unknown kind", lambda: _set_word(_valid(), 3, 1, 25 << 24), lambda b: None),
    ("kind 0", lambda: _set_word(_valid(), 3, 1, 0), lambda b: None),
    ("huge vlen", lambda: _set_word(_valid(), _sample_id("event"), 1, (4 << 24) | 0xFFFF),
     lambda b: None),
    ("typedef loop in resolve", _loop_blob, lambda b: b.resolve(b.get("A"))),
    ("typedef loop in validate", _loop_blob, lambda b: b.validate()),
    ("typedef loop in layout", _loop_blob, lambda b: b.struct_layout("s")),
    ("struct contains itself", _self_struct_blob, lambda b: b.struct_layout("s")),
    ("pointer loop in type_str", _ptr_loop_blob, lambda b: b.type_str(1)),
    ("func not pointing at a proto", lambda: _set_word(_valid(), _sample_id("do_open"), 2, 1),
     lambda b: b.func_proto("do_open")),
    ("func not pointing at a proto (validate)", lambda: _set_word(_valid(), _sample_id("do_open"), 2, 1),
     lambda b: b.validate()),
    ("member past the struct end", lambda: _set_word(_valid(), _sample_id("event"), 5, 96 * 8),
     lambda b: b.struct_layout("event")),
    ("array elem out of range", lambda: _set_word(_valid(), _sample_id("comm_arr"), 3, 4000),
     lambda b: b.struct_layout("event")),
    ("not an ELF file", lambda: _valid(), lambda b: Btf.from_elf(b"\x7fELF garbage")),
    ("ELF without .BTF", lambda: _valid(), lambda b: Btf.from_elf(_elf_without_btf())),
]


def _hdr_field(name: str) -> int:
    names = ["magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len"]
    return int(dict(zip(names, struct.unpack_from("<HBBIIIII", _valid())))[name])


def _strs_first_byte() -> bytes:
    d = bytearray(_valid())
    d[24 + _hdr_field("str_off")] = ord("x")
    return bytes(d)


def _elf_without_btf() -> bytes:
    with open("/bin/true", "rb") as f:   # an ordinary program: an ELF without .BTF
        return f.read()


@pytest.mark.parametrize("name,make,action", CORRUPT, ids=[c[0] for c in CORRUPT])
@pytest.mark.kernel_independent
def test_corrupt_input_raises_btf_decode_error(name: str, make: Callable[[], bytes],
                                               action: Callable[[Btf], Any]) -> None:
    """Every kind of damage, found while parsing or later while following the
    type graph, raises BtfDecodeError: a PytracersError, an InvalidObjectError
    and a BtfError (so ``except BtfError`` keeps catching it)."""
    data = make()
    with pytest.raises(BtfDecodeError) as ei:
        btf = Btf.from_bytes(data, name="blob.btf")
        action(btf)
        raise AssertionError(f"{name}: no BtfDecodeError")  # pragma: no cover
    e = ei.value
    assert isinstance(e, E.PytracersError) and isinstance(e, E.InvalidObjectError)
    assert isinstance(e, BtfError) and isinstance(e, ValueError)
    assert e.problem and str(e).startswith(f"{e.path}: ") and e.path in ("blob.btf", "<bytes>")


@pytest.mark.kernel_independent
def test_damaged_blob_without_a_name() -> None:
    """A damaged blob that has no name (as ``Object.btf`` parses it) says only
    what is wrong, and is still a BtfDecodeError with ``path == ""``."""
    with pytest.raises(BtfDecodeError) as ei:
        Btf.from_bytes(b"\x12\x34" + _valid()[2:])
    assert str(ei.value) == "bad BTF magic 0x3412 (expected 0xeb9f)"
    assert ei.value.path == "" and ei.value.problem == str(ei.value)
    assert isinstance(ei.value, E.PytracersError)


@pytest.mark.kernel_independent
def test_btf_errors_are_pytracers_errors(sample: Tuple[Btf, Dict[str, int]],
                                         tmp_path: Any) -> None:
    """What a caller gets wrong or asks for in vain raises a PytracersError of
    the matching builtin family, one class in both pytracers.btf and
    pytracers.errors (and so in pytracers)."""
    btf, ids = sample
    for name in ("BtfError", "BtfNotFoundError", "BtfUnsupportedError", "BtfDecodeError"):
        assert getattr(B, name) is getattr(E, name) is getattr(pytracers, name)
        assert issubclass(getattr(B, name), E.PytracersError)
    cases: List[Tuple[Callable[[], Any], Tuple[type, ...]]] = [
        (lambda: btf.get("nope", "struct"), (BtfNotFoundError, KeyError, LookupError)),
        (lambda: btf.func("nope"), (BtfNotFoundError, KeyError)),
        (lambda: btf.struct_layout("nope"), (BtfNotFoundError, KeyError)),
        (lambda: btf.struct_layout("event").field("nope"), (BtfNotFoundError, KeyError)),
        (lambda: btf.struct_layout(ids["union"]), (BtfUnsupportedError, ValueError)),
        (lambda: btf.type(10_000), (BtfError,)),
        (lambda: btf.size_of(ids["do_open"]), (BtfError,)),
        (lambda: btf.find("x", "no-such-kind"), (E.BadArgumentError, ValueError)),
        (lambda: btf.type("1"), (E.BadTypeError, TypeError)),
        (lambda: btf.suggest("x", cutoff=2.0), (E.BadArgumentError, ValueError)),
        (lambda: Btf.module("../etc", sysfs_dir=str(tmp_path)), (E.BadArgumentError, ValueError)),
    ]
    for call, classes in cases:
        with pytest.raises(E.PytracersError) as ei:
            call()
        assert isinstance(ei.value, classes), (ei.value, classes)
        assert not isinstance(ei.value, BtfDecodeError)    # nothing here is damaged
    with pytest.raises(BtfNotFoundError) as nf:
        btf.struct_layout("event").field("tss")
    assert str(nf.value) == "no field 'tss' in struct event"


def _exercise(data: bytes) -> None:
    """Use every read path of the API on ``data``."""
    btf = Btf.from_bytes(data)
    for tid in range(btf.end_id):
        t = btf.type(tid)
        btf.kind_of(tid)
        btf.name_of(tid)
        for fn in (btf.resolve, btf.type_str, btf.size_of):
            try:
                fn(t)
            except BtfError:
                pass
        if t.kind == Kind.STRUCT:
            try:
                layout = btf.struct_layout(t)
            except BtfError:
                continue
            if layout.size <= 4096:
                layout.decoder()(bytes(layout.size))
                layout.numpy_dtype()
    for name in btf.functions():
        try:
            btf.func_proto(name)
        except BtfError:
            pass
    btf.suggest("do_opne")
    btf.find("event", "struct")
    btf.find_all(kind="func")
    btf.validate()


@pytest.mark.kernel_independent
def test_fuzz_mutations_only_raise_btf_decode_error() -> None:
    """Random damage to a valid blob either leaves something every read path
    can use or raises BtfDecodeError: never IndexError, struct.error, ..."""
    pytest.importorskip("numpy")
    base = _valid()
    _exercise(base)
    rnd = random.Random(0xEB9F)
    outcomes = {"ok": 0, "BtfDecodeError": 0}
    for i in range(2000):
        data = bytearray(base)
        r = rnd.random()
        if r < 0.1:
            data = data[:rnd.randrange(len(data))]
        else:
            # header bytes are mutated more often: they carry every offset
            pos = rnd.randrange(24) if r < 0.3 else rnd.randrange(len(data))
            data[pos] = rnd.randrange(256)
        try:
            _exercise(bytes(data))
            outcomes["ok"] += 1
        except BtfDecodeError:
            outcomes["BtfDecodeError"] += 1
        except Exception as e:  # pragma: no cover - this is the failure we look for
            raise AssertionError(f"mutation {i}: {type(e).__name__}: {e}") from e
    assert outcomes["ok"] > 100 and outcomes["BtfDecodeError"] > 100


def test_ring_buffer_unknown_event_is_a_pytracers_error() -> None:
    """``Object.ring_buffer(event=...)`` naming a struct that the object's BTF
    lacks raises BtfNotFoundError -- a PytracersError and a KeyError -- with
    close matches."""
    o = pytracers.open(pytracers.object_path("bench"))
    o.only("fill_8")
    with o.load() as obj:
        with pytest.raises(E.PytracersError) as ei:
            obj.ring_buffer(event="nope")
        assert isinstance(ei.value, BtfNotFoundError) and isinstance(ei.value, KeyError)
        assert str(ei.value).startswith("no struct 'nope' in BTF")
        with pytest.raises(BtfNotFoundError) as ei:
            obj.ring_buffer(event="bench_rec9")
        assert "bench_rec8" in ei.value.suggestions
        assert obj.ring_buffer(event="bench_rec8").event == "bench_rec8"


# --------------------------------------------------------------------------- live kernel

needs_vmlinux = pytest.mark.skipif(not os.path.exists(VMLINUX),
                                   reason="no /sys/kernel/btf/vmlinux (kernel without BTF)")


@pytest.fixture(scope="module")
def vmlinux() -> Btf:
    if not os.path.exists(VMLINUX):
        pytest.skip("no /sys/kernel/btf/vmlinux (kernel without BTF)")
    return Btf.vmlinux()


def test_vmlinux_cached_and_fast() -> None:
    if not os.path.exists(VMLINUX):
        pytest.skip("no /sys/kernel/btf/vmlinux (kernel without BTF)")
    Btf.clear_cache()
    t0 = time.perf_counter()
    btf = Btf.vmlinux()
    funcs = btf.functions("vfs_*")
    elapsed = time.perf_counter() - t0
    assert "vfs_read" in funcs and all(f.startswith("vfs_") for f in funcs)
    assert Btf.vmlinux() is btf
    assert elapsed < 5.0, f"vmlinux parse + functions glob took {elapsed:.2f}s"


def _unlinkat(vmlinux: Btf) -> str:
    """do_unlinkat, renamed filename_unlinkat in 7.x (same parameters)."""
    for name in ("do_unlinkat", "filename_unlinkat"):
        if vmlinux.find(name, "func") is not None:
            return name
    pytest.fail("neither do_unlinkat nor filename_unlinkat is in this kernel's BTF")


def test_vmlinux_functions(vmlinux: Btf) -> None:
    name = _unlinkat(vmlinux)
    assert vmlinux.functions(name) == [name]
    assert name in vmlinux.functions(name[:-3] + "*")
    allf = vmlinux.functions()
    assert len(allf) > 10_000 and allf == sorted(set(allf))
    assert vmlinux.find(name, "func") is not None
    assert vmlinux.find(name + "_nope", "func") is None


def test_vmlinux_func_proto(vmlinux: Btf) -> None:
    name = _unlinkat(vmlinux)
    p = vmlinux.func_proto(name)
    assert [n for n, _ in p.params] == ["dfd", "name"]
    assert p.params[0][1] == "int"
    assert p.params[1][1] == "struct filename *"
    assert p.ret in ("int", "long int")        # long on 5.10, int later
    assert str(p) == f"{p.ret} {name}(int dfd, struct filename *name)"
    vr = vmlinux.func_proto("vfs_read")
    assert [n for n, _ in vr.params] == ["file", "buf", "count", "pos"]
    assert vr.params[0][1] == "struct file *" and vr.params[3][1] == "loff_t *"


def test_vmlinux_suggest(vmlinux: Btf) -> None:
    name = _unlinkat(vmlinux)
    typo = name[:-2] + "t"                     # do_unlinkt / filename_unlinkt
    assert name in vmlinux.suggest(typo)
    assert vmlinux.suggest("tsk_struct", "struct")[0] == "task_struct"
    with pytest.raises(BtfNotFoundError) as ei:
        vmlinux.func_proto(typo)
    assert name in ei.value.suggestions


def _bpftool_member_bits_offset(struct_name: str, member: str) -> Tuple[int, int]:
    """(struct size, member bits_offset) from bpftool's raw dump of vmlinux,
    read only as far as the struct (the whole dump of a kernel's BTF is tens
    of MB of text: most of a minute under qemu)."""
    p = subprocess.Popen(["bpftool", "btf", "dump", "file", VMLINUX, "format", "raw"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    size = None
    try:
        for line in p.stdout:
            if line.startswith("["):
                if size is not None:
                    break
                if f" STRUCT '{struct_name}' " in line:
                    size = int(line.split("size=")[1].split()[0])
            elif size is not None and line.strip().startswith(f"'{member}' "):
                return size, int(line.split("bits_offset=")[1].split()[0])
    finally:
        p.stdout.close()
        if p.poll() is None:
            p.kill()
        p.wait()
    raise AssertionError(f"bpftool output has no {struct_name}.{member}")


def test_vmlinux_task_struct_matches_bpftool(vmlinux: Btf) -> None:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    ts = vmlinux.find("task_struct", "struct")
    assert ts is not None and ts.size > 0
    pid = ts.member("pid")
    assert pid is not None
    size, bits = _bpftool_member_bits_offset("task_struct", "pid")
    assert (ts.size, pid.bit_offset) == (size, bits)
    assert vmlinux.size_of(pid.type_id) == 4


def test_vmlinux_func_protos_render(vmlinux: Btf) -> None:
    # a spread sample of FUNCs must have printable prototypes
    names = vmlinux.functions()
    for name in names[:: max(1, len(names) // 1500)]:
        p = vmlinux.func_proto(name)
        assert str(p).count("(") >= 1 and p.name == name


# --------------------------------------------------------------------------- clang objects

C_SOURCE = r"""
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
enum state { ST_A, ST_B = 5 };
struct inner { u32 a; u16 b; };
struct event {
    u64 ts;
    int pid;
    u32 tid;
    char comm[16];
    u64 args[3];
    struct inner in;
    union { u32 x; float f; } u;
    _Bool flag;
    u8 raw[3];
    enum state st;
    int *p;
    struct { u16 c; u16 d; };
};
struct event ev_holder;
int handle(struct event *e, const char *name) { return e->pid + name[0]; }
"""

CLANG_EVENT_FIELDS = [f if f[0] != "st" else ("st", 72, 4, "uint", 1) for f in EVENT_FIELDS]


@pytest.mark.skipif(not os.path.exists(CLANG), reason="clang-19 not installed")
@pytest.mark.parametrize("target,order", [("bpfel", "<"), ("bpfeb", ">")])
@pytest.mark.kernel_independent
def test_clang_object(tmp_path: Any, target: str, order: str) -> None:
    src = tmp_path / "ev.c"
    obj = tmp_path / "ev.bpf.o"
    src.write_text(C_SOURCE)
    subprocess.run([CLANG, "-g", "-O2", "-target", target, "-c", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    btf = Btf.from_elf(obj)
    assert btf.byteorder == order
    btf.validate()
    assert Btf.from_elf(obj.read_bytes()).struct_layout("event").fields == \
        btf.struct_layout("event").fields
    assert Btf.from_file(obj).find("event", "struct") is not None
    layout = btf.struct_layout("event")
    check_event_layout(layout, CLANG_EVENT_FIELDS)
    rec = layout.decoder()(pack_event(order))
    want = dict(EXPECTED_RECORD, st=0xFFFFFFFF)
    if order == ">":
        want["u"] = b"\x01\x02\x03\x04"
    assert rec._asdict() == want
    assert str(btf.func_proto("handle")) == "int handle(struct event *e, const char *name)"
    assert btf.find("ev_holder", "var") is not None
