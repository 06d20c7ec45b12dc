/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by the syscall tracer (syscalls.bpf.c) and the benchmark's probe-cost
 * programs (bench/probe_cost.bpf.c), so that these measure the tracer's own
 * record size and syscall-id filter: the event, the id filter (`syscall_ids`,
 * cfg_filter_ids) and the contexts of the raw sys_enter/sys_exit tracepoints.
 */
#ifndef PYTRACERS_SYSCALLS_H
#define PYTRACERS_SYSCALLS_H

#include "pytracers.h"

#define SC_MAX_IDS 1024
#define SC_NARGS 6

struct syscall_event {
	PT_EVENT_HEADER;
	__s64 id;                   /* syscall number */
	__s64 ret;                  /* return value (-errno on failure) */
	__u64 latency_ns;           /* entry to exit */
	__u64 args[SC_NARGS];       /* argument registers at entry */
};
PT_BTF_EXPORT(struct syscall_event, syscall_event);

/* 1: only syscalls whose `syscall_ids` slot is nonzero (raw_tp, tp_btf);
 * ids >= SC_MAX_IDS (and negative ids) are then never traced. */
const volatile __u32 cfg_filter_ids = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SC_MAX_IDS);
	__type(key, __u32);                      /* syscall number */
	__type(value, __u8);                     /* nonzero: trace it */
} syscall_ids SEC(".maps");

/* The x86-64 register frame of a syscall (the kernel's struct pt_regs),
 * declared here rather than taken from vmlinux.h so that accesses to it carry
 * no CO-RE relocation: its layout is the ptrace ABI (struct user_regs_struct
 * begins with these 21 fields) and has not changed since x86-64 Linux began;
 * the asserts below hold it to vmlinux.h's.  An object without CO-RE
 * relocations spares libbpf loading the kernel's BTF (~10 ms of every start;
 * tp_btf still needs it to attach).  Likewise the raw_tp context. */
struct sc_pt_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	__u64 ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

#define SC_SAME_OFFSET(f) \
	_Static_assert(__builtin_offsetof(struct pt_regs, f) == \
		       __builtin_offsetof(struct sc_pt_regs, f), "pt_regs." #f)
SC_SAME_OFFSET(r10);
SC_SAME_OFFSET(r9);
SC_SAME_OFFSET(r8);
SC_SAME_OFFSET(dx);
SC_SAME_OFFSET(si);
SC_SAME_OFFSET(di);
SC_SAME_OFFSET(orig_ax);
SC_SAME_OFFSET(ss);
_Static_assert(sizeof(struct pt_regs) == sizeof(struct sc_pt_regs), "sizeof pt_regs");

struct sc_raw_tp_args {
	__u64 args[2];              /* sys_enter: regs, id; sys_exit: regs, ret */
};

static __always_inline bool sc_id_wanted(long id)
{
	__u32 key;
	__u8 *on;

	if (!cfg_filter_ids)
		return true;
	if ((unsigned long)id >= SC_MAX_IDS)
		return false;
	key = (__u32)id;
	on = bpf_map_lookup_elem(&syscall_ids, &key);
	return on && *on;
}

#endif /* PYTRACERS_SYSCALLS_H */
