"""User-space function prototypes from DWARF (pyelftools): the names and types
of a function's parameters and its return type, as a
:class:`pytracers.kernel.symbols.Signature` -- the same shape the kernel
function tracers build from BTF, so user and kernel function events decode
alike.

Only binaries built with ``-g`` (or with their debug file installed under
``/usr/lib/debug/.build-id``, passed as ``debug_file``) have DWARF; without it
a user function's arguments stay ``arg0..arg5``, raw 64-bit registers, since
a symbol table gives no types.

Finding the function: given its address, ``.debug_aranges`` names the one
compilation unit that holds it, so only that unit is read whatever the size
of the program's DWARF; without an address or aranges every unit is
scanned, which is done only up to :data:`MAX_DEBUG_INFO` bytes of
``.debug_info`` (a full scan of a big program takes seconds).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..kernel.symbols import Signature, converter

__all__ = ["dwarf_signature", "MAX_DEBUG_INFO"]

# Larger .debug_info is not scanned unit by unit (seconds for a big program);
# an address found in .debug_aranges reads one unit at any size.
MAX_DEBUG_INFO = 16 * 1024 * 1024
_DW_ATE_BOOLEAN, _DW_ATE_FLOAT, _DW_ATE_SIGNED, _DW_ATE_SIGNED_CHAR = 2, 4, 5, 6
_QUALIFIERS = ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_restrict_type",
               "DW_TAG_atomic_type")

_CACHE: Dict[Tuple[str, int, int, str, Optional[int], Optional[str]], Optional[Signature]] = {}


def _name(die: Any) -> Optional[str]:
    a = die.attributes.get("DW_AT_name")
    return a.value.decode("utf-8", "replace") if a is not None else None


def _type_of(die: Any) -> Optional[Any]:
    if "DW_AT_type" not in die.attributes:
        return None
    return die.get_DIE_from_attribute("DW_AT_type")


def _describe(die: Optional[Any], depth: int = 0) -> Tuple[str, Optional[Callable[[int], Any]]]:
    """(C spelling, converter of a 64-bit register) of a DWARF type; None: void."""
    if die is None:
        return "void", None
    if depth > 16:
        return "?", converter(64, False)
    tag = die.tag
    if tag in _QUALIFIERS:
        inner, conv = _describe(_type_of(die), depth + 1)
        word = tag[len("DW_TAG_"):-len("_type")]
        return (f"{word} {inner}" if conv is not None or inner == "void" else inner,
                conv if conv is not None else None)
    if tag == "DW_TAG_typedef":
        _inner, conv = _describe(_type_of(die), depth + 1)
        return _name(die) or _inner, conv
    if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
        inner, _c = _describe(_type_of(die), depth + 1)
        return inner + ("*" if inner.endswith("*") else " *"), converter(64, False)
    size = die.attributes.get("DW_AT_byte_size")
    nbytes = size.value if size is not None else 8
    if tag == "DW_TAG_base_type":
        enc = die.attributes.get("DW_AT_encoding")
        e = enc.value if enc is not None else 0
        name = _name(die) or "?"
        if e == _DW_ATE_FLOAT:       # passed in vector registers, not the integer ones
            return name, _unknown
        if 0 < nbytes <= 8:
            if e == _DW_ATE_BOOLEAN:
                return name, lambda v: bool(v & 0xFF)
            return name, converter(nbytes * 8, e in (_DW_ATE_SIGNED, _DW_ATE_SIGNED_CHAR))
        return name, _unknown
    if tag == "DW_TAG_enumeration_type":
        under = _type_of(die)
        signed = False
        if under is not None:
            _n, c = _describe(under, depth + 1)
            signed = c is not None and c(-1 & 0xFFFFFFFFFFFFFFFF) == -1
        return "enum " + (_name(die) or ""), converter(min(nbytes, 8) * 8, signed)
    kind = {"DW_TAG_structure_type": "struct ", "DW_TAG_union_type": "union ",
            "DW_TAG_class_type": "class "}.get(tag, "")
    return kind + (_name(die) or "?"), _unknown   # passed by value: not one register


def _unknown(v: int) -> None:
    return None


def _find_subprogram(dwarf: Any, symbol: str, cus: Optional[List[Any]] = None,
                     address: Optional[int] = None) -> Optional[Any]:
    """The definition of ``symbol``: by name (or linkage name), or -- in the
    units given -- by its entry address (``DW_AT_low_pc``), which also finds a
    function its symbol names by an alias (libc's ``malloc`` is
    ``__libc_malloc`` in DWARF)."""
    for cu in (cus if cus is not None else dwarf.iter_CUs()):
        for die in cu.get_top_DIE().iter_children():
            if die.tag != "DW_TAG_subprogram":
                continue
            attrs = die.attributes
            if "DW_AT_declaration" in attrs:
                continue
            low = attrs.get("DW_AT_low_pc")
            if address is not None and low is not None and low.value == address:
                return die
            link = attrs.get("DW_AT_linkage_name") or attrs.get("DW_AT_MIPS_linkage_name")
            names = {_name(die)}
            if link is not None:
                names.add(link.value.decode("utf-8", "replace"))
            if symbol in names:
                return die
            if "DW_AT_specification" in attrs or "DW_AT_abstract_origin" in attrs:
                key = ("DW_AT_specification" if "DW_AT_specification" in attrs
                       else "DW_AT_abstract_origin")
                origin = die.get_DIE_from_attribute(key)
                if _name(origin) == symbol:
                    return die
    return None


def _params(die: Any) -> List[Any]:
    out = []
    for child in die.iter_children():
        if child.tag == "DW_TAG_formal_parameter":
            out.append(child)
    if not out and "DW_AT_abstract_origin" in die.attributes:
        return _params(die.get_DIE_from_attribute("DW_AT_abstract_origin"))
    return out


def dwarf_signature(path: str, symbol: str, address: Optional[int] = None,
                    debug_file: Optional[str] = None) -> Optional[Signature]:
    """The prototype of function ``symbol`` of the binary at ``path`` from its
    DWARF (or that of ``debug_file``, its separate debug file), or None (no
    DWARF, too much of it to scan without ``address``, or no such function
    there).  ``address``: the symbol's value, to find its compilation unit
    through ``.debug_aranges``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_ino, st.st_mtime_ns, symbol, address, debug_file)
    if key in _CACHE:
        return _CACHE[key]
    sig = None
    for f, scan in ((path, True), (debug_file, False)):
        if f is None:
            continue
        try:
            sig = _read(f, symbol, address, scan)
        except Exception:   # noqa: BLE001 -- damaged or unusual DWARF: no types, not an error
            sig = None
        if sig is not None:
            break
    _CACHE[key] = sig
    return sig


