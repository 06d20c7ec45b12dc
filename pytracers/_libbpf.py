"""The C boundary: every declaration of libbpf (and the bit of libc) pytracers uses.

No other module declares C or calls ``lib`` except through what this module
exports.

Why cffi's ABI mode (``ffi.dlopen``) rather than API mode (a compiled
extension): pytracers promises that installing it needs no compiler and no
headers.  ABI mode only needs ``libbpf.so.1`` at run time.  The price is that we
must declare structs exactly as libbpf lays them out; we therefore avoid
libbpf's option structs wherever a plain-argument function exists, and where
we do pass one (``bpf_test_run_opts``) its leading ``sz`` field tells libbpf
which version of the struct we were written against, so newer libbpf
releases (which only ever append fields) keep accepting it.

Functions that appeared after libbpf 1.1 (the floor, Debian 12) are declared
too, but callers must check :func:`has` first: calling a symbol the loaded
library lacks would raise AttributeError deep inside the library otherwise.
"""
from __future__ import annotations

import errno
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Type

if TYPE_CHECKING:
    from .errors import BpfOperationError

__all__ = ["ffi", "lib", "libc", "has", "version", "LibbpfLogCapture", "call_with_log",
           "checked"]

CDEF = r"""
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct btf;

/* libbpf_print_fn_t takes a va_list; on x86-64 a va_list argument is passed
 * as a pointer (va_list is an array type), on arm64 too (va_list is a 32-byte
 * struct, and AAPCS64 passes a composite that large by reference), which we
 * hand to vsnprintf unchanged. */
typedef int (*pt_print_fn_t)(int level, const char *fmt, void *ap);
pt_print_fn_t libbpf_set_print(pt_print_fn_t fn);

__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
int libbpf_strerror(int err, char *buf, size_t size);
int libbpf_num_possible_cpus(void);
int libbpf_probe_bpf_prog_type(int prog_type, const void *opts);
int libbpf_probe_bpf_map_type(int map_type, const void *opts);
int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts);

struct bpf_object *bpf_object__open(const char *path);
/* The leading fields of bpf_object_open_opts; `sz` tells libbpf how much of the
 * struct we pass, and libbpf treats every later field as zero. */
struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
};
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz,
                                        const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__type(const struct bpf_program *prog);
int bpf_program__expected_attach_type(const struct bpf_program *prog);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__set_attach_target(struct bpf_program *prog, int attach_prog_fd, const char *attach_func_name);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);

struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_kprobe(const struct bpf_program *prog, bool retprobe, const char *func_name);
struct bpf_kprobe_multi_opts {
    size_t sz;
    const char **syms;
    const unsigned long *addrs;
    const __u64 *cookies;
    size_t cnt;
    bool retprobe;
};
struct bpf_link *bpf_program__attach_kprobe_multi_opts(const struct bpf_program *prog, const char *pattern, const struct bpf_kprobe_multi_opts *opts);
/* The fields of bpf_uprobe_opts up to retprobe (libbpf 1.1); `sz` says so.
 * func_name is left out: pytracers resolves symbols itself (pytracers.user). */
struct bpf_uprobe_opts {
    size_t sz;
    size_t ref_ctr_offset;
    __u64 bpf_cookie;
    bool retprobe;
};
struct bpf_link *bpf_program__attach_uprobe_opts(const struct bpf_program *prog, int pid, const char *binary_path, size_t func_offset, const struct bpf_uprobe_opts *opts);
struct bpf_link *bpf_program__attach_tracepoint(const struct bpf_program *prog, const char *tp_category, const char *tp_name);
struct bpf_link *bpf_program__attach_raw_tracepoint(const struct bpf_program *prog, const char *tp_name);
struct bpf_link *bpf_program__attach_trace(const struct bpf_program *prog);
struct bpf_usdt_opts {
    size_t sz;
    __u64 usdt_cookie;
};
/* pid: -1 for every process; libbpf 1.1 exports it */
struct bpf_link *bpf_program__attach_usdt(const struct bpf_program *prog, int pid, const char *binary_path, const char *usdt_provider, const char *usdt_name, const struct bpf_usdt_opts *opts);
struct bpf_link *bpf_program__attach_perf_event(const struct bpf_program *prog, int pfd);
struct bpf_link *bpf_program__attach_cgroup(const struct bpf_program *prog, int cgroup_fd);
struct bpf_link *bpf_program__attach_iter(const struct bpf_program *prog, const void *opts);
int bpf_iter_create(int link_fd);

int bpf_link__fd(const struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
int bpf_map__set_autocreate(struct bpf_map *map, bool autocreate);
bool bpf_map__autocreate(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__map_flags(const struct bpf_map *map);
__u32 bpf_map__btf_key_type_id(const struct bpf_map *map);
__u32 bpf_map__btf_value_type_id(const struct bpf_map *map);
bool bpf_map__is_internal(const struct bpf_map *map);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__pin(struct bpf_map *map, const char *path);

int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value);

/* Batch operations (kernel 5.6+; libbpf 0.0.7+).  `sz` versions the struct. */
struct bpf_map_batch_opts {
    size_t sz;
    __u64 elem_flags;
    __u64 flags;
};
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
                         __u32 *count, const struct bpf_map_batch_opts *opts);
int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch, void *keys,
                                    void *values, __u32 *count,
                                    const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_delete_batch(int fd, const void *keys, __u32 *count,
                         const struct bpf_map_batch_opts *opts);

/* Open-map setters (before load) */
int bpf_map__set_type(struct bpf_map *map, int type);
int bpf_map__set_key_size(struct bpf_map *map, __u32 size);
int bpf_map__set_value_size(struct bpf_map *map, __u32 size);
int bpf_map__set_map_flags(struct bpf_map *map, __u32 flags);

/* Pinned objects and their info; bpf_map_info's leading fields (the kernel
 * copies min(its size, info_len) bytes). */
int bpf_obj_get(const char *pathname);
struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char name[16];
    __u32 ifindex;
    __u32 btf_vmlinux_value_type_id;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
};
struct bpf_link_info_head {
    __u32 type;
    __u32 id;
    __u32 prog_id;
};
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);

int bpf_prog_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_map_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_link_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_obj_pin(int fd, const char *pathname);

struct bpf_test_run_opts {
    size_t sz;
    const void *data_in;
    void *data_out;
    __u32 data_size_in;
    __u32 data_size_out;
    const void *ctx_in;
    void *ctx_out;
    __u32 ctx_size_in;
    __u32 ctx_size_out;
    __u32 retval;
    int repeat;
    __u32 duration;
    __u32 flags;
    __u32 cpu;
    __u32 batch_size;
};
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);
"""

