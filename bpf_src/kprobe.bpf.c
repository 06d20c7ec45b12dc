// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Function tracer through kprobes; the traced function is chosen at attach
 * time (bpf_program__attach_kprobe(prog, retprobe, func)).
 *
 *   fn_kprobe / fn_kretprobe               SEC("kprobe") / SEC("kretprobe")
 *   fn_kprobe_multi / fn_kretprobe_multi   SEC("?kprobe.multi") /
 *                                          SEC("?kretprobe.multi")
 *                                          ("?": autoload off by default)
 *
 * The entry program records the six argument registers and the start time
 * (func_event.h: per-thread call stack in `inflight`); the return program
 * emits one FN_RETURN event with args, return value and latency.  With
 * cfg_emit_entry the entry program also emits an FN_ENTRY event.
 *
 * Only the pair Python autoloads is loaded.  fn_kprobe/fn_kretprobe use
 * nothing newer than 5.10; ip is then the probed address, taken at entry
 * from the saved ip, which a kprobe handler sees one byte past the probed
 * address on x86 (as after an int3) and on it on arm64 -- the function's
 * address for a probe on its first instruction -- and 0 in a return event whose entry was not seen
 * (Python knows which function it attached to).  args and ret are the raw
 * 64-bit registers: for an argument or return type narrower than 64 bits
 * the upper bits are not meaningful.  The kprobe.multi pair needs a kernel
 * with kprobe_multi links (5.18+, where bpf_get_func_ip is also available):
 * ip is then the function's address in every event, and returns are matched
 * to entries of the same function.
 */
/* A `char *` argument read as a string where asked (cfg_str_arg): kernel or
 * user memory, whichever the pointer is (func_event.h). */
#define FN_STR_READ(dst, size, ptr) fn_read_any_str(dst, size, ptr)
#include "func_event.h"

/* The probed address from a kprobe's saved ip: x86's int3 leaves ip one byte
 * past it; arm64's brk leaves pc on it. */
#if defined(bpf_target_x86)
#define FN_KPROBE_IP_OFFSET 1
#else
#define FN_KPROBE_IP_OFFSET 0
#endif

/* libbpf 1.1 (Debian bookworm's) has PT_REGS_PARM1..5 only */
#ifndef PT_REGS_PARM6
#if defined(bpf_target_x86)
#define PT_REGS_PARM6(x) ((x)->r9)
#elif defined(bpf_target_arm64)
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->regs[5])
#endif
#endif

/* the six argument registers, read the way libbpf reads them on the object's
 * architecture (PT_REGS_PARM*: x86-64 di..r9, arm64 x0..x5) */
static __always_inline void fn_args(struct pt_regs *ctx, __u64 *args)
{
	args[0] = PT_REGS_PARM1(ctx);
	args[1] = PT_REGS_PARM2(ctx);
	args[2] = PT_REGS_PARM3(ctx);
	args[3] = PT_REGS_PARM4(ctx);
	args[4] = PT_REGS_PARM5(ctx);
	args[5] = PT_REGS_PARM6(ctx);
}

static __always_inline int fn_entry(struct pt_regs *ctx, __u64 ip)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fn_frame *f;

	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	f = fn_push((__u32)pid_tgid);
	if (f) {
		f->ip = ip;
		f->start_ns = bpf_ktime_get_ns();
		fn_args(ctx, f->args);
		if (cfg_emit_entry)
			fn_emit(ctx, pid_tgid, FN_ENTRY, ip, f->args, 0, 0);
	} else if (cfg_emit_entry) {
		__u64 args[FN_NARGS];

		fn_args(ctx, args);
		fn_emit(ctx, pid_tgid, FN_ENTRY, ip, args, 0, 0);
	}
	return 0;
}

static __always_inline int fn_return(struct pt_regs *ctx, __u64 ip, bool match_ip)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fn_frame f;

	if (fn_pop((__u32)pid_tgid, ip, match_ip, &f)) {
		fn_emit(ctx, pid_tgid, FN_RETURN | FN_HAS_RET, f.ip, f.args,
			PT_REGS_RC(ctx), f.start_ns);
		return 0;
	}
	/* entry not seen: the filters were not applied there */
	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	fn_emit(ctx, pid_tgid, FN_RETURN | FN_HAS_RET, ip, NULL, PT_REGS_RC(ctx), 0);
	return 0;
}

SEC("kprobe")
int fn_kprobe(struct pt_regs *ctx)
{
	return fn_entry(ctx, PT_REGS_IP(ctx) - FN_KPROBE_IP_OFFSET);
}

SEC("kretprobe")
int fn_kretprobe(struct pt_regs *ctx)
{
	return fn_return(ctx, 0, false);
}

SEC("?kprobe.multi")
int fn_kprobe_multi(struct pt_regs *ctx)
{
	return fn_entry(ctx, bpf_get_func_ip(ctx));
}

SEC("?kretprobe.multi")
int fn_kretprobe_multi(struct pt_regs *ctx)
{
	return fn_return(ctx, bpf_get_func_ip(ctx), true);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
