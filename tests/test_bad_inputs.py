"""Every bad input becomes a named exception whose message says what to do.

One row per bad input: how to produce it, the exception class expected, and
words its message must contain (what is wrong and what to do about it).
Rows that hand libbpf a file run in a forked child, so a regression that
crashes libbpf fails its row instead of killing the test session.

The bad files are made by the test in a temporary directory: copies of a
shipped object truncated or with one field damaged, random bytes, an x86 ELF
(/bin/true), objects compiled with clang-19 at test time (no BTF, big-endian,
an unknown section, no programs), an object with .BTF removed by
llvm-objcopy-19.
"""
from __future__ import annotations

import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import pytest

import pytracers
from pytracers import errors as E

EXEC = pytracers.object_path("exec")
SYSCALLS = pytracers.object_path("syscalls")
KPROBE = pytracers.object_path("kprobe")
FENTRY = pytracers.object_path("fentry")
CLANG = shutil.which("clang-19")
OBJCOPY = shutil.which("llvm-objcopy-19")
VM_KERNEL = os.environ.get("PYTRACERS_VM_KERNEL")


# ---- helpers -------------------------------------------------------------------------
def in_child(fn: Callable[[], Any]) -> Tuple[str, str]:
    """Run ``fn`` in a forked child; return (exception class name, message) or
    ("ok", repr(result)).  A child killed by a signal fails the test."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            try:
                res = ("ok", repr(fn()))
            except BaseException as e:  # noqa: BLE001
                res = (type(e).__name__, str(e))
            os.write(w, pickle.dumps(res))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(f"the child died of signal {os.WTERMSIG(status)} (a crash in C code)")
    return pickle.loads(data)


def shdrs(data: bytes) -> List[Tuple[int, str, int, int, int]]:
    """(header offset, name, type, file offset, size) of each section."""
    shoff, = struct.unpack_from("<Q", data, 40)
    shnum, shstrndx = struct.unpack_from("<HH", data, 60)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = []
    for i, h in enumerate(hdrs):
        end = data.index(b"\0", stroff + h[0])
        out.append((shoff + 64 * i, data[stroff + h[0]:end].decode(), h[1], h[4], h[5]))
    return out


def section(data: bytes, name: str) -> Tuple[int, int, int]:
    for hoff, n, _typ, off, size in shdrs(data):
        if n == name:
            return hoff, off, size
    raise KeyError(name)


def exec_bytes() -> bytearray:
    with open(EXEC, "rb") as f:
        return bytearray(f.read())


def write(tmp: str, name: str, data: bytes) -> str:
    p = os.path.join(tmp, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


CLANG_CACHE = f"/tmp/pytracers-test-clang-{os.getuid()}"
# A guest with a root of its own (arm64: no clang-19 there) is shown the host's
# cache read-only by scripts/vmtest, which names it here.
SHARED_CLANG_CACHE = os.environ.get("PYTRACERS_TEST_CLANG_CACHE")
CLANG_PATH = "/usr/bin/clang-19"           # (the cache key: the same on host and guest)


def clang(tmp: str, name: str, source: str, *flags: str) -> str:
    """Compile ``source`` with clang-19; the result is cached per machine in a
    private directory (the kernel matrix reuses what the host run compiled:
    clang under qemu takes half a minute a file; the BPF object is the same
    whatever machine compiles it)."""
    import hashlib
    src_text = textwrap.dedent(source).encode()
    key = hashlib.sha256(src_text + repr(flags).encode() + CLANG_PATH.encode()).hexdigest()[:16]
    out = os.path.join(tmp, name + ".o")
    if SHARED_CLANG_CACHE:
        shared = os.path.join(SHARED_CLANG_CACHE, f"{name}-{key}.o")
        if os.path.exists(shared):
            shutil.copy(shared, out)
            return out
    cached = os.path.join(CLANG_CACHE, f"{name}-{key}.o")
    try:
        st = os.stat(CLANG_CACHE)
        if st.st_uid == os.getuid() and not st.st_mode & 0o077 and os.path.exists(cached):
            shutil.copy(cached, out)
            return out
    except OSError:
        pass
    if not CLANG:
        pytest.skip("clang-19 not installed, and no host run compiled this object "
                    "(scripts/vmtest shows a guest the host's cache)")
    src = write(tmp, name + ".c", src_text)
    subprocess.run([CLANG, "-O2", *flags, "-c", src, "-o", out], check=True)
    try:
        os.makedirs(CLANG_CACHE, mode=0o700, exist_ok=True)
        shutil.copy(out, cached + ".tmp")
        os.replace(cached + ".tmp", cached)
    except OSError:
        pass
    return out


MINIMAL = """
    #define SEC(n) __attribute__((section(n), used))
    SEC("%s") int prog(void *ctx) { return 0; }
    char LICENSE[] SEC("license") = "GPL";
