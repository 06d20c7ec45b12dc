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

/* The register frame of a syscall (the kernel's struct pt_regs), declared
 * here rather than taken from vmlinux.h so that accesses to it carry no CO-RE
 * relocation: an object without CO-RE relocations spares libbpf loading the
 * kernel's BTF (~10 ms of every start; tp_btf still needs it to attach).
 * Likewise the raw_tp context.  The asserts below hold each to vmlinux.h's.
 *
 * Per architecture (build.py builds each object for each):
 *   SC_ENTRY_ARGS(args, r)  the six argument registers at entry, from a
 *                           pt_regs or an sc_regs_window `r`
 *   SC_EXIT_ARGS(args, r)   the same at exit (arm64's x0 then holds the
 *                           return value; the first argument is in orig_x0)
 *   SC_REGS_ID(r)           the syscall number of the frame
 *   sc_regs_window          the part of pt_regs those read, and
 *   SC_WINDOW_READ(w, regs, exit)  reads it with bpf_probe_read_kernel
 *                           (0 or a negative error)
 */
#if defined(bpf_target_x86)
/* x86-64: the ptrace ABI (struct user_regs_struct begins with these 21
 * fields), unchanged since x86-64 Linux began. */
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

/* x86-64 passes syscall arguments in di, si, dx, r10, r8, r9, which lie in
 * pt_regs between r10 and di; one read of that window fetches all six and
 * the number. */
struct sc_regs_window {
	__u64 r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};

_Static_assert(__builtin_offsetof(struct sc_pt_regs, orig_ax) -
	       __builtin_offsetof(struct sc_pt_regs, r10) ==
	       sizeof(struct sc_regs_window) - sizeof(__u64),
	       "x86-64 pt_regs layout: r10 .. di, orig_ax must be contiguous");

#define SC_WINDOW_READ(w, regs, exit) \
	bpf_probe_read_kernel(&(w), sizeof(w), &(regs)->r10)

#define SC_ENTRY_ARGS(args, r) do {       \
	(args)[0] = (r).di;               \
	(args)[1] = (r).si;               \
	(args)[2] = (r).dx;               \
	(args)[3] = (r).r10;              \
	(args)[4] = (r).r8;               \
	(args)[5] = (r).r9;               \
} while (0)
#define SC_EXIT_ARGS(args, r) SC_ENTRY_ARGS(args, r)
#define SC_REGS_ID(r) ((long)(r).orig_ax)

#elif defined(bpf_target_arm64)
/* arm64: struct user_pt_regs (regs[31], sp, pc, pstate), then orig_x0 and
 * syscallno; the fields after them changed across kernels (pmr_save,
 * stackframe), so only this prefix is declared. Arguments are x0..x5, the
 * number is syscallno; the kernel keeps x0's value at entry in orig_x0 and
 * overwrites x0 with the return value. */
struct sc_pt_regs {
	__u64 regs[31];
	__u64 sp, pc, pstate;
	__u64 orig_x0;
	__s32 syscallno;
	__u32 _pad;
};

#define SC_SAME_OFFSET(f) \
	_Static_assert(__builtin_offsetof(struct pt_regs, f) == \
		       __builtin_offsetof(struct sc_pt_regs, f), "pt_regs." #f)
SC_SAME_OFFSET(regs);
SC_SAME_OFFSET(pstate);
SC_SAME_OFFSET(orig_x0);
SC_SAME_OFFSET(syscallno);
_Static_assert(sizeof(struct pt_regs) >= sizeof(struct sc_pt_regs), "sizeof pt_regs");

/* x0..x5 (one read) and orig_x0, syscallno (a second one, at exit only) */
struct sc_regs_window {
	__u64 regs[6];
	__u64 orig_x0;
	__s32 syscallno;
	__u32 _pad;
};

static __always_inline long sc_window_read(struct sc_regs_window *w,
					   const struct sc_pt_regs *regs, bool exit)
{
	long err = bpf_probe_read_kernel(w->regs, sizeof(w->regs), regs->regs);

	if (!err && exit)
		err = bpf_probe_read_kernel(&w->orig_x0, 16, &regs->orig_x0);
	return err;
}
#define SC_WINDOW_READ(w, regs, exit) sc_window_read(&(w), (regs), (exit))

#define SC_ENTRY_ARGS(args, r) do {       \
	(args)[0] = (r).regs[0];          \
	(args)[1] = (r).regs[1];          \
	(args)[2] = (r).regs[2];          \
	(args)[3] = (r).regs[3];          \
	(args)[4] = (r).regs[4];          \
	(args)[5] = (r).regs[5];          \
} while (0)
#define SC_EXIT_ARGS(args, r) do {        \
	SC_ENTRY_ARGS(args, r);           \
	(args)[0] = (r).orig_x0;          \
} while (0)
#define SC_REGS_ID(r) ((long)(r).syscallno)

#else
#error "syscalls.h: no syscall register frame for this architecture (x86, arm64)"
#endif

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
