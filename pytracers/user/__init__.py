"""Facts about user-space targets, each read in one place (the user-space
half of the kernel facts layer).

``targets``   which file a target names: a path, a library name resolved as
              the dynamic loader would, or what a running process mapped
``symbols``   ELF symbol tables (.symtab, .dynsym): a symbol's file offset
              for a uprobe, globs, stripped binaries

Every module here reads files and /proc and loads nothing into the kernel.
Importing this package imports none of its modules.
"""
