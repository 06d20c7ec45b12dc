"""USDT probes: the ``.note.stapsdt`` notes ``<sys/sdt.h>`` leaves in a binary.

Each ``DTRACE_PROBE``/``STAP_PROBE`` site of a program built with
``<sys/sdt.h>`` adds one ELF note (owner ``stapsdt``, type 3) holding:

* the probe's address (``pc``), the link-time address of ``.stapsdt.base``
  (``base``) and the address of its semaphore (0: none);
* the provider and probe names;
* the argument specs, one per argument, as the compiler placed them:
  ``-4@%edi`` (a signed 4-byte value in a register), ``8@-16(%rbp)``
  (an 8-byte value in memory at register + offset), ``4@$5`` (a constant).

A prelinked binary moved after linking: the section ``.stapsdt.base`` then
sits at a different address than the note's ``base``, and ``pc`` and the
semaphore move by the same amount (:attr:`UsdtProbe.address`,
:attr:`UsdtProbe.semaphore_address`).

A probe with a semaphore is guarded by ``if (PROVIDER_NAME_ENABLED())``: it
fires only while the semaphore (a 16-bit counter in the process's memory) is
non-zero.  libbpf's ``bpf_program__attach_usdt`` increments it through the
uprobe's reference counter (``ref_ctr_offset``: the kernel adds one in every
process mapping the binary while the probe is attached).
"""
from __future__ import annotations

import difflib
import re
import struct
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from ..errors import BadArgumentError, PytracersError, TargetNotFoundError

__all__ = ["UsdtArg", "UsdtProbe", "read_probes", "find_probe", "parse_args", "split_probe", "sites",
           "NOTE_SECTION", "BASE_SECTION", "WELL_KNOWN", "well_known_probes"]

NOTE_SECTION = ".note.stapsdt"
BASE_SECTION = ".stapsdt.base"
_NT_STAPSDT = 3
_OWNER = b"stapsdt"
_ARG = re.compile(r"^(?:(-?)(1|2|4|8)@)?(.+)$")
# one spec: a run of non-blanks, a bracketed operand kept whole
_SPEC = re.compile(r"(?:[^\s\[]|\[[^\]]*\])+")


@dataclass(frozen=True)
class UsdtArg:
    """One argument spec: ``-4@%edi`` is 4 bytes, signed, in register edi."""

    spec: str
    """The spec as the note has it."""
    size: int
    """Bytes (1, 2, 4 or 8; 8 where the spec gives no size)."""
    signed: bool
    location: str
    """Where the value is: ``%reg``, ``off(%reg)`` (memory) or ``$N`` (a constant)."""

    def value(self, raw: int) -> int:
        """A 64-bit value read for this argument (sign- or zero-extended by
        libbpf from its size) as the int it is."""
        raw &= (1 << 64) - 1
        if self.signed:
            return raw - (1 << 64) if raw >> 63 else raw
        return raw & ((1 << (8 * self.size)) - 1)

    @property
    def type_name(self) -> str:
        return f"{'s' if self.signed else 'u'}{8 * self.size}"


@dataclass(frozen=True)
class UsdtProbe:
    """One USDT probe of a binary."""

    path: str
    provider: str
    name: str
    pc: int
    """The probe's address as the note gives it."""
    base: int
    """The link-time address of ``.stapsdt.base`` the note was written against."""
    semaphore: int
    """The semaphore's address as the note gives it (0: the probe has none)."""
    args: Tuple[UsdtArg, ...]
    base_section: Optional[int] = None
    """The address of ``.stapsdt.base`` in the file (None: no such section)."""

    @property
    def full_name(self) -> str:
        return f"{self.provider}:{self.name}"

    @property
    def _shift(self) -> int:
        return 0 if self.base_section is None or not self.base else self.base_section - self.base

    @property
    def address(self) -> int:
        """The probe's address, adjusted for prelinking."""
        return self.pc + self._shift

    @property
    def semaphore_address(self) -> int:
        """The semaphore's address, adjusted for prelinking (0: none)."""
        return self.semaphore + self._shift if self.semaphore else 0

    @property
    def arg_specs(self) -> str:
        return " ".join(a.spec for a in self.args)


def parse_args(text: str) -> Tuple[UsdtArg, ...]:
    """The argument specs of a note (x86-64: ``"-4@%edi 8@-16(%rbp)"``; arm64:
    ``"-4@x0 8@[sp, 152]"`` -- a memory operand holds a space)."""
    out = []
    for spec in _SPEC.findall(text):
        m = _ARG.match(spec)
        if m is None:   # pragma: no cover - the regex matches any non-empty token
            raise BadArgumentError(f"bad USDT argument spec {spec!r}")
        sign, size, loc = m.groups()
        out.append(UsdtArg(spec, int(size) if size else 8, sign == "-", loc))
    return tuple(out)