LIBC_CDEF = r"""
int vsnprintf(char *str, size_t size, const char *format, void *ap);
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);

/* ---- perf events, for the perf-buffer reader (pytracers.perfbuf) ----
 * perf_event_open(2) has no libc wrapper: it is called through syscall(),
 * whose variadic arguments must be passed as cdata of type long. */
long syscall(long number, ...);
#define PT_NR_PERF_EVENT_OPEN 298              /* x86-64 */
#define PERF_TYPE_SOFTWARE 1
#define PERF_COUNT_SW_BPF_OUTPUT 10
#define PERF_SAMPLE_RAW 1024                   /* 1U << 10 */
#define PERF_FLAG_FD_CLOEXEC 8                 /* 1UL << 3 */
#define PERF_EVENT_IOC_ENABLE 9216             /* _IO('$', 0) */
#define PERF_EVENT_IOC_DISABLE 9217            /* _IO('$', 1) */
#define PERF_RECORD_LOST 2
#define PERF_RECORD_SAMPLE 9
/* Bits of perf_event_attr's flag word (a C bitfield in the kernel's header:
 * disabled is bit 0, watermark bit 14). */
#define PT_PERF_ATTR_DISABLED 1
#define PT_PERF_ATTR_WATERMARK 16384
/* PERF_ATTR_SIZE_VER5 (112 bytes, Linux 4.1): every kernel we support
 * knows all of it, and zero-extends what it knows beyond. */
struct perf_event_attr {
    __u32 type;
    __u32 size;
    __u64 config;
    __u64 sample_period;        /* union with sample_freq */
    __u64 sample_type;
    __u64 read_format;
    __u64 flags;                /* the bitfield: PT_PERF_ATTR_* */
    __u32 wakeup_events;        /* union with wakeup_watermark (bytes) */
    __u32 bp_type;
    __u64 config1;
    __u64 config2;
    __u64 branch_sample_type;
    __u64 sample_regs_user;
    __u32 sample_stack_user;
    __s32 clockid;
    __u64 sample_regs_intr;
    __u32 aux_watermark;
    __u16 sample_max_stack;
    __u16 __reserved_2;
};
/* The first page of a perf event's mapping: only the data positions are
 * read (the fields between are the self-monitoring ones). */
struct perf_event_mmap_page {
    __u32 version;
    __u32 compat_version;
    __u8 __pt_not_read[1016];
    __u64 data_head;            /* written by the kernel */
    __u64 data_tail;            /* written by the reader */
    __u64 data_offset;          /* Linux 4.1+ */
    __u64 data_size;
};
/* Each record in the data area starts with this (8-byte aligned). */
struct perf_event_header {
    __u32 type;
    __u16 misc;
    __u16 size;
};
"""

