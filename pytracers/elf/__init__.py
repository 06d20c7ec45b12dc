"""What an eBPF object file goes through before libbpf sees it: two passes.

:mod:`.validate`, the strict structural pass, runs first: with ``struct``
alone it checks every index and extent libelf and libbpf follow (ELF and
section headers, symbols, relocations, ``.BTF``, ``.BTF.ext``), because
fuzzing found libbpf 1.1 crashing on damaged files that a plain ELF reader
accepts (see RELIABILITY.md).  :mod:`.inspect` is the entry point and the
second pass: it reads the file safely, has :mod:`.validate` check it, then
reads the now-trusted file with pyelftools for what the object model needs
(program sections, global variables: an
:class:`~.inspect.ObjectInfo`), and for a shipped object reuses the result
build.py stored in :mod:`._inspected` instead of running either pass.
"""
