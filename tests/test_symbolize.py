"""Symbolisation: kernel addresses through kallsyms, user addresses through
/proc/PID/maps and ELF symbol tables (PIE and shared libraries), in bulk."""
from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pytracers.symbolize import (UNKNOWN, KernelSymbols, ProcessSymbols, Symbolizer,
                                 SymbolTable, elf_symbols, read_maps)


def test_table_bulk_lookup_exact():
    t = SymbolTable([0x3000, 0x1000, 0x2000], ["c", "a", "b"], [0x10, 0x100, 0])
    idx, off = t.find(np.array([0x0fff, 0x1000, 0x10ff, 0x1100, 0x2005, 0x3010, 0x300f],
                               dtype=np.uint64))
    names = [t.names[i] if i >= 0 else None for i in idx.tolist()]
    # a past a's size: a gap; b has size 0 so reaches c
    assert names == [None, "a", "a", None, "b", None, "c"]
    assert off.tolist()[1:3] == [0, 0xff] and off.tolist()[6] == 0xf


def test_kallsyms_text_with_modules():
    k = KernelSymbols("ffffffff81000000 T _stext\n"
                      "ffffffff81000100 t __pfx_foo\n"
                      "ffffffff81000110 t foo\n"
                      "ffffffff81000200 D some_data\n"
                      "ffffffffc0000000 t mod_fn\t[mymod]\n")
    fr = k.symbolize([0xffffffff81000114, 0xffffffffc0000008, 0x1000,
                      0xffffffffc0000000 + (1 << 21)])
    assert (fr[0].symbol, fr[0].offset, fr[0].module) == ("foo", 4, None)
    assert (fr[1].symbol, fr[1].offset, fr[1].module) == ("mod_fn", 8, "mymod")
    assert fr[2].symbol == UNKNOWN and fr[3].symbol == UNKNOWN
    assert k.stats.unknown == {"no symbol": 2}


