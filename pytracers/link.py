"""Links: an attached program. Closing a link detaches it."""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from . import kinds
from ._libbpf import checked
from ._libbpf import lib
from ._resource import Resource
from .errors import BadArgumentError, LinkError, NotSupportedError

if TYPE_CHECKING:
    from .program import Program

__all__ = ["Link", "LinkSet", "PinnedLink", "close_together", "open_pinned_link"]


def check_pin_path(path: str) -> None:
    """Pins live in bpffs: refuse anything else (and '..' walking out of it)."""
    if not isinstance(path, str) or not path.startswith("/sys/fs/bpf/") or \
            ".." in path.split("/"):
        raise BadArgumentError("pin paths must lie under /sys/fs/bpf/ (no '..'), "
                               f"e.g. /sys/fs/bpf/myagent_link; got {path!r}")


class Link(Resource):
    """An attachment of ``program`` of ``kind`` to ``target``.  A uprobe's
    link also says where it sits: ``binary`` (the resolved path), ``offset``
    (in that file) and ``pid`` (None: every process running the file)."""

    _what = "link"
    binary: Optional[str] = None
    offset: Optional[int] = None
    pid: Optional[int] = None

    def __init__(self, ptr: Any, program: "Program", kind: str, target: str) -> None:
        self._ptr = ptr
        self.program = program     # keeps the program (and its object) alive
        self.kind = kind
        self.target = target
        self._own(lib.bpf_link__destroy, ptr)

    @property
    def fd(self) -> int:
        self._check()
        return int(lib.bpf_link__fd(self._ptr))

    def pin(self, path: str) -> None:
        """Pin the link in bpffs (mode 0600) so it outlives this process."""
        self._check()
        check_pin_path(path)
        old = os.umask(0o177)
        try:
            checked(lib.bpf_link__pin, self._ptr, path.encode(),
                    what=f"pin {self.kind} link ({self.target}) at {path}", error=LinkError,
                    refine=self._pin_refused)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def _pin_refused(self, err: int, log: Any) -> Optional[NotSupportedError]:
        if err == errno.EINVAL and self._perf_event_link():
            return NotSupportedError(
                f"pinning a {self.kind} link", f"on this kernel a {self.kind} attachment is "
                "a perf event, not a BPF link, and only BPF links can be pinned",
                min_kernel="5.15", hint="pin a raw_tp or tp_btf link instead, or keep "
                "the process that attached it running", errno=err)
        return None

    def _perf_event_link(self) -> bool:
        pk = kinds.KINDS.get(self.kind)
        return pk is not None and pk.link == kinds.PERF_EVENT_LINK

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Link {self.kind}:{self.target} ({self.program.name}){state}>"


class PinnedLink(Resource):
    """A link opened from its bpffs pin (:func:`open_pinned_link`): proof that
    the attachment is there, its ids, and a way to remove it
    (:meth:`unpin`: the program detaches when the pin and every descriptor
    are gone).  ``close()`` closes only our descriptor."""

    _what = "pinned link"

    def __init__(self, path: str, fd: int, type_: int, id_: int, prog_id: int) -> None:
        self.path = path
        self._fd = fd
        self.type = type_          # enum bpf_link_type
        self.id = id_
        self.prog_id = prog_id
        self._own(os.close, fd)

    @property
    def fd(self) -> int:
        self._check()
        return self._fd

    def unpin(self) -> None:
        """Remove the pin (the link goes when no descriptor holds it either)."""
        os.unlink(self.path)

    def __repr__(self) -> str:
        return (f"<PinnedLink {self.path} id={self.id} prog={self.prog_id}"
                f"{' closed' if self.closed else ''}>")


def open_pinned_link(path: str) -> PinnedLink:
    """The link pinned at ``path`` in bpffs (by :meth:`Link.pin` or any libbpf program)."""
    from ._libbpf import ffi
    from .maps import fd_kind
    check_pin_path(path)
    fd = checked(lib.bpf_obj_get, path.encode(), what=f"open pinned link {path}",
                 error=LinkError)
    try:
        what = fd_kind(fd)
        if what != "link":
            raise BadArgumentError(f"{path} is a pinned {what}, not a link")
        info = ffi.new("struct bpf_link_info_head *")
        n = ffi.new("__u32 *", ffi.sizeof("struct bpf_link_info_head"))
        checked(lib.bpf_obj_get_info_by_fd, fd, info, n, what=f"read the info of {path}",
                error=LinkError)
    except BaseException:
        os.close(fd)
        raise
    return PinnedLink(path, fd, int(info.type), int(info.id), int(info.prog_id))


# Threads at most for closing links together (each closes its share in turn).
CLOSE_THREADS = 32


def close_together(links: Sequence[Any]) -> None:
    """Close ``links`` (any Resources; Links are told apart), the perf-event
    ones from threads at once.

    Detaching a perf-event link (tp, kprobe, uprobe, perf_event) waits in the
    kernel for RCU grace periods: ``synchronize_rcu_tasks_trace()`` when the
    program leaves the event, and for a tracepoint's last perf event
    ``synchronize_rcu_tasks_trace()`` and ``synchronize_rcu()`` again (6.18:
    ~30 ms per link measured, with nothing of this process running).  Waits
    begun together end with the same grace period, so n links take about
    as long as one.  The other resources are closed after them, in order."""
    slow = [k for k in links if isinstance(k, Link) and not k.closed and k._perf_event_link()]
    if len(slow) < 2:
        for link in links:
            link.close()
        return
    _close_in_threads(slow)
    for link in links:
        link.close()              # the others; closed ones return at once


def _close_in_threads(slow: List[Any]) -> None:
    import threading
    n = min(len(slow), CLOSE_THREADS)
    shares = [slow[i::n] for i in range(n)]

    def close_share(share: List[Any]) -> None:
        for link in share:
            link.close()      # bpf_link__destroy: cffi lets the GIL go meanwhile
    started = []
    for share in shares[1:]:
        t = threading.Thread(target=close_share, args=(share,), daemon=True,
                             name="pytracers-detach")
        try:
            t.start()
            started.append(t)
        except RuntimeError:     # no new threads (interpreter shutting down): in turn
            close_share(share)
    close_share(shares[0])
    for t in started:
        t.join()


class LinkSet(List[Link]):
    """Several links made by one attach (a perf event per CPU): ``close()``
    closes them all (safe twice; perf-event links together, see
    :func:`close_together`); ``with`` closes them on exit."""

    def close(self) -> None:
        close_together(list(self))

    @property
    def closed(self) -> bool:
        return all(link.closed for link in self)

    def __enter__(self) -> "LinkSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