"""


# ---- damaged copies of a shipped object ----------------------------------------------
def damage_truncated(tmp: str) -> str:
    d = exec_bytes()
    return write(tmp, "trunc.bpf.o", bytes(d[:len(d) // 2]))


def damage_header_only(tmp: str) -> str:
    return write(tmp, "hdr.bpf.o", bytes(exec_bytes()[:40]))


def damage_random_after_magic(tmp: str) -> str:
    rng = random.Random(7)
    return write(tmp, "rnd.bpf.o", b"\x7fELF" + bytes(rng.getrandbits(8) for _ in range(4096)))


def damage_section_past_eof(tmp: str) -> str:
    d = exec_bytes()
    hoff, _, _ = section(d, "tp/syscalls/sys_enter_execve")
    struct.pack_into("<Q", d, hoff + 32, 0x80000000)          # sh_size
    return write(tmp, "eof.bpf.o", bytes(d))


def damage_section_zero(tmp: str) -> str:
    d = exec_bytes()
    shoff, = struct.unpack_from("<Q", d, 40)
    struct.pack_into("<Q", d, shoff + 32, 0x98D158AF0A54BD45)  # found by the fuzzer
    return write(tmp, "sec0.bpf.o", bytes(d))


def damage_reloc_symbol(tmp: str) -> str:
    d = exec_bytes()
    _, off, _ = section(d, ".reltp/syscalls/sys_enter_execve")
    struct.pack_into("<I", d, off + 12, 0xFFFF)                # r_sym of relocation 0
    return write(tmp, "rel.bpf.o", bytes(d))


def damage_section_type(tmp: str) -> str:
    d = exec_bytes()
    hoff, _, _ = section(d, ".reltp/syscalls/sys_enter_execve")
    struct.pack_into("<I", d, hoff + 4, 0x10000009)            # found by the fuzzer
    return write(tmp, "type.bpf.o", bytes(d))


def damage_btf_type_id(tmp: str) -> str:
    d = exec_bytes()
    _, off, _ = section(d, ".BTF")
    hdr_len, type_off = struct.unpack_from("<II", d, off + 4)
    t = off + hdr_len + type_off          # type 1 ...
    while True:                           # find the first PTR/TYPEDEF/CONST-like record
        info, = struct.unpack_from("<I", d, t + 4)
        kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
        if kind in (2, 8, 9, 10):
            struct.pack_into("<I", d, t + 8, 0x7FFFFFF)        # refers to a missing type
            return write(tmp, "btf.bpf.o", bytes(d))
        t += 12 + {1: 4, 3: 12, 4: 12 * vlen, 5: 12 * vlen, 6: 8 * vlen, 13: 8 * vlen,
                   14: 4, 15: 12 * vlen, 17: 4, 19: 12 * vlen}.get(kind, 0)


def damage_btf_ext(tmp: str) -> str:
    d = bytearray(open(SYSCALLS, "rb").read())
    _, off, _ = section(d, ".BTF.ext")
    hdr_len, fi_off = struct.unpack_from("<II", d, off + 4)
    # func_info: rec_size, then {sec_name_off, num_info, {insn_off, type_id}...}
    struct.pack_into("<I", d, off + hdr_len + fi_off + 4 + 8 + 4, 0xFFFFFF)
    return write(tmp, "ext.bpf.o", bytes(d))


def btf_removed(tmp: str) -> str:
    if not OBJCOPY:
        pytest.skip("llvm-objcopy-19 not installed")
    out = os.path.join(tmp, "nobtf.bpf.o")
    subprocess.run([OBJCOPY, "--remove-section", ".BTF", "--remove-section", ".BTF.ext",
                    EXEC, out], check=True)
    return out


def stripped(tmp: str) -> str:
    if not OBJCOPY:
        pytest.skip("llvm-objcopy-19 not installed")
    out = os.path.join(tmp, "stripped.bpf.o")
    subprocess.run([OBJCOPY, "--strip-all", EXEC, out], check=True)
    return out


# ---- the table -----------------------------------------------------------------------
@dataclass
class Case:
    id: str
    run: Callable[[str], Any]        # tmp dir -> does the bad thing
    exc: type
    says: Sequence[str]              # the message contains each of these
    child: bool = False              # run in a forked child (libbpf sees a bad file)


def opener(make: Callable[[str], str]) -> Callable[[str], Any]:
    def run(tmp: str) -> Any:
        path = make(tmp)
        return in_child(lambda: pytracers.open(path).close())
    return run


def with_open(fn: Callable[[Any], Any], path: str = EXEC) -> Callable[[str], Any]:
    def run(tmp: str) -> Any:
        with pytracers.open(path) as o:
            return fn(o)
    return run


def with_loaded(fn: Callable[[Any], Any], path: str = EXEC,
                only: Sequence[str] = ()) -> Callable[[str], Any]:
    def run(tmp: str) -> Any:
        o = pytracers.open(path)
        if only:
            o.only(*only)
        with o.load() as obj:
            return fn(obj)
    return run


def _closed_object(tmp: str) -> Any:
    obj = pytracers.open(EXEC).load()
    obj.close()
    return obj.programs["exec_enter"].attach()


def _consumed_open_object(tmp: str) -> Any:
    o = pytracers.open(EXEC)
    o.load().close()
    o.config["cfg_pid"] = 1


def _closed_ring(tmp: str) -> Any:
    with pytracers.open(EXEC).load() as obj:
        rb = obj.ring_buffer()
        rb.close()
        return rb.poll(0, lambda r: None)


def _closed_link(tmp: str) -> Any:
    with pytracers.open(EXEC).load() as obj:
        link = obj.programs["exec_enter"].attach()
        link.close()
        return link.pin("/sys/fs/bpf/pytracers-test-never")


def _callback(result: Any) -> Callable[[str], Any]:
    """Load the bench producer, emit one record, consume it with a callback
    returning ``result`` (or raising it, when it is an exception)."""
    def run(tmp: str) -> Any:
        o = pytracers.open(pytracers.object_path("bench"))
        o.only("fill_8")
        with o.load() as obj:
            rb = obj.ring_buffer()
            obj.programs["fill_8"].test_run(ctx=[2, 0])

            def cb(rec: Any) -> Any:
                if isinstance(result, BaseException):
                    raise result
                return result
            try:
                return rb.consume(cb)
            finally:
                # the record that raised was consumed; the next one is still there
                assert rb.delivered == 1 and rb.pending_bytes() == 16
    return run


def _insecure(mode: int, uid: int = 0) -> Callable[[str], Any]:
    def run(tmp: str) -> Any:
        if os.geteuid() != 0:
            pytest.skip("the ownership rule applies to root only")
        d = os.path.join(tmp, "objs")
        os.mkdir(d, 0o755)
        p = os.path.join(d, "x.bpf.o")
        shutil.copy(EXEC, p)
        os.chmod(p, mode)
        os.chown(p, uid, -1)
        return pytracers.open(p)
    return run


def _fentry_unknown_function(tmp: str) -> Any:
    with pytracers.open(FENTRY) as o:
        o.programs["fn_fentry"].set_attach_target("vfs_raed")


def _kind_lacking(tmp: str) -> Any:
    """Attach the first kind this kernel lacks (host: kprobe; 5.10/6.1: kprobe_multi)."""
    if VM_KERNEL in ("6.12", "latest", "arm64-6.12", "arm64-latest"):
        pytest.skip(f"VM kernel {VM_KERNEL} has every probe kind pytracers uses")
    o = pytracers.open(KPROBE)
    if VM_KERNEL:
        o.only("fn_kprobe_multi")
        with o.load() as obj:
            return obj.programs["fn_kprobe_multi"].attach_kprobe_multi(functions=["vfs_read"])
    o.only("fn_kprobe")
    with o.load() as obj:
        return obj.programs["fn_kprobe"].attach_kprobe("vfs_read")


def _trampoline_refused(tmp: str) -> Any:
    if VM_KERNEL:
        # (the case is the host's: lockdown refuses to load them)
        pytest.skip(f"VM kernel {VM_KERNEL} has no lockdown refusing BPF trampolines")
    o = pytracers.open(FENTRY)
    o.only("fn_fentry")
    o.programs["fn_fentry"].set_attach_target("vfs_read")
    o.load().close()


def _attach_twice(tmp: str) -> Any:
    with pytracers.open(EXEC).load() as obj:
        obj.programs["exec_enter"].attach()
        return obj.programs["exec_enter"].attach()


def _tracer_after_close(tmp: str) -> Any:
    t = pytracers.SyscallTracer(["getppid"], kind="tp", pid=os.getpid())
    t.close()
    return t.read()


def _tracefs_absent(tmp: str) -> Any:
    """In a forked child with a private mount namespace, hide tracefs (a
    tmpfs over /sys/kernel, after the load, which needs /sys/kernel/btf) and
    attach a tracepoint."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    import ctypes
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 0x40000

    def attach() -> Any:
        libc = ctypes.CDLL(None, use_errno=True)
        obj = pytracers.open(EXEC).load()
        try:
            for rc in (libc.unshare(CLONE_NEWNS),
                       libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
                       libc.mount(b"none", b"/sys/kernel", b"tmpfs", 0, None)):
                if rc != 0:
                    raise OSError(ctypes.get_errno(), "mount namespace setup failed")
            return obj.programs["exec_enter"].attach()
        finally:
            obj.close()
    return in_child(attach)