def _kallsyms_by_lines(text: str):
    """The reference: kallsyms' text symbols line by line (address, name,
    module), the padding symbols and zero addresses left out."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in "tTwW" or len(parts[1]) != 1:
            continue
        addr = int(parts[0], 16)
        if addr == 0 or parts[2].startswith(("__pfx_", "__cfi_")):
            continue
        out.append((addr, parts[2], parts[3][1:-1] if len(parts) > 3 else None))
    return sorted(out, key=lambda t: t[0])


@pytest.mark.parametrize("source", ["running kernel", "short addresses", "restricted"])
def test_kallsyms_parse_matches_a_line_by_line_reading(source):
    """The bulk parse (one regular expression pass) keeps exactly the
    symbols a line-by-line reading keeps, with their modules, in the same
    address order; 8-digit addresses (32-bit kernels) and a restricted
    table (every address 0) included."""
    if source == "running kernel":
        with open("/proc/kallsyms") as f:
            text = f.read()
    elif source == "short addresses":
        text = ("c1000000 T _stext\nc1000010 t __cfi_x\nc1000020 t x\n"
                "c1000100 D data\nd0000000 W weak_fn\t[m1]\n")
    else:
        text = "0000000000000000 T _stext\n0000000000000000 t foo\t[m]\n"
    k = KernelSymbols(text)
    want = _kallsyms_by_lines(text)
    got = sorted(zip(k.table.starts.tolist(), k.names, k.modules), key=lambda t: t[0])
    # equal addresses may come in either order: compare as sorted multisets per address
    assert sorted(got) == sorted(want)
    assert k.restricted == (source == "restricted" or any(
        ln.split()[0].strip("0") == "" for ln in text.splitlines()
        if len(ln.split()) >= 3 and ln.split()[1] in ("t", "T", "w", "W")))
    if source != "restricted":
        assert len(k) > 0


def _few_and_bulk(symbolize, addrs):
    """Frames for ``addrs`` asked for a few at a time (bisect, no numpy) and
    all at once (numpy: this process has imported it)."""
    from pytracers.symbolize.table import is_bulk
    assert is_bulk(addrs) and not is_bulk(addrs[:100])
    few = []
    for i in range(0, len(addrs), 100):
        few += symbolize(addrs[i:i + 100])
    return few, symbolize(addrs)


def test_kallsyms_few_and_bulk_lookups_agree_on_the_running_kernel():
    """A few kernel addresses are found by bisecting kallsyms' sorted lines
    (only the lines found are parsed), many through numpy arrays parsed from
    the same lines: the same frames and the same counts for symbol starts,
    addresses inside and past symbols, the padding before functions, module
    symbols and addresses nothing covers."""
    import random
    from pytracers.symbolize.table import is_bulk
    with open("/proc/kallsyms", "rb") as f:
        raw = f.read()
    try:
        with open("/proc/modules") as f:
            mods = f.read()
    except FileNotFoundError:         # a kernel without loadable modules
        mods = None
    few_k, bulk_k = KernelSymbols(raw, mods), KernelSymbols(raw, mods)
    lines = [ln for ln in raw.split(b"\n") if len(ln.split()) >= 3]
    rng = random.Random(15)
    addrs = [0, 1, (1 << 64) - 1]
    for ln in rng.sample(lines, 1500) + [ln for ln in lines if b"\t[" in ln][:300] + \
            [ln for ln in lines if b"__pfx_" in ln][:100]:
        a = int(ln.split()[0], 16)
        addrs += [a, a + 1, max(a - 1, 0), a + rng.randrange(1 << 16)]
    few = []
    for i in range(0, len(addrs), 100):      # a few at a time: bisect
        few += few_k.symbolize(addrs[i:i + 100])
    bulk = bulk_k.symbolize(addrs)           # all at once: numpy
    assert is_bulk(addrs) and not is_bulk(addrs[:100])
    assert few == bulk
    assert few_k.stats.unknown == bulk_k.stats.unknown
    assert few_k.stats.addresses == bulk_k.stats.addresses == len(addrs)
    if not few_k.restricted:
        # every vmlinux function's own start names it (or an alias), offset 0
        starts = {int(ln.split()[0], 16) for ln in lines if ln.split()[1] in b"tTwW"
                  and b"\t[" not in ln and not ln.split()[2].startswith((b"__pfx_", b"__cfi_"))}
        asked = [(a, f) for a, f in zip(addrs, few) if a in starts]
        assert asked and all(f.symbol != UNKNOWN and f.offset == 0 for _, f in asked)
        known = [f for f in few if f.symbol != UNKNOWN]
        assert any(f.module for f in known) == any(b"\t[" in ln for ln in lines
                                                   if ln.split()[1] in b"tTwW")
        assert not any(f.symbol.startswith(("__pfx_", "__cfi_")) for f in known)


@pytest.mark.parametrize("width", [16, 8])
def test_kallsyms_few_lookups_by_the_lines(width):
    """The bisected lines: of several symbols at one address the last line
    in sorted order (type letter, then name: ``t foo`` after ``T foo_alias``), the
    padding before a function left to the function before it, a module's last
    symbol ending with the module (/proc/modules), the table's last symbol
    4 KiB long, addresses before the first symbol, zero (hidden) addresses
    never matched -- the same as the bulk table for each."""
    def h(a):
        return f"{a:0{width}x}"
    base = 0x81000000 if width == 8 else 0xffffffff81000000
    mod = base + 0x40000000
    text = (f"{h(0)} t hidden\n{h(base)} T _stext\n{h(base + 0x100)} t __pfx_foo\n"
            f"{h(base + 0x110)} t foo\n{h(base + 0x110)} T foo_alias\n"
            f"{h(base + 0x200)} D some_data\n{h(base + 0x300)} W weak\n"
            f"{h(mod)} t mod_fn\t[mymod]\n{h(mod + 0x80)} t mod_last\t[mymod]\n"
            f"{h(mod + 0x10000)} T after_module\n")
    modules = f"mymod 4096 0 - Live 0x{mod:x}\n"
    probe = [base - 1, base, base + 0x105, base + 0x110, base + 0x115, base + 0x2ff,
             mod + 0x90, mod + 0xfff, mod + 0x1000, mod + 0x10000 + 4095,
             mod + 0x10000 + 4096, 0]
    k = KernelSymbols(text, modules)
    few = k.symbolize(probe)
    got = [(f.symbol, f.offset, f.module) for f in few]
    assert got == [(UNKNOWN, 0, None), ("_stext", 0, None), ("_stext", 0x105, None),
                   ("foo", 0, None), ("foo", 5, None), ("foo", 0x1ef, None),
                   ("mod_last", 0x10, "mymod"), ("mod_last", 0xf7f, "mymod"),
                   (UNKNOWN, 0, None), ("after_module", 4095, None), (UNKNOWN, 0, None),
                   (UNKNOWN, 0, None)]
    assert k.restricted
    import numpy as np
    bulk = KernelSymbols(text, modules).symbolize(np.array(probe * 400, dtype=np.uint64))
    assert bulk[:len(probe)] == few


def test_user_few_and_bulk_lookups_agree():
    """User addresses too: libc's table searched one by one and in bulk, and
    this process's frames (mapped and unmapped addresses) both ways."""
    import random
    e = elf_symbols(_real_libc())
    rng = random.Random(16)
    starts = e.table.start_list
    vaddrs = [s + rng.randrange(64) for s in rng.sample(starts, min(3000, len(starts)))]
    vaddrs += [0, 1, 1 << 63]
    vaddrs += [rng.randrange(starts[0], starts[-1]) for _ in range(2000)]
    idx, off = e.table.find(np.array(vaddrs, dtype=np.uint64))
    few = ([], [])
    for i in range(0, len(vaddrs), 100):             # one by one
        got = e.table.locate(vaddrs[i:i + 100])
        few[0].extend(got[0])
        few[1].extend(got[1])
    assert few == e.table.locate(vaddrs) == (idx.tolist(), off.tolist())
    maps = [m for m in read_maps(os.getpid()) if m.path]
    addrs = [rng.randrange(m.start, m.end) for m in maps for _ in range(200)]
    addrs += [rng.randrange(1 << 40) for _ in range(500)]
    libc = ctypes.CDLL("libc.so.6")
    named = {name: ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
             for name in ("getppid", "getpid", "umask")}
    addrs += list(named.values())
    ps = ProcessSymbols(os.getpid())
    few, bulk = _few_and_bulk(ps.symbolize, addrs)
    assert few == bulk
    assert [f.symbol.endswith(n) and f.offset == 0 for n, f in
            zip(named, few[-len(named):])] == [True] * len(named), few[-len(named):]


