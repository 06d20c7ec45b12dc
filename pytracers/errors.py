"""The one exception tree of pytracers.

Every error pytracers raises derives from :class:`PytracersError`.  Errors that
mean "the caller passed something wrong" also derive from :class:`ValueError`
or :class:`TypeError`, and lookup failures from :class:`LookupError` (a key
missing from a map or another mapping-like collection: :class:`KeyError`), so
code that already catches the builtin families keeps working.

A failed bpf() operation raises a :class:`BpfOperationError`, which is also an
:class:`OSError` whose ``errno`` is the kernel's (or libbpf's) error; the
subclass says which operation failed:

* opening, configuring or loading an object: :class:`LoadError` (a program
  the verifier refuses: :class:`VerifierError`, which keeps the log and is
  not an OSError);
* attaching a program: :class:`AttachError` (a :class:`LoadError`, as it
  always was);
* a map's lookup, update, delete, ``keys()`` or ``pin()``: :class:`MapError`;
  ``m[key]`` and ``del m[key]`` of a key that is not there:
  :class:`KeyNotFoundError`, a :class:`KeyError`;
* pinning a link: :class:`LinkError`;
* ``Program.test_run()``: :class:`TestRunError`.

Any of them may instead be :class:`NotSupportedError` (the kernel cannot do
it), :class:`PermissionDeniedError` (a missing capability) or
:class:`TargetNotFoundError` (the function, tracepoint... does not exist),
when pytracers can tell.

Contract for "not supported" (as in cilium/ebpf's features package): only a
successful operation or :class:`NotSupportedError` is conclusive about what the
kernel can do.  Any other error (permission, a bad target, a full disk) says
nothing about the kernel's support for a feature.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Any, Optional, Sequence

__all__ = [
    "PytracersError", "NotSupportedError", "PermissionDeniedError", "VerifierError",
    "TargetNotFoundError", "InvalidObjectError", "InsecureFileError", "BadArgumentError",
    "BadTypeError", "ClosedError",
    "BpfOperationError", "LoadError", "AttachError", "MapError", "LinkError", "TestRunError",
    "KeyNotFoundError", "TracefsError", "CallbackError", "BusyError",
    "BtfError", "BtfNotFoundError", "BtfUnsupportedError", "BtfDecodeError",
    "ENOTSUPP", "errno_name", "os_error_text",
]


class PytracersError(Exception):
    """Root of every pytracers exception."""


class NotSupportedError(PytracersError):
    """The running kernel (or its configuration) cannot do this.

    ``feature`` names what is missing ("kprobe", "fentry", "ring buffer", ...),
    ``reason`` says what was found (a config option off, EPERM from a security
    module, ...), ``min_kernel`` is the first upstream kernel that has the
    feature, where known, and ``hint`` what would fix it.
    """

    def __init__(self, feature: str, reason: str, *, min_kernel: Optional[str] = None,
                 hint: Optional[str] = None, errno: Optional[int] = None) -> None:
        self.feature = feature
        self.reason = reason
        self.min_kernel = min_kernel
        self.hint = hint
        self.errno = errno
        msg = f"{feature} is not supported by this kernel: {reason}"
        if min_kernel:
            msg += f" (first available in Linux {min_kernel})"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class PermissionDeniedError(PytracersError, PermissionError):
    """The process lacks a privilege; ``capability`` names it (e.g. CAP_BPF)."""

    def __init__(self, what: str, capability: str, *, errno: int = _errno.EPERM,
                 detail: str = "") -> None:
        self.what = what
        self.capability = capability
        msg = f"{what}: permission denied; needs {capability}"
        if detail:
            msg += f" ({detail})"
        PermissionError.__init__(self, errno, msg)

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


class VerifierError(PytracersError):
    """The kernel's verifier refused a program.

    ``log`` keeps the whole verifier log; ``str()`` shows only its tail, which
    is where the verifier says what went wrong.
    """

    TAIL_LINES = 15

    def __init__(self, program: str, errno: int, log: str) -> None:
        self.program = program
        self.errno = errno
        self.log = log
        super().__init__(program, errno, log)

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.log.rstrip().splitlines()[-lines:])

    def __str__(self) -> str:
        head = f"program {self.program!r} was rejected by the verifier ({errno_name(self.errno)})"
        if not self.log.strip():
            return head + "; the kernel gave no verifier log"
        n = len(self.log.rstrip().splitlines())
        shown = min(n, self.TAIL_LINES)
        return f"{head}; last {shown} of {n} log lines:\n{self.tail()}"


class TargetNotFoundError(PytracersError, LookupError):
    """A probe target (function, tracepoint, syscall, program, map) does not exist.

    ``what`` says what kind of target it is ("kernel function", "tracepoint",
    ...; not a probe kind), ``name`` the name asked for, ``suggestions`` close
    matches, best first.  ``kind`` is the old name of ``what``.
    """

    def __init__(self, what: str, name: str, suggestions: Sequence[str] = (),
                 detail: str = "") -> None:
        self.what = what
        self.name = name
        self.suggestions = list(suggestions)
        msg = f"{what} {name!r} not found"
        if detail:
            msg += f" ({detail})"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg)

    @property
    def kind(self) -> str:
        """Alias of ``what`` (its name before 0.2; it never meant a probe kind)."""
        return self.what

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidObjectError(PytracersError, ValueError):
    """A file is not a usable eBPF CO-RE object (checked before libbpf sees it)."""

    def __init__(self, path: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.problem = problem
        msg = f"{path}: {problem}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class InsecureFileError(PytracersError, PermissionError):
    """Refused to load an object file that someone other than root may modify."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        PermissionError.__init__(
            self, _errno.EPERM,
            f"refusing to load {path}: {problem}; a root process that loads a file "
            "others can write hands kernel code to them. Fix the permissions or pass "
            "allow_insecure=True if you really mean it")

    def __str__(self) -> str:
        return str(self.args[1])