# libatomic (GCC's, libatomic.so.1): C11's atomic_thread_fence as a function,
# the ring-buffer reader's memory barrier where the machine's ordering is
# weaker than x86-64's (see pytracers.ringbuf).
ATOMIC_CDEF = r"""
void atomic_thread_fence(int order);
"""
MEMORY_ORDER_SEQ_CST = 5          # <stdatomic.h> memory_order_seq_cst

GENERATED = "pytracers/_libbpf_ffi.py"


def cdef_digest() -> str:
    """Identifies the declarations above; stamped into the generated module."""
    import zlib
    return "%08x" % zlib.crc32((CDEF + LIBC_CDEF + ATOMIC_CDEF).encode())


def _make_ffi() -> Any:
    """The FFI for the declarations above.

    Parsing C declarations (pycparser) costs ~70 ms on a fast machine and
    seconds under emulation, at every import.  ``python build.py`` therefore
    emits cffi's out-of-line ABI module (``_libbpf_ffi.py``: pure Python, the
    types pre-parsed; still no compiler involved) and we use it when it was
    generated from exactly these declarations; otherwise we parse them here.
    """
    try:
        from . import _libbpf_ffi
        if getattr(_libbpf_ffi, "CDEF_DIGEST", None) == cdef_digest():
            return _libbpf_ffi.ffi
    except Exception:  # missing, or made by an incompatible cffi: parse instead
        pass
    import cffi
    f = cffi.FFI()
    f.cdef(CDEF)
    f.cdef(LIBC_CDEF)
    f.cdef(ATOMIC_CDEF)
    return f


def generate_ffi_module(path: str) -> None:
    """Write the out-of-line ABI module (called by build.py)."""
    import cffi
    f = cffi.FFI()
    f.cdef(CDEF)
    f.cdef(LIBC_CDEF)
    f.cdef(ATOMIC_CDEF)
    f.set_source("pytracers._libbpf_ffi", None)
    f.emit_python_code(path)
    with open(path, "a") as out:
        out.write(f"\n# generated by build.py from pytracers/_libbpf.py; do not edit\n"
                  f"CDEF_DIGEST = {cdef_digest()!r}\n")


ffi = _make_ffi()


def _open_libbpf() -> Any:
    errors = []
    for name in ("libbpf.so.1", None):
        if name is None:  # not under its usual soname: ask the dynamic linker's cache
            import ctypes.util
            name = ctypes.util.find_library("bpf")
            if name is None:
                break
        try:
            return ffi.dlopen(name)
        except OSError as e:  # pragma: no cover - depends on the machine
            errors.append(f"{name}: {e}")
    raise ImportError("pytracers needs the system libbpf (libbpf.so.1, version 1.1 or newer; "
                      "on Debian/Ubuntu: apt-get install libbpf1). Tried: " + "; ".join(errors))


lib = _open_libbpf()
libc = ffi.dlopen(None)
_libatomic: Any = None


