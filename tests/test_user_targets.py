"""User-space targets without the kernel: which file a target names
(pytracers.user.targets), where a function is in it (pytracers.user.symbols)
and what DWARF says about its arguments (pytracers.user.elf_dwarf)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from pytracers.errors import BadArgumentError, TargetNotFoundError
from pytracers.user import symbols as S
from pytracers.user.elf_dwarf import dwarf_signature
from pytracers.user.targets import loader_cache, mapped_files, resolve_binary
from user_programs import build

pytestmark = pytest.mark.kernel_independent

LIBC = resolve_binary("libc")


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("uprogs"))
    return {"pie": build(d, "ufunc.c", "ufunc", "-pie", "-fPIE", "-ldl"),
            "nopie": build(d, "ufunc.c", "ufunc-nopie", "-no-pie", "-fno-PIE", "-ldl"),
            "dups": build(d, "udups.c,udups2.c", "udups"),
            "dir": d}


def test_library_names_resolve_like_the_loader():
    """libc, libc.so.6 and c name the same file, the one ld.so.cache lists
    for libc.so.6."""
    cache = dict(loader_cache())
    assert "libc.so.6" in cache
    assert os.path.realpath(cache["libc.so.6"]) == LIBC
    assert resolve_binary("libc.so.6") == resolve_binary("c") == LIBC
    assert os.path.isabs(LIBC) and os.path.isfile(LIBC)


def test_commands_and_paths_resolve_to_real_elf_files(tmp_path):
    """A command is the first ELF file of that name on PATH; a relative path
    becomes absolute."""
    ls = resolve_binary("ls")
    assert os.path.isabs(ls) and open(ls, "rb").read(4) == b"\x7fELF"
    shutil.copy(ls, tmp_path / "myls")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert resolve_binary("./myls") == str(tmp_path / "myls")
    finally:
        os.chdir(old)


def test_a_pid_resolves_to_the_library_it_mapped():
    """With pid=, a library name is the file that process has mapped."""
    me = os.getpid()
    assert any(p == LIBC or os.path.realpath(p) == LIBC for p in mapped_files(me))
    assert resolve_binary("libc", pid=me) == LIBC


def test_unknown_targets_and_pids_raise_target_not_found():
    """A misspelt library gets close names; a pid that does not exist says so."""
    with pytest.raises(TargetNotFoundError) as ei:
        resolve_binary("libcc.so.6")
    assert "libc.so.6" in ei.value.suggestions
    with pytest.raises(TargetNotFoundError, match="no such pid") as ei:
        resolve_binary("libc", pid=2 ** 22 + 12345)
    assert ei.value.what == "process"
    with pytest.raises(TargetNotFoundError, match="no such file"):
        resolve_binary("/nonexistent/bin")
    with pytest.raises(BadArgumentError):
        resolve_binary("libc", pid=0)


def test_versioned_names_and_offsets_in_libc():
    """malloc is found plainly and by its versioned name; in a shared library
    the file offset is the address in the executable segment."""
    t = S.symbol_table(LIBC)
    m = t.lookup("malloc")
    assert m.version and m.default
    assert t.lookup(f"malloc@@{m.version}") == m
    assert m.offset == t.offset_of(m.address)
    assert len(t.find("mallo*")) >= 2


def test_an_indirect_function_names_its_implementations():
    """strlen is an IFUNC: tracing its symbol would trace the resolver, so the
    error says so and points at the implementations."""
    t = S.symbol_table(LIBC)
    if not any(s.ifunc for s in t.get("strlen") or []):
        pytest.skip("this libc's strlen is not an IFUNC")
    with pytest.raises(BadArgumentError, match="indirect function"):
        t.lookup("strlen")


def test_pie_and_non_pie_offsets(progs):
    """In a PIE the offset of pt_add equals its address (segment at 0);
    non-PIE: its address minus the segment's base, both checked against the
    bytes of the function's code read back from the file."""
    pie, nopie = S.symbol_table(progs["pie"]), S.symbol_table(progs["nopie"])
    assert pie.pie and not nopie.pie
    a, b = pie.lookup("pt_add"), nopie.lookup("pt_add")
    assert a.offset == a.address
    assert b.address >= 0x400000 and b.offset == b.address - 0x400000
    with open(progs["pie"], "rb") as f:
        f.seek(a.offset)
        code_pie = f.read(a.size)
    with open(progs["nopie"], "rb") as f:
        f.seek(b.offset)
        code_nopie = f.read(b.size)
    assert code_pie == code_nopie      # the same function body, found in both files


def test_several_definitions_are_listed(progs):
    """Two static functions called pt_dup (two translation units): the error
    lists both with their addresses; an offset picks one."""
    t = S.symbol_table(progs["dups"])
    with pytest.raises(BadArgumentError, match="2 functions are called 'pt_dup'") as ei:
        t.lookup("pt_dup")
    addrs = sorted(s.address for s in t.get("pt_dup"))
    assert all(f"{a:#x}" in str(ei.value) for a in addrs)
    off, desc = S.resolve_symbol(progs["dups"], t.offset_of(addrs[0]))
    assert off == t.offset_of(addrs[0]) and "+0x" in desc


