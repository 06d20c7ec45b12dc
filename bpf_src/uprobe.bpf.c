// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * User-space function tracer through uprobes; the binary and the function's
 * file offset are chosen at attach time (bpf_program__attach_uprobe_opts),
 * Python resolving the symbol (pytracers.user.symbols).
 *
 *   ufn_entry    SEC("uprobe")      records the six argument registers and
 *                                   the start time (func_event.h's per-thread
 *                                   stack); with cfg_entry_only it emits an
 *                                   FN_ENTRY event at once and pushes nothing
 *   ufn_return   SEC("uretprobe")   emits one FN_RETURN event with the args,
 *                                   the return value and the latency
 *
 * The records are func_event.h's, the kernel function tracers' own: one event
 * shape for functions, kernel and user alike.  ip is the probed user address.
 * The argument registers come from bpf_tracing.h's PT_REGS_PARM* (the calling
 * convention of the target architecture); only the sixth needs spelling out
 * where libbpf has no PT_REGS_PARM6.
 */
/* One argument may be read as a NUL-terminated string (a `char *` the caller
 * asks for: cfg_str_arg, func_event.h), from the process's memory. */
#define FN_STR_READ(dst, size, ptr) bpf_probe_read_user_str(dst, size, ptr)
#include "func_event.h"

/* 1: the entry program emits an event by itself (no return program loaded) */
const volatile __u32 cfg_entry_only = 0;

#if defined(bpf_target_x86)
#define UFN_PARM6(ctx) ((ctx)->r9)
#elif defined(bpf_target_arm64)
#define UFN_PARM6(ctx) (((const volatile struct user_pt_regs *)(ctx))->regs[5])
#else
#define UFN_PARM6(ctx) 0
#endif

static __always_inline void ufn_args(struct pt_regs *ctx, __u64 *args)
{
	args[0] = PT_REGS_PARM1(ctx);
	args[1] = PT_REGS_PARM2(ctx);
	args[2] = PT_REGS_PARM3(ctx);
	args[3] = PT_REGS_PARM4(ctx);
	args[4] = PT_REGS_PARM5(ctx);
	args[5] = UFN_PARM6(ctx);
}

SEC("uprobe")
int ufn_entry(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 ip = PT_REGS_IP(ctx);
	struct fn_frame *f;

	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	if (cfg_entry_only) {
		__u64 args[FN_NARGS];

		ufn_args(ctx, args);
		fn_emit(ctx, pid_tgid, FN_ENTRY, ip, args, 0, 0);
		return 0;
	}
	f = fn_push((__u32)pid_tgid);
	if (!f)
		return 0;
	f->ip = ip;
	f->start_ns = bpf_ktime_get_ns();
	ufn_args(ctx, f->args);
	if (cfg_emit_entry)
		fn_emit(ctx, pid_tgid, FN_ENTRY, ip, f->args, 0, 0);
	return 0;
}

SEC("uretprobe")
int ufn_return(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fn_frame f;

	if (fn_pop((__u32)pid_tgid, 0, false, &f)) {
		fn_emit(ctx, pid_tgid, FN_RETURN | FN_HAS_RET, f.ip, f.args, PT_REGS_RC(ctx),
			f.start_ns);
		return 0;
	}
	/* entry not seen (or not loaded): the filters were not applied there */
	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	fn_emit(ctx, pid_tgid, FN_RETURN | FN_HAS_RET, 0, NULL, PT_REGS_RC(ctx), 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
