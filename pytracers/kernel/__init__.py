"""Facts about the running kernel, each read in one place.

``host``        release and version, capabilities, lockdown, kprobe support
``symbols``     kallsyms, ftrace sites, deny lists, function existence,
                suggestions for misspelt names, function signatures (BTF)
``tracefs``     the tracefs mount, tracepoints and their format files
``introspect``  the BPF programs, maps and links in the kernel (by id)
``arch``        the machine's architecture and what it changes for pytracers

Every module here reads the kernel (procfs, sysfs, tracefs, BTF) and loads
nothing into it; the tracers, the chooser and the feature prober ask them.
Importing this package imports none of its modules.
"""