def _notes(data: bytes, elfclass: int, little: bool) -> List[Tuple[int, int, int, bytes]]:
    """(pc, base, semaphore, the rest) of each stapsdt note in a section's bytes."""
    e = "<" if little else ">"
    word = "Q" if elfclass == 64 else "I"
    wsize = struct.calcsize(word)
    out = []
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, off)
        off += 12
        name = data[off:off + namesz]
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        if ntype != _NT_STAPSDT or name.rstrip(b"\0") != _OWNER or len(desc) < 3 * wsize:
            continue
        pc, base, sem = struct.unpack_from(e + 3 * word, desc, 0)
        out.append((pc, base, sem, desc[3 * wsize:]))
    return out


def read_probes(path: str) -> List[UsdtProbe]:
    """Every USDT probe of the ELF file at ``path``, in note order (an empty
    list for a binary without ``.note.stapsdt``)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as f:
            try:
                elf = ELFFile(f)
            except ELFError as e:
                raise BadArgumentError(f"{path} is not an ELF file: {e}") from None
            notes = elf.get_section_by_name(NOTE_SECTION)
            if notes is None:
                return []
            base_sec = elf.get_section_by_name(BASE_SECTION)
            base_addr = base_sec["sh_addr"] if base_sec is not None else None
            raw = _notes(notes.data(), elf.elfclass, elf.little_endian)
    except FileNotFoundError:
        raise TargetNotFoundError("binary", path, detail="no such file") from None
    probes = []
    for pc, base, sem, rest in raw:
        parts = rest.split(b"\0")
        provider, name = parts[0].decode(errors="replace"), parts[1].decode(errors="replace")
        args = parse_args(parts[2].decode(errors="replace")) if len(parts) > 2 else ()
        probes.append(UsdtProbe(path, provider, name, pc, base, sem, args, base_addr))
    return probes


def split_probe(spec: str) -> Tuple[Optional[str], str]:
    """``"provider:name"`` -> (provider, name); ``"name"`` -> (None, name)."""
    if not isinstance(spec, str) or not spec or spec.count(":") > 1:
        raise BadArgumentError(f"a USDT probe is 'provider:name' or 'name', not {spec!r}")
    provider, _, name = spec.rpartition(":")
    if not name:
        raise BadArgumentError(f"a USDT probe is 'provider:name' or 'name', not {spec!r}")
    return provider or None, name


def find_probe(path: str, spec: str, probes: Optional[Sequence[UsdtProbe]] = None) -> UsdtProbe:
    """The probe ``spec`` (``"provider:name"``, or ``"name"`` when one
    provider has it) of the binary at ``path``; TargetNotFoundError with the
    closest names when it has none."""
    provider, name = split_probe(spec)
    probes = read_probes(path) if probes is None else probes
    hits = [p for p in probes if p.name == name and provider in (None, p.provider)]
    # several notes of one probe (an inlined site) are one probe to libbpf
    distinct = sorted({p.full_name for p in hits})
    if len(distinct) > 1:
        raise BadArgumentError(f"{name!r} is a probe of several providers in {path}: "
                               f"{', '.join(distinct)}; say which ('provider:name')")
    if hits:
        return hits[0]
    if not probes:
        raise TargetNotFoundError("USDT probe", spec, detail=f"{path} has no USDT probes "
                                  f"(no {NOTE_SECTION} section: built without <sys/sdt.h> "
                                  "probes, or stripped of them)")
    names = sorted({p.full_name for p in probes})
    close = difflib.get_close_matches(spec if provider else name,
                                      names if provider else sorted({p.name for p in probes}),
                                      n=5, cutoff=0.5)
    raise TargetNotFoundError("USDT probe", spec, close,
                              detail=f"{path} has {len(names)}: {', '.join(names[:12])}"
                                     + (", ..." if len(names) > 12 else ""))


def sites(path: str, spec: str) -> List[UsdtProbe]:
    """Every note of one probe (a probe inlined in several places has one
    note per site; libbpf attaches to all of them)."""
    first = find_probe(path, spec)
    return [p for p in read_probes(path)
            if p.provider == first.provider and p.name == first.name]


WELL_KNOWN = (("/usr/bin/python3.11", "python:gc__start"), ("/usr/bin/python3", "python:gc__start"),
              ("python3", "python:gc__start"), ("libstdc++", "libstdcxx:throw"))
"""(binary, probe) pairs present on many machines (the feature prober attaches to them)."""


def well_known_probes() -> Iterator[UsdtProbe]:
    """The probes of :data:`WELL_KNOWN` this machine has, in that order."""
    from .targets import resolve_binary
    for binary, spec in WELL_KNOWN:
        try:
            yield find_probe(resolve_binary(binary), spec)
        except PytracersError:
            continue