def test_running_kernel_symbol_of_a_known_function():
    k = Symbolizer()
    from pytracers.symbolize import kernel_symbols
    ks = kernel_symbols()
    if ks.restricted and len(ks) == 0:
        pytest.skip("kallsyms addresses are hidden (kptr_restrict, not root)")
    i = ks.names.index("schedule")
    start = int(ks.table.starts[i])
    fr = k.kernel([start + 1])[0]
    assert (fr.symbol, fr.offset) == ("schedule", 1)


def test_shared_library_address_in_this_process():
    libc = ctypes.CDLL("libc.so.6")
    addr = ctypes.cast(libc.getppid, ctypes.c_void_p).value
    fr = Symbolizer().user(os.getpid(), [addr, addr + 2])
    assert fr[0].symbol.endswith("getppid") and fr[0].offset == 0
    assert fr[1].offset == 2 and "libc.so" in fr[1].module


def test_pie_executable_and_build_id_cache(tmp_path):
    src = tmp_path / "pie.c"
    src.write_text(textwrap.dedent("""
        #include <stdio.h>
        #include <unistd.h>
        __attribute__((noinline)) int hot_function(int x) { return x * 3 + 1; }
        int main(void) {
            printf("%p\\n", (void *)hot_function); fflush(stdout);
            pause(); return hot_function(1);
        }"""))
    exe = tmp_path / "pie"
    subprocess.run(["gcc", "-O1", "-fPIE", "-pie", "-Wl,--build-id", "-o", str(exe), str(src)],
                   check=True)
    p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True)
    try:
        addr = int(p.stdout.readline(), 16)
        maps = read_maps(p.pid)
        assert any(m.path == str(exe) for m in maps)
        ps = ProcessSymbols(p.pid)
        fr = ps.symbolize([addr + 4, 0x10])
        assert (fr[0].symbol, fr[0].offset, fr[0].module) == ("hot_function", 4, str(exe))
        assert fr[1].symbol == UNKNOWN and ps.stats.unknown == {"no mapping": 1}
        e = elf_symbols(str(exe))
        assert e.build_id and elf_symbols(str(exe)) is e
    finally:
        p.kill()
        p.wait()
    gone = ProcessSymbols(p.pid)
    assert gone.symbolize([addr])[0].symbol == UNKNOWN
    assert gone.stats.unknown == {"process gone": 1}