def _fentry_on(function: str) -> Callable[[str], Any]:
    def run(tmp: str) -> Any:
        from pytracers.btf import Btf
        from conftest import expected
        if VM_KERNEL and not expected("fentry"):
            pytest.skip(f"VM kernel {VM_KERNEL} lacks fentry (no BPF trampolines)")
        if Btf.vmlinux().find(function, "func") is None:
            pytest.skip(f"this kernel's BTF has no {function} (5.10's has neither exc_int3 "
                        "nor migrate_disable)")
        return pytracers.FunctionTracer(function, kind="fentry")
    return run


NO_BTF_SRC = MINIMAL % "tp/syscalls/sys_enter_getppid"

CASES: List[Case] = [
    # -- the file ------------------------------------------------------------------------
    Case("missing-file", opener(lambda t: os.path.join(t, "nope.bpf.o")),
         E.InvalidObjectError, ["no such file", "check the path"]),
    Case("directory", opener(lambda t: t), E.InvalidObjectError,
         ["is a directory", "pass the path of a .bpf.o file"]),
    Case("not-a-regular-file", opener(lambda t: "/dev/null"), E.InvalidObjectError,
         ["not a regular file", "pass the path of a .bpf.o file"]),
    Case("empty-file", opener(lambda t: write(t, "empty.bpf.o", b"")), E.InvalidObjectError,
         ["is empty", "clang -target bpf"]),
    Case("random-bytes", opener(lambda t: write(t, "r.bpf.o", random.Random(1).randbytes(4096))),
         E.InvalidObjectError, ["not an ELF file", "clang -target bpf"]),
    Case("random-bytes-after-elf-magic", opener(damage_random_after_magic),
         E.InvalidObjectError, ["damaged", "rebuild"]),
    Case("truncated-object", opener(damage_truncated), E.InvalidObjectError,
         ["damaged", "rebuild"]),
    Case("truncated-inside-elf-header", opener(damage_header_only), E.InvalidObjectError,
         ["damaged", "rebuild"]),
    Case("x86-elf", opener(lambda t: shutil.copy("/bin/true", os.path.join(t, "true.o"))),
         E.InvalidObjectError, ["not eBPF", "compile with clang -target bpf"]),
    Case("ebpf-without-btf-clang", opener(lambda t: clang(t, "nobtf", NO_BTF_SRC, "-target", "bpf")),
         E.InvalidObjectError, ["no .BTF section", "clang -g -O2 -target bpf"]),
    Case("ebpf-btf-removed-objcopy", opener(btf_removed), E.InvalidObjectError,
         ["no .BTF section", "clang -g"]),
    Case("big-endian-ebpf", opener(lambda t: clang(t, "be", NO_BTF_SRC, "-g", "-target", "bpfeb")),
         E.InvalidObjectError, ["big-endian", "-target bpfel"]),
    Case("unknown-program-section",
         opener(lambda t: clang(t, "sec", MINIMAL % "weird/thing", "-g", "-target", "bpf")),
         E.InvalidObjectError, ["unknown program section 'weird/thing'", 'SEC("tp/...")']),
    Case("unknown-data-section",
         opener(lambda t: clang(t, "data", NO_BTF_SRC + '\nint x SEC(".mydata") = 1;\n', "-g",
                                "-target", "bpf")),
         E.InvalidObjectError, ["unknown section '.mydata'", "rename or drop the section"]),
    Case("no-programs",
         opener(lambda t: clang(t, "noprog", 'char LICENSE[] __attribute__((section("license"),'
                                ' used)) = "GPL";\n', "-g", "-target", "bpf")),
         E.InvalidObjectError, ["contains no BPF programs", "SEC("]),
    Case("stripped-object", opener(stripped), E.InvalidObjectError,
         ["no symbol table", "do not strip"]),
    Case("section-past-end-of-file", opener(damage_section_past_eof), E.InvalidObjectError,
         ["extends past the end", "rebuild"]),
    Case("section-0-not-null", opener(damage_section_zero), E.InvalidObjectError,
         ["section 0 is not the null section", "rebuild"]),
    Case("unknown-section-type", opener(damage_section_type), E.InvalidObjectError,
         ["unknown type 0x10000009", "rebuild"]),
    Case("relocation-symbol-out-of-range", opener(damage_reloc_symbol), E.InvalidObjectError,
         ["uses symbol 65535", "rebuild"]),
    Case("btf-type-id-out-of-range", opener(damage_btf_type_id), E.InvalidObjectError,
         ["refers to type 134217727", "rebuild"]),
    Case("btf-ext-type-id-out-of-range", opener(damage_btf_ext), E.InvalidObjectError,
         ["func_info refers to type 16777215", "rebuild"]),
    Case("path-not-a-string", lambda t: pytracers.open(123),  # type: ignore[arg-type]
         E.BadTypeError, ["path must be a str or os.PathLike"]),
    Case("world-writable-file", _insecure(0o666), E.InsecureFileError,
         ["writable by", "allow_insecure=True"]),
    Case("file-owned-by-another-user", _insecure(0o644, uid=65534), E.InsecureFileError,
         ["owned by uid 65534", "allow_insecure=True"]),
    # -- names, sizes, values before load --------------------------------------------------
    Case("program-name-not-found", with_open(lambda o: o.programs["exec_entr"]),
         E.TargetNotFoundError, ["program 'exec_entr' not found", "did you mean: exec_enter"]),
    Case("map-name-not-found", with_open(lambda o: o.maps["event"]), E.TargetNotFoundError,
         ["map 'event' not found", "did you mean: events"]),
    Case("only-unknown-program", with_open(lambda o: o.only("exec_ent")), E.TargetNotFoundError,
         ["did you mean: exec_enter"]),
    Case("config-variable-not-found", with_open(lambda o: o.config.__setitem__("cfg_pidd", 1)),
         E.TargetNotFoundError, ["global variable 'cfg_pidd' not found", "did you mean: cfg_pid"]),
    Case("config-value-too-big", with_open(lambda o: o.config.__setitem__("cfg_pid", 1 << 40)),
         E.BadArgumentError, ["does not fit cfg_pid (4 bytes)"]),
    Case("config-string-too-long", with_open(lambda o: o.config.__setitem__("cfg_comm", "x" * 16)),
         E.BadArgumentError, ["cfg_comm holds at most 15 bytes"]),
    Case("config-wrong-type", with_open(lambda o: o.config.__setitem__("cfg_pid", 1.5)),
         E.BadTypeError, ["takes an int, str or bytes"]),
    Case("ring-size-not-power-of-two",
         with_open(lambda o: setattr(o.maps["events"], "max_entries", 3 * 4096)),
         E.BadArgumentError, ["must be a power of two"]),
    Case("map-size-zero", with_open(lambda o: setattr(o.maps["pending"], "max_entries", 0)),
         E.BadArgumentError, ["between 1 and 2**32-1"]),
    Case("attach-target-on-tracepoint-program",
         with_open(lambda o: o.programs["exec_enter"].set_attach_target("vfs_read")),
         E.BadArgumentError, ["only BTF-based programs", "attach others with attach()"]),
    Case("unknown-function", _fentry_unknown_function, E.TargetNotFoundError,
         ["kernel function 'vfs_raed' not found", "did you mean", "vfs_read"]),
    # -- maps after load ---------------------------------------------------------------------
    Case("wrong-key-size", with_loaded(lambda o: o.maps["pending"].lookup(b"abc")),
         E.BadArgumentError, ["wrong key size", "takes 4 bytes, got 3"]),
    Case("wrong-value-size", with_loaded(lambda o: o.maps["pending"].update(1, b"xy")),
         E.BadArgumentError, ["wrong value size"]),
    Case("key-wrong-type", with_loaded(lambda o: o.maps["pending"].lookup(1.5)),
         E.BadTypeError, ["must be bytes or int"]),
    Case("lookup-on-ring-buffer", with_loaded(lambda o: o.maps["events"].lookup(0)),
         E.BadArgumentError, ["is a ring buffer", "read it with ring_buffer()"]),
    Case("ring-buffer-on-hash-map", with_loaded(lambda o: o.maps["pending"].ring_buffer()),
         E.BadArgumentError, ["not a ring buffer"]),
    # -- attach ------------------------------------------------------------------------------
    Case("unknown-tracepoint",
         with_loaded(lambda o: o.programs["exec_enter"].attach("syscalls/sys_enter_execv")),
         E.TargetNotFoundError, ["tracepoint 'syscalls:sys_enter_execv' not found",
                                 "did you mean", "syscalls:sys_enter_execve"]),
    Case("tracepoint-without-category",
         with_loaded(lambda o: o.programs["exec_enter"].attach("sys_enter_execve")),
         E.BadArgumentError, ["'category/name'"]),
    Case("unknown-raw-tracepoint",
         with_loaded(lambda o: o.programs["sc_raw_enter"].attach("sys_entr"), SYSCALLS,
                     ["sc_raw_enter"]),
         E.TargetNotFoundError, ["raw tracepoint 'sys_entr' not found", "did you mean",
                                 "sys_enter"]),
    Case("attach-method-of-another-kind",
         with_loaded(lambda o: o.programs["exec_enter"].attach_raw_tracepoint("sys_enter")),
         E.BadArgumentError, ["is a tp program", "not raw_tp"]),
    Case("kind-the-kernel-lacks", _kind_lacking, E.NotSupportedError,
         ["is not supported by this kernel",
          "instead" if VM_KERNEL else "where one covers the event"]),
    Case("bpf-trampolines-refused", _trampoline_refused, E.NotSupportedError,
         ["fentry is not supported by this kernel", "or boot without the restriction"]),
    Case("attach-twice", _attach_twice, E.BadArgumentError,
         ["already attached to syscalls:sys_enter_execve", "close that link first"]),
    Case("tracefs-absent", _tracefs_absent, E.TracefsError,
         ["tracefs is not available", "/sys/kernel/tracing does not exist"]),
    Case("pin-outside-bpffs",
         with_loaded(lambda o: o.programs["exec_enter"].attach().pin("/tmp/x")),
         E.BadArgumentError, ["pin paths must lie under /sys/fs/bpf/"]),
    # -- tracers -----------------------------------------------------------------------------
    Case("unknown-syscall", lambda t: pytracers.trace_syscall("nosuchcall"),
         E.TargetNotFoundError, ["syscall 'nosuchcall' not found", "man 2 syscalls"]),
    Case("misspelt-syscall", lambda t: pytracers.trace_syscall("opnat"),
         E.TargetNotFoundError, ["syscall 'opnat' not found", "did you mean: openat"]),
    Case("unknown-function-tracer", lambda t: pytracers.trace_function("vfs_raed"),
         E.TargetNotFoundError, ["kernel function 'vfs_raed' not found", "did you mean",
                                 "vfs_read"]),
    Case("inlined-function", lambda t: pytracers.trace_function("copy_to_user"),
         E.TargetNotFoundError, ["kernel function 'copy_to_user' not found",
                                 "did you mean"]),
    # a function without an ftrace entry: x86's breakpoint handler; arm64's
    # noinstr handler of synchronous exceptions from user space
    Case("notrace-function-fentry",
         _fentry_on("el0t_64_sync_handler" if os.uname().machine == "aarch64" else "exc_int3"),
         E.NotSupportedError,
         ["fentry is not supported by this kernel",
          "no ftrace entry" if VM_KERNEL else "or boot without the restriction"]),
    Case("deny-listed-function-fentry", _fentry_on("migrate_disable"), E.NotSupportedError, ["fentry is not supported by this kernel",
                               "deny list" if VM_KERNEL else "or boot without the restriction"]),
    # exc_int3 (x86's breakpoint handler), notify_die (NOKPROBE_SYMBOL on every arch)
    Case("kprobe-blacklisted-function",
         lambda t: pytracers.FunctionTracer(
             "notify_die" if os.uname().machine == "aarch64" else "exc_int3", kind="kprobe"),
         E.NotSupportedError,
         ["kprobe is not supported by this kernel",
          "cannot be probed" if VM_KERNEL else "CONFIG_KPROBES is off"]),
    Case("tracer-bad-pid", lambda t: pytracers.SyscallTracer(["getppid"], pid=-4),
         E.BadArgumentError, ["must be a positive process id"]),
    Case("tracer-comm-too-long", lambda t: pytracers.SyscallTracer(["getppid"], comm="x" * 40),
         E.BadArgumentError, ["comm must be 1..15 bytes"]),
    Case("tracer-unknown-kind", lambda t: pytracers.trace_syscall("openat", kind="uprobe"),
         E.BadArgumentError, ["kind must be one of"]),
    Case("tracer-use-after-close", _tracer_after_close, E.ClosedError,
         ["tracer is closed", "open or create it again"]),
    # -- test runs ---------------------------------------------------------------------------
    Case("test-run-bad-ctx",
         with_loaded(lambda o: o.programs["fill_8"].test_run(ctx=["a"]),
                     pytracers.object_path("bench"), ["fill_8"]),
         E.BadTypeError, ["ctx must be bytes or a sequence of ints"]),
    # -- use after close ---------------------------------------------------------------------
    Case("use-after-close-object", _closed_object, E.ClosedError,
         ["is closed", "open or create it again"]),
    Case("configure-after-load", _consumed_open_object, E.ClosedError,
         ["already loaded or closed"]),
    Case("use-after-close-ring-buffer", _closed_ring, E.ClosedError, ["ring buffer is closed"]),
    Case("use-after-close-link", _closed_link, E.ClosedError, ["link is closed"]),
    # -- callbacks ---------------------------------------------------------------------------
    Case("callback-returns-garbage", _callback("yes"), E.CallbackError,
         ["returned str", "return None or True to go on, False or a negative int to stop"]),
    Case("callback-raises", _callback(ZeroDivisionError("boom in callback")), ZeroDivisionError,
         ["boom in callback"]),
    Case("consume-without-callback", with_loaded(lambda o: o.ring_buffer().consume()),
         E.BadArgumentError, ["needs a callback"]),
]


