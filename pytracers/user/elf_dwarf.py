"""User-space function prototypes from DWARF (pyelftools): the names and types
of a function's parameters and its return type, as a
:class:`pytracers.kernel.symbols.Signature` -- the same shape the kernel
function tracers build from BTF, so user and kernel function events decode
alike.

Only binaries built with ``-g`` (or with their debug file installed under
``/usr/lib/debug/.build-id``) have DWARF; without it a user function's
arguments stay ``arg0..arg5``, raw 64-bit registers, since a symbol table
gives no types.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..kernel.symbols import Signature, converter

__all__ = ["dwarf_signature", "MAX_DEBUG_INFO"]

# Larger .debug_info is not scanned (a full scan of a big program takes seconds).
MAX_DEBUG_INFO = 16 * 1024 * 1024
_DW_ATE_BOOLEAN, _DW_ATE_FLOAT, _DW_ATE_SIGNED, _DW_ATE_SIGNED_CHAR = 2, 4, 5, 6
_QUALIFIERS = ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_restrict_type",
               "DW_TAG_atomic_type")

_CACHE: Dict[Tuple[str, int, int, str], Optional[Signature]] = {}


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


def _find_subprogram(dwarf: Any, symbol: str) -> Optional[Any]:
    for cu in dwarf.iter_CUs():
        for die in cu.get_top_DIE().iter_children():
            if die.tag != "DW_TAG_subprogram":
                continue
            attrs = die.attributes
            if "DW_AT_declaration" in attrs:
                continue
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


def dwarf_signature(path: str, symbol: str) -> Optional[Signature]:
    """The prototype of function ``symbol`` of the binary at ``path`` from its
    DWARF, or None (no DWARF, too much of it, or no such function there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_ino, st.st_mtime_ns, symbol)
    if key in _CACHE:
        return _CACHE[key]
    sig = None
    try:
        sig = _read(path, symbol)
    except Exception:       # noqa: BLE001 -- damaged or unusual DWARF: no types, not an error
        sig = None
    _CACHE[key] = sig
    return sig


def _read(path: str, symbol: str) -> Optional[Signature]:
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        info = elf.get_section_by_name(".debug_info")
        if info is None or info["sh_size"] > MAX_DEBUG_INFO or not elf.has_dwarf_info():
            return None
        die = _find_subprogram(elf.get_dwarf_info(), symbol)
        if die is None:
            return None
        origin = die
        if "DW_AT_abstract_origin" in die.attributes:
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
        ret_type, ret_conv = _describe(_type_of(origin))
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