def test_perf_map_for_anonymous_code():
    pid = os.getpid()
    path = f"/tmp/perf-{pid}.map"
    m = next(m for m in read_maps(pid) if m.path == "" or m.path.startswith("[anon"))\
        if any(m.path == "" for m in read_maps(pid)) else None
    if m is None:
        pytest.skip("this process has no anonymous executable mapping")
    with open(path, "w") as f:
        f.write(f"{m.start:x} 40 py::busy:demo.py\n")
    try:
        fr = ProcessSymbols(pid).symbolize([m.start + 0x10])[0]
        assert (fr.symbol, fr.offset, fr.module) == ("py::busy:demo.py", 0x10, path)
    finally:
        os.unlink(path)


# ---- the ELF reader against pyelftools ------------------------------------------

def _pyelftools_view(path):
    """(build id, PT_LOAD segments, {start: (size, name)}) as pyelftools reads
    ``path`` (its .symtab, else .dynsym, first symbol at each address winning;
    the debug file's .symtab too where the file has none)."""
    from elftools.elf.elffile import ELFFile
    from pytracers.symbolize.elfsyms import DEBUG_ROOT

    def build_id(elf):
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
        return None

    def funcs(elf, names):
        out = []
        for n in names:
            sec = elf.get_section_by_name(n)
            for s in sec.iter_symbols() if sec is not None else ():
                if s["st_info"]["type"] in ("STT_FUNC", "STT_LOOS") and s["st_value"] \
                        and s["st_shndx"] != "SHN_UNDEF":
                    out.append((s["st_value"], s["st_size"], s.name))
        return out

    with open(path, "rb") as f:
        elf = ELFFile(f)
        bid = build_id(elf)
        segs = [(s["p_offset"], s["p_filesz"], s["p_vaddr"]) for s in elf.iter_segments()
                if s["p_type"] == "PT_LOAD"]
        syms = funcs(elf, [".symtab", ".dynsym"])
        has_symtab = elf.get_section_by_name(".symtab") is not None
    dbg = os.path.join(DEBUG_ROOT, bid[:2], bid[2:] + ".debug") if bid else ""
    if not has_symtab and dbg and os.path.exists(dbg):
        with open(dbg, "rb") as f:
            syms += funcs(ELFFile(f), [".symtab"])
    table = {}
    for start, size, name in syms:
        table.setdefault(start, (size, name))
    return bid, segs, table


def _real_libc():
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if os.path.basename(path).startswith("libc.so") or os.path.basename(path).startswith("libc-"):
            return os.path.realpath(path)
    pytest.skip("this process maps no libc")


def _gcc_program(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text("static int helper(int x) { return x + 1; }\n"
                   "int exported(int x) { return helper(x) * 2; }\n"
                   "int main(int argc, char **argv) { (void)argv; return exported(argc); }\n")
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-O0", "-fPIE", "-pie", "-Wl,--build-id", "-o", str(exe), str(src)],
                   check=True)
    return str(exe)


