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
 * then, so a process that exits before the end still symbolises.  A process
 * is announced again after each exec (seen_pids keeps the exec generation it
 * was announced in: task->self_exec_id, bumped by every exec): a child sampled
 * between fork and exec is announced with its parent's image, then with its
 * own.  Python also forgets a pid whose mappings it read in the middle of an
 * exec (the new image not yet mapped), so its next new key announces it again.
 *
 * Arch-neutral: the program reads nothing from the registers itself.
 * cfg_idle: count the idle task (pid 0) too.
 */
#include "stack_counts.h"
#include <bpf/bpf_core_read.h>

const volatile __u8 cfg_idle = 0;
const volatile __u8 cfg_new_pids = 0;

/* pid -> the exec generation it was last announced in, plus one (LRU: a
 * forgotten pid is announced again, harmlessly) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 8192);
} seen_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 4);
} new_pids SEC(".maps");

/* Put pid on new_pids unless it was announced in its current exec generation
 * (two CPUs of one process may both announce it: Python reads the maps twice). */
static __always_inline void announce(__u32 pid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 gen = BPF_CORE_READ(task, self_exec_id) + 1;
	__u64 *was = bpf_map_lookup_elem(&seen_pids, &pid);

	if (was && *was == gen)
		return;
	if (!bpf_map_update_elem(&seen_pids, &pid, &gen, BPF_ANY))
		bpf_ringbuf_output(&new_pids, &pid, sizeof(pid), 0);
}

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
		announce(key.pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
