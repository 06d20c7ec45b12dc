"""User-space targets: executables and shared libraries, found and read
without the kernel.

:mod:`.targets` finds a binary (a path, a library name such as ``libc`` or
``python3.11``, or what a running process mapped); :mod:`.usdt` reads its
USDT probes (the ``.note.stapsdt`` notes of ``<sys/sdt.h>``).
"""