@pytest.mark.kernel_independent
def test_elf_reader_matches_pyelftools(tmp_path):
    """ElfSymbols reads the ELF headers itself; what it finds (every function
    symbol's start, size and name, the PT_LOAD segments, the build id) is
    exactly pyelftools' view of libc, the system Python, this interpreter and a
    program gcc builds here."""
    from pytracers.symbolize.elfsyms import ElfSymbols
    paths = [_real_libc(), os.path.realpath(sys.executable), _gcc_program(tmp_path)]
    if os.path.exists("/usr/bin/python3.11"):
        paths.append(os.path.realpath("/usr/bin/python3.11"))
    for path in paths:
        bid, segs, ref = _pyelftools_view(path)
        e = ElfSymbols(path)
        assert e.build_id == bid and bid and len(bid) == 40, (path, e.build_id, bid)
        assert e.segments == segs and segs, path
        mine = {int(s): (int(z), e.name(i)) for i, (s, z) in
                enumerate(zip(e.table.starts.tolist(), e.table.ends.tolist()))}
        assert sorted(mine) == sorted(ref), path
        # the table stores ends (a zero size reaches the next symbol): compare sizes
        # where pyelftools has one, and names everywhere
        assert {s: n for s, (_, n) in mine.items()} == {s: n for s, (_, n) in ref.items()}
        for s, (end, _) in mine.items():
            if ref[s][0]:
                assert end - s == ref[s][0], (path, hex(s))
        assert len(e) == len(ref) > 0
    prog = ElfSymbols(paths[2])
    assert {"main", "exported", "helper"} <= {prog.name(i) for i in range(len(prog))}


@pytest.mark.kernel_independent
def test_elf_reader_refuses_damaged_files(tmp_path):
    """A file that is not a 64-bit ELF, or whose headers point past its end,
    raises ElfFormatError (a PytracersError, and pyelftools' ELFError as
    before), never an IndexError or struct.error."""
    from elftools.common.exceptions import ELFError
    from pytracers.errors import PytracersError
    from pytracers.symbolize.elfsyms import ElfFormatError, ElfSymbols
    data = open(_real_libc(), "rb").read()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    cases = {
        "empty": b"", "text": b"#!/bin/sh\necho hi\n" * 4, "ident only": data[:16],
        "header only": data[:64], "half": data[:len(data) // 2],
        "no last section header": data[:shoff + 64 * 3],
        "program headers cut": data[:phoff + 20],
        "32-bit": data[:4] + b"\x01" + data[5:],
        "bad byte order": data[:5] + b"\x07" + data[6:],
        "big-endian claim": data[:5] + b"\x02" + data[6:],
        "section headers past the end": data[:0x28] + b"\xff" * 8 + data[0x30:],
        "huge section count": data[:0x3c] + b"\xff\xfe" + data[0x3e:],
    }
    for what, blob in cases.items():
        p = tmp_path / "bad"
        p.write_bytes(blob)
        with pytest.raises(ElfFormatError) as ei:
            ElfSymbols(str(p))
        assert isinstance(ei.value, PytracersError) and isinstance(ei.value, ELFError), what
        assert str(p) in str(ei.value), what
    # truncations, and byte changes in the ELF header and section headers of a
    # small program: a table or ElfFormatError, nothing else
    prog = open(_gcc_program(tmp_path), "rb").read()
    pshoff = struct.unpack_from("<Q", prog, 0x28)[0]
    p = tmp_path / "mut"
    blobs = [prog[:n] for n in range(0, len(prog), 241)]
    blobs += [prog[:i] + bytes([prog[i] ^ 0xFF]) + prog[i + 1:]
              for i in list(range(64)) + list(range(pshoff, len(prog), 5))]
    refused = 0
    for blob in blobs:
        p.write_bytes(blob)
        try:
            ElfSymbols(str(p))
        except ElfFormatError:
            refused += 1
    assert 0 < refused < len(blobs)
