"""FmodRetPolicy: make a kernel function fail for one process (fmod_ret.bpf.o).

An ``fmod_ret`` program runs before the target and may return an error in its
place; the target then does not run.  This changes what the kernel does, so
the policy is opt-in twice over: nothing is loaded unless ``enable=True`` is
passed, and it affects exactly one process, whose pid must be given (never 0,
never init, never the calling process itself).  The kernel allows fmod_ret
only on ``security_*`` hooks and on functions listed for error injection
(CONFIG_FUNCTION_ERROR_INJECTION); others are refused as not modifiable.

    with FmodRetPolicy("security_file_open", pid=child.pid, errno=errno.EPERM,
                       enable=True) as policy:
        ...   # child's open() now fails with EPERM
    # closed: the link is gone, the child's open() works again

Each denial is a record (``ev.pid``, ``ev.comm``, ``ev.retval``) and counts in
``policy.hits``.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Any

from ..errors import BadArgumentError, BadTypeError
from ..kinds import FMOD_RET
from .base import Tracer, check_pid
from .function import MAX_TRAMPOLINE_SLOTS, function_not_found, signature

__all__ = ["FmodRetPolicy"]


class FmodRetPolicy(Tracer):
    """Return ``-errno`` from ``function`` for process ``pid`` while open."""

    object_name = FMOD_RET
    event_struct = "policy_event"
    kind = FMOD_RET

    def __init__(self, function: str = "security_file_open", *, pid: int,
                 errno: int = _errno.EPERM, enable: bool = False, **kw: Any) -> None:
        if enable is not True:
            raise BadArgumentError("FmodRetPolicy changes what the kernel returns: it is off "
                                   "unless you pass enable=True")
        if not isinstance(function, str) or not function:
            raise BadTypeError("function must be a non-empty str")
        target = check_pid(pid, "pid")
        if target is None:
            raise BadArgumentError("FmodRetPolicy needs the pid of the one process to affect")
        if target == 1 or target == os.getpid():
            raise BadArgumentError(f"refusing to target pid {target} "
                                   f"({'init' if target == 1 else 'this process'}); "
                                   "target a process you created")
        if isinstance(errno, bool) or not isinstance(errno, int) or not 0 < errno < 4096:
            raise BadArgumentError(f"errno must be a positive errno value (e.g. errno.EPERM), "
                                   f"got {errno!r}")
        if "pid" in kw or "comm" in kw:
            raise BadArgumentError("the policy's only filter is its target pid")
        sig = signature(function)
        if sig is None:
            raise function_not_found(function, "fmod_ret needs the function in the kernel's BTF")
        if sig.returns_void or "*" in sig.ret_type:
            raise BadArgumentError(f"{sig}: fmod_ret can only make an int-returning function "
                                   "return an error")
        if sig.slots > MAX_TRAMPOLINE_SLOTS:
            raise BadArgumentError(f"{function} takes {sig.slots} argument slots; trampolines "
                                   f"handle at most {MAX_TRAMPOLINE_SLOTS}")
        self.function = function
        self.signature = sig
        self.target_pid = target
        self.errno = errno
        self.why = (f"fmod_ret: {function} returns -{_errno.errorcode.get(errno, errno)} for "
                    f"pid {target} without running, every other caller is untouched")
        super().__init__(**kw)

    def _configure(self, open_obj: Any) -> None:
        open_obj.only("policy_fmod_ret")
        open_obj.programs["policy_fmod_ret"].set_attach_target(self.function)
        open_obj.config["cfg_nargs"] = self.signature.slots
        open_obj.config["cfg_target_pid"] = self.target_pid
        open_obj.config["cfg_errno"] = -self.errno

    def _attach(self, obj: Any) -> None:
        self._link(obj.programs["policy_fmod_ret"].attach())

    @property
    def hits(self) -> int:
        """Calls the policy has failed so far."""
        self._check()
        return int(self.object.maps["hits"].sum_percpu_u64())
