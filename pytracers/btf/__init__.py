"""A pure-Python reader for BTF, the BPF Type Format.

Two uses in pytracers:

* Event layouts.  The struct a BPF program writes into a ring buffer is read
  from the ``.BTF`` section of our own compiled ``.bpf.o`` object
  (:meth:`Btf.from_elf`, :meth:`Btf.struct_layout`), so no struct is declared
  twice.  :class:`StructLayout` turns it into a precompiled :class:`struct.Struct`,
  a numpy structured dtype and a fast per-event decoder.
* Kernel types.  ``/sys/kernel/btf/vmlinux`` (:meth:`Btf.vmlinux`) and module
  BTF (:meth:`Btf.module`, split BTF on top of vmlinux) answer: which functions
  exist (:meth:`Btf.functions`, glob), what a function's prototype is
  (:meth:`Btf.func_proto`), does a struct exist (:meth:`Btf.find`), and what
  did the user probably mean (:meth:`Btf.suggest`).

Format reference: the kernel's Documentation/bpf/btf.rst.  A BTF blob is a
header (magic 0xeB9F, version 1, hdr_len, then type/string section offsets
relative to the end of the header), a type section of variable-length records
(``name_off, info, size|type`` followed by kind-specific data) and a string
section of NUL-terminated strings.  Type id 0 is ``void``; the first record
is id 1.  Split BTF (kernel modules) continues the id space and the string
offset space of its base (vmlinux).

Design notes
------------
* Parsing is lazy.  :class:`Btf` copies the type section once into a native
  ``array`` of 32-bit words (byte-swapped if needed) and walks it once,
  recording for every type only where its record starts and its kind.  A
  :class:`BtfType` is decoded on first use and cached; names are decoded from
  the string section on demand and cached (listing a kind's names decodes the
  whole section in one ``split``).  A name look-up searches the string section
  for ``name\\0`` and the packed name offsets of all types for the offsets
  found (both C-speed bytes searches), so a single look-up decodes no other
  name; after many look-ups on one blob a full name -> ids dict is built.
* Type ids and kinds may be given as ``int``/:class:`Kind` or as lower-case
  names (``"struct"``, ``"func"``).  A split blob answers for its base's ids
  too; :meth:`Btf.functions` and :meth:`Btf.names` list only the blob's own
  types unless ``include_base=True``, :meth:`Btf.find` searches base first.
* Byte order: the magic is accepted in either byte order.  A blob written on
  a machine of the other byte order is parsed correctly (its words are
  byte-swapped on load), and layouts made from it decode data in *that* byte
  order (:attr:`Btf.byteorder`), which is the byte order of the BPF target
  that produced the object.
* Errors: BTF errors derive from :class:`BtfError`, a ``PytracersError``
  (the classes live in :mod:`pytracers.errors` and are re-exported here);
  never ``IndexError``/``struct.error``/``RecursionError``.  Bytes that cannot
  be right (bad magic, truncation, unknown kinds, string offsets out of range,
  cycles in the type graph, a FUNC without its FUNC_PROTO) raise
  :class:`BtfDecodeError`, also an ``InvalidObjectError``.  A name that is not
  there raises :class:`BtfNotFoundError` (also a ``KeyError``), a layout we do
  not handle (bitfields, unions at top level) :class:`BtfUnsupportedError`
  (also a ``ValueError``), a type id out of range or the size of a type that
  has none :class:`BtfError` itself.  An unknown kind name or a type id that
  is not an int raise ``BadArgumentError`` / ``BadTypeError`` (a
  ``ValueError`` / ``TypeError``, as before).
* Pointers are assumed to be 8 bytes (BPF is a 64-bit target) unless the ELF
  file given to :meth:`Btf.from_elf` is 32-bit; see :attr:`Btf.ptr_size`.

Event layout rules (:meth:`Btf.struct_layout`)
----------------------------------------------
* Nested structs are flattened: their leaf members become fields named with
  a dotted path (``"key.pid"``).  Members of an anonymous nested struct are
  promoted without a prefix, as C does.
* A union member becomes a single ``"bytes"`` field holding its raw bytes
  (an anonymous union is named ``_anon_<offset>``).  A struct whose top-level
  type is a union is rejected.
* Field kinds: ``"int"``/``"uint"`` (integers and enums, by signedness),
  ``"bool"``, ``"float"``, ``"ptr"`` (an unsigned integer holding an address),
  ``"char_array"`` (a one-dimensional array of plain ``char``: decoded to
  ``str`` cut at the first NUL, UTF-8 with ``errors="replace"``),
  ``"bytes"`` (arrays of other one-byte integers such as ``u8``/``__u8``,
  unions, arrays of structs and anything else opaque: decoded to ``bytes``)
  and ``"array"`` (arrays of numbers: decoded to a flat tuple; the numpy
  dtype keeps the shape).
* Bitfields are rejected with :class:`BtfUnsupportedError`.  Zero-length
  arrays are not fields of the fixed layout; one that ends the struct (a
  flexible array member, ``__u8 data[]``) makes it variable-length: records
  get the member's bytes as their last field (``b""`` when decoded without a
  length) and ``rec._length`` (``StructLayout.tail``).
* Records (:meth:`StructLayout.record_class`) are tuple subclasses; a field
  ``a.b`` is the attribute ``a_b`` and keeps its dotted name in ``_fields`` /
  ``_asdict()``.

Layout of the package
---------------------
``reader.py`` (the :class:`Btf` class: header, record framing, strings, types
by id, loading and caching kernel BTF), ``types.py`` (:class:`Kind` and the
value classes), ``names.py`` (look-ups by name), ``suggest.py`` (close
matches), ``graph.py`` (modifier chains, sizes, C declarations, prototypes,
validation) and ``layout.py`` (event layouts and their decoders).
"""
from __future__ import annotations

from ..errors import BtfDecodeError, BtfError, BtfNotFoundError, BtfUnsupportedError
from .layout import _STR_CACHE_MAX, Field, Record, StructLayout, _rebuild_record
from .reader import (_MODULE_CACHE, _VMLINUX_CACHE, BTF_MAGIC, BTF_VERSION, SYSFS_BTF_DIR,
                     VMLINUX_PATH, Btf)
from .suggest import _close_matches
from .types import (INT_BOOL, INT_CHAR, INT_SIGNED, ArrayInfo, BtfType, EnumValue, FuncProto,
                    Kind, KindLike, Member, Param, VarSecinfo)

# Private names kept importable from here: the caches and limits (tests), and
# the function old pickles of records name as ``pytracers.btf._rebuild_record``.

__all__ = [
    "BTF_MAGIC", "VMLINUX_PATH", "SYSFS_BTF_DIR",
    "BtfError", "BtfNotFoundError", "BtfUnsupportedError", "BtfDecodeError",
    "Kind", "KindLike", "Member", "EnumValue", "Param", "VarSecinfo", "ArrayInfo", "BtfType",
    "FuncProto", "Field", "StructLayout", "Record", "Btf",
    "INT_SIGNED", "INT_CHAR", "INT_BOOL",
]