class BadArgumentError(PytracersError, ValueError):
    """An argument has the right type but an unusable value."""


class BadTypeError(PytracersError, TypeError):
    """An argument has the wrong type."""


class ClosedError(PytracersError, ValueError):
    """The object was used after close() (or after the object that owns it closed)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is closed: it cannot be used after close() (or after the "
                         "object that owns it was closed or loaded); open or create it again")


class BpfOperationError(PytracersError, OSError):
    """A bpf() operation (or the libbpf call that makes it) failed.

    The common base of :class:`LoadError`, :class:`MapError`,
    :class:`LinkError` and :class:`TestRunError`.  ``errno`` is the error
    (``ENOTSUPP`` included), ``what`` the operation ("update map 'counts'")
    and ``detail`` what libbpf said about it, if anything.
    """

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        self.what = what
        self.detail = detail
        msg = f"{what}: {os_error_text(err)}"
        if detail:
            msg += f" ({detail})"
        OSError.__init__(self, err, msg)

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> Any:
        return type(self), (self.what, self.errno, self.detail)


class LoadError(BpfOperationError):
    """Opening, configuring or loading an object failed for a reason other than
    the verifier, support or permission."""


class AttachError(LoadError):
    """Attaching a program failed for a reason not covered by a subclass above."""


class MapError(BpfOperationError):
    """A map operation (lookup, update, delete, iteration, pin) failed."""


class LinkError(BpfOperationError):
    """A link operation (pin) failed."""


class TestRunError(BpfOperationError):
    """The kernel refused to test-run a program (BPF_PROG_TEST_RUN)."""

    __test__ = False  # not a pytest test class


class KeyNotFoundError(PytracersError, KeyError):
    """``key`` is not in ``where`` (a map, the feature list...); also a KeyError
    (``args[0]`` is the key, as for a dict)."""

    def __init__(self, key: Any, where: str, detail: str = "") -> None:
        self.key = key
        self.where = where
        self.detail = detail
        super().__init__(key)

    def __str__(self) -> str:
        msg = f"{self.key!r} is not in {self.where}"
        return f"{msg}; {self.detail}" if self.detail else msg

    def __reduce__(self) -> Any:
        return type(self), (self.key, self.where, self.detail)


class TracefsError(PytracersError, OSError):
    """tracefs is needed but not mounted and cannot be mounted by this process."""

    def __init__(self, msg: str, err: int = _errno.ENOENT) -> None:
        OSError.__init__(self, err, msg)

    def __str__(self) -> str:
        return str(self.args[1])


class CallbackError(PytracersError, TypeError):
    """A user callback returned something pytracers cannot interpret."""


class BusyError(PytracersError, RuntimeError):
    """A ring buffer was read from inside a callback of a read of the same
    ring, in the same thread.

    Reads from different threads are serialised (see :mod:`pytracers.ringbuf`);
    a nested one could only deadlock or deliver the outer read's records twice.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            f"{what} is already being read by this thread: a read (consume, poll, read, "
            "events, read_batch, iter_batches, consume_views) was called from inside a "
            "callback of another read of it; return from the callback first (collect what "
            "it gets in a list and handle it after the read returns)")


class BtfError(PytracersError):
    """BTF cannot answer what was asked: root of the BTF errors.

    Raised as such for a request the data cannot serve (a type id out of
    range, the size of a type that has none, a split blob on a base of the
    other byte order); the subclasses below say more.
    """


class BtfNotFoundError(BtfError, KeyError):
    """No type of that name (and kind).  ``suggestions`` holds close matches.

    Also a ``KeyError`` (so a ``LookupError``); ``str()`` is the message.
    ``where`` names what was searched (default: the BTF).
    """

    def __init__(self, name: str, kind: Optional[str] = None,
                 suggestions: Sequence[str] = (), *, where: str = "BTF") -> None:
        self.name = name
        self.kind = kind
        self.suggestions = list(suggestions)
        what = f"{kind} {name!r}" if kind else repr(name)
        msg = f"no {what} in {where}"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class BtfUnsupportedError(BtfError, ValueError):
    """Valid BTF that we cannot turn into what was asked (e.g. a bitfield)."""


class BtfDecodeError(InvalidObjectError, BtfError):
    """BTF in an object or from the kernel could not be parsed: the bytes are
    damaged (bad header, truncated records, unknown kinds, string offsets out of
    range, cycles in the type graph, ...).

    Both an :class:`InvalidObjectError` (``path`` names the blob, "" if it has
    no name) and a :class:`BtfError`.
    """

    def __init__(self, path: str, problem: str, hint: str = "") -> None:
        if path:
            super().__init__(path, problem, hint)
            return
        self.path = path
        self.problem = problem
        PytracersError.__init__(self, f"{problem}; {hint}" if hint else problem)


# The kernel-internal "operation not supported" (include/linux/errno.h), which
# leaks out of bpf(); Python's errno module does not know it.  Named here only.
ENOTSUPP = 524


def errno_name(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, f"errno {err}")


def os_error_text(err: int) -> str:
    if err == ENOTSUPP:
        return "[ENOTSUPP] operation not supported by the kernel"
    return f"[{errno_name(err)}] {os.strerror(err)}"