def test_a_stripped_binary_says_what_would_help(progs, tmp_path):
    """Stripped, the binary's own functions are gone: the error names the
    missing .symtab and what would help (a debug file, an offset, USDT).  (Its
    own build, -g0: a stripped copy of a file already read shares that file's
    table by build-id, as a debug file would.)"""
    stripped = build(str(tmp_path), "ufunc.c", "ufunc-stripped", "-g0", "-ldl")
    subprocess.run(["strip", stripped], check=True)
    t = S.symbol_table(stripped)
    assert not t.has_symtab
    with pytest.raises(TargetNotFoundError) as ei:
        t.lookup("pt_add")
    msg = str(ei.value)
    assert "stripped" in msg and ".symtab" in msg and "debug" in msg and "offset" in msg \
        and "USDT" in msg


def test_an_imported_function_points_at_its_library(progs):
    """labs is called by the test program but defined in libc: the error says
    where it is defined."""
    with pytest.raises(TargetNotFoundError, match="imports it") as ei:
        S.symbol_table(progs["pie"]).lookup("labs")
    assert LIBC in str(ei.value)


def test_tables_are_cached_per_file_version(progs, tmp_path):
    """The same file is read once; a rewritten file is read again."""
    p = str(tmp_path / "copy")
    shutil.copy(progs["pie"], p)
    t1 = S.symbol_table(p)
    assert S.symbol_table(p) is t1
    time.sleep(0.01)
    shutil.copy(progs["nopie"], p + ".new")
    os.replace(p + ".new", p)
    t2 = S.symbol_table(p)
    assert t2 is not t1 and not t2.pie


def test_lookups_are_fast_once_loaded():
    """After the one load, a look-up is a dict access (the benchmark measures
    >= 1 M/s; here a floor that a loaded CI machine still clears)."""
    t = S.symbol_table(LIBC)
    names = [s.name for s in t][:1000]
    get = t.get
    start = time.perf_counter()
    for _ in range(100):
        for n in names:
            get(n)
    rate = 100 * len(names) / (time.perf_counter() - start)
    assert rate > 300_000, rate


def test_dwarf_types_the_arguments(progs):
    """pt_add(int a, long b, unsigned char c, const char *s) from DWARF: names,
    types, signedness and widths."""
    sig = dwarf_signature(progs["pie"], "pt_add")
    assert sig is not None
    assert sig.params == ("a", "b", "c", "s")
    assert sig.types[2] == "unsigned char" and sig.types[3].endswith("char *")
    assert sig.ret_type == "int"
    a, b, c, s = sig.arg_convs
    assert a(2 ** 64 - 5) == -5 and b(2 ** 64 - 1000) == -1000
    assert c(0x1FF) == 0xFF and s(0xDEAD) == 0xDEAD
    assert sig.ret_conv(2 ** 32 - 2) == -2
    assert dwarf_signature(LIBC, "malloc") is None     # no DWARF there: raw registers


def test_dwarf_of_a_big_program_is_found_through_its_address(progs, monkeypatch):
    """Above MAX_DEBUG_INFO the units are not scanned one by one; with the
    symbol's address, .debug_aranges names the one unit to read, at any size
    (here the limit is lowered to 0 so the small test program stands in for
    a big one)."""
    from pytracers.user import elf_dwarf
    from pytracers.user.symbols import symbol_table
    monkeypatch.setattr(elf_dwarf, "MAX_DEBUG_INFO", 0)
    elf_dwarf._CACHE.clear()
    addr = symbol_table(progs["pie"]).lookup("pt_add").address
    assert dwarf_signature(progs["pie"], "pt_add") is None          # would need a scan
    sig = dwarf_signature(progs["pie"], "pt_add", address=addr)
    assert sig is not None and sig.params == ("a", "b", "c", "s")
    assert sig.types[3].endswith("char *")
    elf_dwarf._CACHE.clear()


def test_process_stat_past_a_command_name_with_spaces_parentheses_and_bytes():
    """/proc/PID/stat read past a command name that holds ') ', spaces and a
    byte that is not UTF-8: the state and the start time are the fields the
    process has; a process reaped is None (and counted exited)."""
    import sys
    from pytracers.tracers.user_function import process_exited
    from pytracers.user.targets import process_stat
    child = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(None).prctl(15, b'a) b \\xff(', 0, 0, 0); "
         "print(flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        child.stdout.readline()                     # named
        with open(f"/proc/{child.pid}/comm", "rb") as f:
            assert f.read().startswith(b"a) b \xff(")
        fields = process_stat(child.pid)
        assert fields is not None and fields[0] in ("R", "S")
        assert int(fields[1]) == os.getpid()        # ppid
        mine = process_stat(os.getpid())
        assert mine is not None and int(fields[19]) >= int(mine[19])   # started after us
        assert not process_exited(child.pid)
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()
    assert process_stat(child.pid) is None and process_exited(child.pid)
