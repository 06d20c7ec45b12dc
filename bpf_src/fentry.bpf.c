// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Function tracer through BPF trampolines: fn_fentry SEC("fentry") and
 * fn_fexit SEC("fexit"), both `__u64 *ctx`, target set by Python with
 * bpf_program__set_attach_target() before load (one object per function).
 *
 * fexit sees the arguments and the return value together, so fn_fexit alone
 * emits complete FN_RETURN events.  fn_fentry is needed only for
 *   cfg_latency     fentry records the start time (func_event.h call stack in
 *                   `inflight`), fexit reports entry-to-return latency;
 *   cfg_emit_entry  fentry also emits an FN_ENTRY event with the arguments.
 *
 * cfg_nargs (trampoline.h) must be the target's number of argument slots;
 * arguments past the sixth are not reported, nor those in cfg_skip_args.
 * cfg_skip_ret = 1: the return slot is not read and FN_HAS_RET is unset (for a
 * target returning void, or a return type the kernel does not expose).
 * cfg_func_ip is copied into ip (0: left for Python to fill in;
 * bpf_get_func_ip would need 5.15).  args and ret are the raw 64-bit slots:
 * for a type narrower than 64 bits the upper bits are not meaningful (5.10
 * leaves garbage there for an int argument).
 */
/* A `char *` argument read as a string where asked (cfg_str_arg): kernel or
 * user memory, whichever the pointer is (func_event.h). */
#define FN_STR_READ(dst, size, ptr) fn_read_any_str(dst, size, ptr)
#include "func_event.h"
#include "trampoline.h"

const volatile __u32 cfg_latency = 0;
const volatile __u32 cfg_skip_ret = 0;
const volatile __u64 cfg_func_ip = 0;

SEC("fentry")
int fn_fentry(__u64 *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fn_frame *f;

	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	if (cfg_latency) {
		f = fn_push((__u32)pid_tgid);
		if (f) {
			f->ip = cfg_func_ip;
			f->start_ns = bpf_ktime_get_ns();
		}
	}
	if (cfg_emit_entry) {
		__u64 args[FN_NARGS];

		tr_args(ctx, args, FN_NARGS);
		fn_emit(ctx, pid_tgid, FN_ENTRY, cfg_func_ip, args, 0, 0);
	}
	return 0;
}

SEC("fexit")
int fn_fexit(__u64 *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 args[FN_NARGS], start_ns = 0;
	__u32 flags = FN_RETURN;
	struct fn_frame f;
	__s64 ret = 0;

	if (cfg_latency && fn_pop((__u32)pid_tgid, 0, false, &f))
		start_ns = f.start_ns;
	else if (!pt_wanted(pid_tgid >> 32))
		return 0;
	tr_args(ctx, args, FN_NARGS);
	if (!cfg_skip_ret) {
		ret = tr_ret(ctx);
		flags |= FN_HAS_RET;
	}
	fn_emit(ctx, pid_tgid, flags, cfg_func_ip, args, ret, start_ns);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
