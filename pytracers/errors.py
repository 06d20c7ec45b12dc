"""The one exception tree of pytracers.

Every error pytracers raises derives from :class:`PytracersError`.  Errors that
mean "the caller passed something wrong" also derive from :class:`ValueError`
or :class:`TypeError`, and lookup failures from :class:`LookupError`, so code
that already catches the builtin families keeps working.

Contract for "not supported" (as in cilium/ebpf's features package): only a
successful operation or :class:`NotSupportedError` is conclusive about what the
kernel can do.  Any other error (permission, a bad target, a full disk) says
nothing about the kernel's support for a feature.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Optional, Sequence

__all__ = [
    "PytracersError", "NotSupportedError", "PermissionDeniedError", "VerifierError",
    "TargetNotFoundError", "InvalidObjectError", "InsecureFileError", "BadArgumentError",
    "BadTypeError", "ClosedError", "LoadError", "AttachError", "TracefsError",
    "CallbackError", "BusyError", "BtfDecodeError", "errno_name", "os_error_text",
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

    ``suggestions`` holds close matches, best first.
    """

    def __init__(self, kind: str, name: str, suggestions: Sequence[str] = (),
                 detail: str = "") -> None:
        self.kind = kind
        self.name = name
        self.suggestions = list(suggestions)
        msg = f"{kind} {name!r} not found"
        if detail:
            msg += f" ({detail})"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg)

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


class LoadError(PytracersError, OSError):
    """Loading an object failed for a reason other than the verifier or support."""

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        msg = f"{what}: {os_error_text(err)}"
        if detail:
            msg += f" ({detail})"
        OSError.__init__(self, err, msg)

    def __str__(self) -> str:
        return str(self.args[1])


class AttachError(LoadError):
    """Attaching a program failed for a reason not covered by a subclass above."""


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


class BtfDecodeError(InvalidObjectError):
    """BTF in an object or from the kernel could not be parsed."""


_ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of bpf()


def errno_name(err: int) -> str:
    if err == _ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, f"errno {err}")


def os_error_text(err: int) -> str:
    if err == _ENOTSUPP:
        return "[ENOTSUPP] operation not supported by the kernel"
    return f"[{errno_name(err)}] {os.strerror(err)}"