def full_fence() -> Callable[[], None]:
    """A full memory barrier as a Python callable, without a compiler:
    libatomic's ``atomic_thread_fence(memory_order_seq_cst)`` through cffi
    (``dmb ish`` on arm64).  Raises NotSupportedError without libatomic."""
    global _libatomic
    if _libatomic is None:
        errors = []
        for name in ("libatomic.so.1", None):
            if name is None:
                import ctypes.util
                name = ctypes.util.find_library("atomic")
                if name is None:
                    break
            try:
                _libatomic = ffi.dlopen(name)
                break
            except OSError as e:  # pragma: no cover - depends on the machine
                errors.append(f"{name}: {e}")
        if _libatomic is None:
            from .errors import NotSupportedError
            raise NotSupportedError(
                "the ring-buffer reader on this architecture",
                "its memory barrier comes from libatomic, which is not installed "
                f"({'; '.join(errors) or 'not found'})",
                hint="install GCC's libatomic (Debian/Ubuntu: apt-get install libatomic1)")
    import functools
    # a partial calls the C function with no Python frame of its own
    return functools.partial(_libatomic.atomic_thread_fence, MEMORY_ORDER_SEQ_CST)

_present: dict = {}


def has(symbol: str) -> bool:
    """True when the loaded libbpf exports ``symbol`` (declared above)."""
    if symbol not in _present:
        try:
            getattr(lib, symbol)
            _present[symbol] = True
        except AttributeError:
            _present[symbol] = False
    return _present[symbol]


def version() -> Tuple[int, int]:
    return int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())


if version() < (1, 1):  # pragma: no cover - depends on the machine
    raise ImportError(f"pytracers needs libbpf >= 1.1, found {'.'.join(map(str, version()))}")


# ---- libbpf's own messages -> Python logging -----------------------------------
#
# libbpf reports through one process-wide print callback.  We route every
# message to the ``pytracers.libbpf`` logger (WARN -> WARNING, INFO -> INFO,
# DEBUG -> DEBUG) and, while a pytracers call is in progress on this thread,
# also keep the messages so that an exception can quote what libbpf said.

# libbpf level -> logging.WARNING, INFO, DEBUG.  The logging module is
# imported only when a message could be shown: before anything imports it,
# nothing can have configured a logger, so only a WARNING (shown by logging's
# last-resort handler, the root logger's default level) can come out.
_LEVELS = {0: 30, 1: 20, 2: 10}
LIBBPF_DEBUG = 2
_tls = threading.local()
_log: Any = None
# libbpf's DEBUG lines (~800 per load of the syscall tracer's object) are
# formatted only when the ``pytracers.libbpf`` logger shows DEBUG (decided at
# each call_with_log); else the callback returns at once.  Warnings and infos,
# what an exception quotes, are always kept.
_debug_wanted = False


def _logger() -> Any:
    global _log
    if _log is None:
        import logging
        _log = logging.getLogger("pytracers.libbpf")
    return _log


