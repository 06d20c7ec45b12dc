// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Sampling profiler (perf_event): on every sample of a perf event (cpu-clock
 * or cycles at a frequency, one event per CPU), count in the kernel per
 * (process, comm, kernel stack, user stack).  Python reads the counts and the
 * stack-trace map once, at the end.  The key, the maps and the filters are
 * stack_counts.h's (shared with offcpu.bpf.c).
 *
 * New processes: the first time a process gets a count of its own with a user
 * stack (checked only when a new key is added, so not on the common path; a
 * kernel thread has no mappings to read), its pid goes to
 * the `new_pids` ring buffer when cfg_new_pids is set.  Python waits on that
 * ring (no polling, no scan of the counts) and reads the process's mappings
 * then, so a process that exits before the end still symbolises.
 *
 * Arch-neutral: the program reads nothing from the registers itself.
 * cfg_idle: count the idle task (pid 0) too.
 */
#include "stack_counts.h"

const volatile __u8 cfg_idle = 0;
const volatile __u8 cfg_new_pids = 0;

/* pids already announced on new_pids (LRU: a forgotten pid is announced again, harmlessly) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 8192);
} seen_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 4);
} new_pids SEC(".maps");

SEC("perf_event")
int profile_sample(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct profile_key key = {};
	__u8 one = 1;

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
	if (key_count(&key, 1) && cfg_new_pids && key.ustack >= 0 &&
	    !bpf_map_update_elem(&seen_pids, &key.pid, &one, BPF_NOEXIST))
		bpf_ringbuf_output(&new_pids, &key.pid, sizeof(key.pid), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
