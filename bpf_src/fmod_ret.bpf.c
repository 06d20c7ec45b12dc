// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Opt-in policy hook: policy_fmod_ret SEC("fmod_ret"), `__u64 *ctx`, target
 * set by Python before load (an int-returning function the kernel lets
 * fmod_ret modify: security_* hooks, error-injectable functions).
 *
 * Only the process whose tgid is cfg_target_pid is affected: its calls of the
 * target return cfg_errno without running the target.  cfg_target_pid = 0
 * (the default) affects nothing.  A nonzero value returned by an earlier
 * fmod_ret program on the same target (slot cfg_nargs) is passed on
 * unchanged.  Each denial adds one to `hits` and emits a policy_event.
 */
#include "pytracers.h"
#include "trampoline.h"

struct policy_event {
	PT_EVENT_HEADER;
	__s32 retval;               /* what the target returned instead */
	__u32 _pad;
};
PT_BTF_EXPORT(struct policy_event, policy_event);

const volatile __u32 cfg_target_pid = 0;
const volatile __s32 cfg_errno = -1;        /* -EPERM */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);                    /* denials */
} hits SEC(".maps");

SEC("fmod_ret")
int policy_fmod_ret(__u64 *ctx)
{
	__s32 prev = (__s32)tr_ret(ctx);
	__u64 pid_tgid;
	struct policy_event *e;

	if (prev)
		return prev;
	if (!cfg_target_pid)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if ((__u32)(pid_tgid >> 32) != cfg_target_pid)
		return 0;
	pt_percpu_inc(&hits);
	e = PT_RESERVE(struct policy_event);
	if (e) {
		PT_FILL_HEADER(e, pid_tgid);
		e->retval = cfg_errno;
		e->_pad = 0;
		pt_submit(e);
	}
	return cfg_errno;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
