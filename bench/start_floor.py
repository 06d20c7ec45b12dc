"""The floor of a Python start: what ``trace syscall:getpgid`` must do, and
nothing else.  No pytracers module, no argument parser, no typing: cffi's
backend, libbpf's shipped declarations (``pytracers/_libbpf_ffi.py``, loaded
as a plain module), the same object with the same two programs as
``SyscallTracer("getpgid", kind="tp")`` (its ``stats`` map sized to one
entry), attached to the same tracepoints; then the ring read by hand until a
record of the traced pid arrives, whose kernel timestamp it prints.

    python bench/start_floor.py PACKAGE_DIR OBJECT PID

bench/run --only start runs it beside the CLI and bpftrace (BENCHMARKS.md
section 13): how far below the library's start a Python process can go.  The
pid is checked here, in user space (the library writes it into the
program's read-only data before load)."""
import mmap
import struct
import sys
import time

pkg, path, pid = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
sys.path.insert(0, pkg)
import _libbpf_ffi  # noqa: E402  (the package directory, not the package)

ffi = _libbpf_ffi.ffi
lib = ffi.dlopen("libbpf.so.1")
obj = lib.bpf_object__open(path)
if obj == ffi.NULL:
    sys.exit("start_floor: cannot open the object")
progs = {}
p = lib.bpf_object__next_program(obj, ffi.NULL)
while p != ffi.NULL:
    name = ffi.string(lib.bpf_program__name(p))
    progs[name] = p
    lib.bpf_program__set_autoload(p, name in (b"sc_tp_enter1", b"sc_tp_exit"))
    p = lib.bpf_object__next_program(obj, p)
ring = None
m = lib.bpf_object__next_map(obj, ffi.NULL)
while m != ffi.NULL:
    name = ffi.string(lib.bpf_map__name(m))
    if name == b"stats":
        lib.bpf_map__set_max_entries(m, 1)
    elif name == b"events":
        ring = m
    m = lib.bpf_object__next_map(obj, m)
if lib.bpf_object__load(obj):
    sys.exit("start_floor: load failed")
for prog, tp in ((b"sc_tp_enter1", b"sys_enter_getpgid"), (b"sc_tp_exit", b"sys_exit_getpgid")):
    if lib.bpf_program__attach_tracepoint(progs[prog], b"syscalls", tp) == ffi.NULL:
        sys.exit("start_floor: attach failed")
print("T attached", time.monotonic_ns(), flush=True)

# The ring: the consumer page, then the producer page and the data pages
# mapped twice in a row (BPF_MAP_TYPE_RINGBUF's layout).
fd = lib.bpf_map__fd(ring)
size = lib.bpf_map__max_entries(ring)
page = mmap.PAGESIZE
cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
cons = u64.unpack_from(cons_map, 0)[0]
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    prod = u64.unpack_from(data, 0)[0]
    while cons < prod:
        off = page + (cons & (size - 1))
        hdr = u32.unpack_from(data, off)[0]
        if hdr & (1 << 31):                              # still being written
            break
        length = hdr & 0x3FFFFFFF
        if not hdr & (1 << 30) and u32.unpack_from(data, off + 16)[0] == pid:
            print(u64.unpack_from(data, off + 8)[0], flush=True)
            sys.exit(0)
        cons += (8 + length + 7) & ~7
        u64.pack_into(cons_map, 0, cons)
    time.sleep(0.0001)
sys.exit("start_floor: no event in 10 s")
