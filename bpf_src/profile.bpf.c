// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Sampling profiler (perf_event): on every sample of a perf event (cpu-clock
 * or cycles at a frequency, one event per CPU), count in the kernel per
 * (process, comm, kernel stack, user stack).  Python reads the counts and the
 * stack-trace map once, at the end.  The key, the maps and the filters are
 * stack_counts.h's (shared with offcpu.bpf.c).
 *
 * New processes (cfg_new_pids): announced on the `new_pids` ring the first
 * time they get a count of their own with a user stack, and again after each
 * exec or change of their executable mappings (a dlopen; stack_counts.h's
 * announce()), so that Python reads their mappings while they live.
 *
 * Arch-neutral: the program reads nothing from the registers itself.
 * cfg_idle: count the idle task (pid 0) too.
 */
#include "stack_counts.h"

const volatile __u8 cfg_idle = 0;

SEC("perf_event")
int profile_sample(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct profile_key key = {};

	key.pid = pid_tgid >> 32;
	if (!cfg_idle && (__u32)pid_tgid == 0)
		return 0;
	if (!task_wanted(key.pid))
		return 0;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	if (!comm_wanted(key.comm))
		return 0;
	key_fill_stacks(ctx, &key);
	/* a new key with a user stack (kernel threads have none: nothing to map) */
	if (key_count(&key, 1) && cfg_new_pids && key.ustack >= 0)
		announce(key.pid, (struct task_struct *)bpf_get_current_task());
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