def _units_at(dwarf: Any, address: Optional[int]) -> Optional[List[Any]]:
    """The compilation unit ``.debug_aranges`` gives for ``address`` (None:
    no address, no aranges, or not covered)."""
    if address is None:
        return None
    aranges = dwarf.get_aranges()
    if aranges is None:
        return None
    off = aranges.cu_offset_at_addr(address)
    if off is None:
        return None
    return [dwarf.get_CU_at(off)]


def _read(path: str, symbol: str, address: Optional[int] = None,
          scan: bool = True) -> Optional[Signature]:
    """The signature from ``path``'s DWARF: in the unit .debug_aranges gives
    for ``address``, else (``scan`` and a small enough .debug_info) by
    scanning every unit."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        info = elf.get_section_by_name(".debug_info")
        if info is None or not elf.has_dwarf_info():
            return None
        dwarf = elf.get_dwarf_info()
        units = _units_at(dwarf, address)
        if units is not None:
            die = _find_subprogram(dwarf, symbol, units, address)
        elif scan and info["sh_size"] <= MAX_DEBUG_INFO:
            die = _find_subprogram(dwarf, symbol)
        else:
            return None
        if die is None:
            return None
        origin = die
        if "DW_AT_abstract_origin" in die.attributes:
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
        rt = _type_of(origin)
        if rt is not None and rt.tag == "DW_TAG_unspecified_type":
            return None     # an assembly routine (libc's syscall stubs): no prototype
        ret_type, ret_conv = _describe(rt)
        names: List[str] = []
        types: List[str] = []
        convs: List[Callable[[int], Any]] = []
        for i, p in enumerate(_params(die)):
            src = p
            if "DW_AT_abstract_origin" in p.attributes:
                src = p.get_DIE_from_attribute("DW_AT_abstract_origin")
            t, c = _describe(_type_of(src))
            names.append(_name(src) or f"arg{i}")
            types.append(t)
            convs.append(c if c is not None else _unknown)
    return Signature(symbol, tuple(names), tuple(types), ret_type, len(names), tuple(convs),
                     ret_conv, tuple(range(len(names))))