class LibbpfLogCapture:
    """Collects libbpf messages printed on this thread while active."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def __enter__(self) -> "LibbpfLogCapture":
        stack = getattr(_tls, "stack", None)
        if stack is None:
            stack = _tls.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.stack.pop()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def last_line(self) -> str:
        for line in reversed(self.lines):
            if line.strip():
                return line.strip()
        return ""


def _emit(pylevel: int, text: str) -> None:
    """One libbpf message to the ``pytracers.libbpf`` logger (see above for
    when ``logging`` is imported at all)."""
    if pylevel >= 30 or "logging" in sys.modules:
        log = _logger()
        if log.isEnabledFor(pylevel):
            log.log(pylevel, "%s", text.rstrip("\n"))


@ffi.callback("int(int, const char *, void *)")
def _print_cb(level: int, fmt: Any, ap: Any) -> int:
    if level == LIBBPF_DEBUG and not _debug_wanted:
        return 0
    try:
        # one buffer per thread (a load prints hundreds of messages)
        buf = getattr(_tls, "buf", None)
        if buf is None:
            buf = _tls.buf = ffi.new("char[]", 4096)
        n = libc.vsnprintf(buf, 4096, fmt, ap)
        text = ffi.string(buf).decode("utf-8", "replace")
        if n >= 4096:
            text += "...\n"
        stack = getattr(_tls, "stack", None)
        if stack:
            stack[-1].lines.append(text)
        pylevel = _LEVELS.get(level, 10)
        held = getattr(_tls, "held", None)
        if held:                      # a load that may be retried: decide later
            held[-1].append((pylevel, text))
        else:
            _emit(pylevel, text)
    except BaseException:  # never let an exception unwind through C
        pass
    return 0


lib.libbpf_set_print(_print_cb)


class HeldMessages:
    """``with HeldMessages() as held:`` -- libbpf messages printed on this
    thread meanwhile are kept, not logged, until :meth:`release` logs them
    (``demote=True``: at DEBUG).  For a load the caller may retry with
    another configuration: the refusal it handles is not the user's concern,
    and the warnings of a load that finally fails are quoted by the exception.
    """

    def __init__(self) -> None:
        self.messages: List[Tuple[int, str]] = []

    def __enter__(self) -> "HeldMessages":
        stack = getattr(_tls, "held", None)
        if stack is None:
            stack = _tls.held = []
        stack.append(self.messages)
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.held.pop()

    def release(self, demote: bool = False) -> None:
        msgs, self.messages[:] = list(self.messages), []
        outer = getattr(_tls, "held", None)
        for pylevel, text in msgs:
            if outer:                 # an enclosing hold decides for these too
                outer[-1].append((10 if demote else pylevel, text))
            else:
                _emit(10 if demote else pylevel, text)


def call_with_log(fn: Callable[..., Any], *args: Any) -> Tuple[Any, int, LibbpfLogCapture]:
    """Call ``lib.fn(*args)``; return (result, errno, captured libbpf messages).

    libbpf's messages go to the ``pytracers.libbpf`` logger only: at their
    own level when the call succeeds, at DEBUG when it fails (a negative
    return or NULL), since the caller's exception then quotes them.

    Callers that want the result or an exception use :func:`checked` below,
    which is built on this."""
    global _debug_wanted
    _debug_wanted = "logging" in sys.modules and _logger().isEnabledFor(10)
    held = HeldMessages()
    with LibbpfLogCapture() as cap, held:
        ffi.errno = 0
        res = fn(*args)
        err = ffi.errno
    # What libbpf says while a call fails is the exception's to quote (and
    # goes to the log at DEBUG); it must not also reach stderr through
    # logging's last-resort handler as a WARNING of its own.
    held.release(demote=(res < 0) if isinstance(res, int) else (res == ffi.NULL))
    return res, err, cap


def cstr(p: Any) -> Optional[str]:
    return None if p == ffi.NULL else ffi.string(p).decode("utf-8", "replace")


# ---- the checked call: a libbpf return -> its result, or the right exception ----

def checked(fn: Callable[..., Any], *args: Any, what: str, error: "Type[BpfOperationError]",
            refine: Optional[Callable[[int, Any], Optional[BaseException]]] = None,
            expected: Tuple[int, ...] = ()) -> Any:
    """Call the libbpf function ``fn(*args)``; return its result or raise.

    libbpf reports a failure as a negative errno (functions returning an int)
    or as NULL with ``errno`` set (functions returning a pointer; a NULL
    without errno, from an accessor that does not set it, counts as EINVAL).
    A failure whose errno is in ``expected`` returns None (the caller's "not
    there" or "no more"); otherwise ``refine(err, log)`` may return the more
    precise exception (NotSupportedError, BadArgumentError, ...), and failing
    that ``error(what, err, libbpf's last message)`` is raised: ``error`` is
    the operation's class (MapError, LinkError, ...) and ``what`` says what
    was being done ("update map 'counts'").  ``log`` holds the
    messages libbpf printed during the call (a ``_libbpf.LibbpfLogCapture``).
    """
    res, err, log = call_with_log(fn, *args)
    if isinstance(res, int):
        if res >= 0:
            return res
        err = -res
    elif res != ffi.NULL:
        return res
    elif not err:
        err = errno.EINVAL
    if err in expected:
        return None
    exc = refine(err, log) if refine is not None else None
    raise exc if exc is not None else error(what, err, log.last_line())
