"""pytracers on x86-64 and arm64: each machine loads its own objects, names
syscalls with its own numbers and entry functions, and the feature report
says which architecture it is and what that changes.  Run on both (the host
and scripts/vmtest --arch arm64)."""
from __future__ import annotations

import glob
import os
import struct

import pytest
from elftools.elf.elffile import ELFFile

import pytracers
from pytracers import _shipped, features
from pytracers.kernel.arch import architecture
from pytracers.errors import NotSupportedError
from pytracers.kernel.symbols import function_exists, syscall_function
from pytracers.tracers import syscalls as sc

MACHINE = os.uname().machine


def _core_relo_bytes(path: str) -> int:
    with open(path, "rb") as f:
        ext = ELFFile(f).get_section_by_name(".BTF.ext").data()
    hdr_len = struct.unpack_from("<I", ext, 4)[0]
    return 0 if hdr_len < 32 else struct.unpack_from("<I", ext, 28)[0]


@pytest.mark.kernel_independent
def test_every_object_is_built_for_both_architectures():
    """Each shipped object has an arm64 twin (pytracers/bpf/arm64/), both
    eBPF objects with BTF; the syscall tracer needs no CO-RE relocation on
    either (libbpf then skips loading the kernel's BTF at start-up)."""
    x86 = sorted(os.path.basename(p) for p in glob.glob(os.path.join(
        _shipped.objects_dir("x86_64"), "*.bpf.o")))
    arm = sorted(os.path.basename(p) for p in glob.glob(os.path.join(
        _shipped.objects_dir("aarch64"), "*.bpf.o")))
    assert x86 == arm and "syscalls.bpf.o" in x86
    assert _shipped.objects_dir("aarch64") == os.path.join(_shipped.objects_dir("x86_64"),
                                                           "arm64")
    for mach in ("x86_64", "aarch64"):
        for name in x86:
            path = os.path.join(_shipped.objects_dir(mach), name)
            with open(path, "rb") as f:
                elf = ELFFile(f)
                assert elf["e_machine"] == "EM_BPF"
                assert elf.get_section_by_name(".BTF") is not None
        assert _core_relo_bytes(_shipped.object_path("syscalls", mach)) == 0
    with open(_shipped.object_path("syscalls", "x86_64"), "rb") as a, \
            open(_shipped.object_path("syscalls", "aarch64"), "rb") as b:
        assert a.read() != b.read()           # the register frames differ


def test_the_running_machine_loads_its_own_objects():
    assert pytracers.objects_dir() == _shipped.objects_dir(MACHINE)
    assert pytracers.object_path("exec") == os.path.join(pytracers.objects_dir(), "exec.bpf.o")
    with pytest.raises(NotSupportedError, match="ships objects for x86-64, arm64 only"):
        _shipped.object_path("exec", "riscv64")


@pytest.mark.kernel_independent
def test_syscall_tables():
    """x86-64's own table and arm64's generic one (numbers as in the UAPI
    headers; arm64 has no open/stat/fork); the running machine uses its own."""
    x86, arm = sc.SYSCALL_TABLES["x86_64"], sc.SYSCALL_TABLES["aarch64"]
    assert (x86["openat"], x86["getpid"], x86["getppid"], x86["open"]) == (257, 39, 110, 2)
    assert (arm["openat"], arm["getpid"], arm["getppid"], arm["read"]) == (56, 172, 173, 63)
    assert (arm["newfstatat"], arm["clone3"], arm["listns"]) == (79, 435, 470)
    assert not {"open", "stat", "fork", "pipe", "poll", "select"} & set(arm)
    assert len(set(arm.values())) == len(arm)
    assert sc.SYSCALLS is sc.SYSCALL_TABLES[MACHINE]
    assert sc.syscall_name(sc.syscall_number("getppid")) == "getppid"


@pytest.mark.kernel_independent
def test_syscall_entry_functions():
    assert syscall_function("openat", "x86_64") == "__x64_sys_openat"
    assert syscall_function("openat", "aarch64") == "__arm64_sys_openat"
    from pytracers import choose
    assert choose.stable_tracepoints("__arm64_sys_openat") in ([], ["openat"])


def test_entry_function_exists_in_the_running_kernel():
    """The name this machine's kernel gives getpgid's entry is in its BTF or
    kallsyms (None: the kernel cannot tell)."""
    assert function_exists(syscall_function("getpgid")) in (True, None)


def test_feature_report_names_the_architecture():
    arch, notes = architecture()
    assert arch == {"x86_64": "x86-64", "aarch64": "arm64"}[MACHINE]
    text = "\n".join(notes)
    assert f"objects: {pytracers.objects_dir()}" in text
    assert syscall_function("NAME") in text
    if MACHINE == "aarch64":
        assert "generic table" in text and "dmb ish" in text and "6.4" in text
    else:
        assert "x86-64 table" in text and "plain loads" in text
    report = features.probe()
    assert (report.arch, report.arch_notes) == (arch, notes)