def _kernel_independent(c: Case) -> bool:
    """Rows decided before the kernel is asked anything (the file checks,
    libbpf's parsing, names and sizes of an opened object): the kernel matrix
    deselects them, they ran on the host."""
    return getattr(c.run, "__qualname__", "").startswith(("opener.", "with_open.", "_insecure.")) \
        or c.id == "path-not-a-string"


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.kernel_independent] if _kernel_independent(c)
                 else []) for c in CASES])
def test_bad_input(case: Case, tmp_path: Any) -> None:
    tmp = str(tmp_path)
    os.chmod(tmp, 0o755)
    try:
        result = case.run(tmp)
    except case.exc as e:
        msg = str(e)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"expected {case.exc.__name__}, got {type(e).__name__}: {e}")
    else:
        if not (isinstance(result, tuple) and len(result) == 2):
            if hasattr(result, "close"):
                result.close()
            pytest.fail(f"expected {case.exc.__name__}, nothing was raised ({result!r})")
        name, msg = result        # from a child: compare by class name (and its bases)
        assert name == case.exc.__name__ or issubclass(getattr(E, name, object), case.exc), \
            f"expected {case.exc.__name__}, got {name}: {msg}"
    print(f"{case.id}: {case.exc.__name__}: {msg}")
    for words in case.says:
        assert words in msg, f"{words!r} not in {msg!r}"


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
