// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Off-CPU time (tp_btf/sched_switch): how long tasks were blocked, per
 * (process, comm, kernel stack, user stack), summed in the kernel.
 *
 * When a task is switched out without being preempted (it blocked: sleep,
 * I/O, a lock, a futex), its stacks and the time are kept per thread; when
 * it is switched in again, the time it was away is added to its key.  A
 * preempted task was runnable, not blocked: not counted unless
 * cfg_preempted.  Blocks shorter than cfg_min_ns are left out.
 *
 * The key, the maps and the filters are stack_counts.h's (shared with
 * profile.bpf.c); the filters apply when the task blocks (it is the current
 * task then).  stats[ST_EVENTS] counts the blocks.  New processes
 * (cfg_new_pids) are announced as the profiler announces them (stack_counts.h's
 * announce()) when a block of theirs adds a key, with the image (exec
 * generation, executable mappings) of the task coming back.
 */
#include "stack_counts.h"
#include <bpf/bpf_tracing.h>

struct offcpu_start {
	__u64 ts;
	struct profile_key key;
};

const volatile __u8 cfg_preempted = 0;
const volatile __u64 cfg_min_ns = 1000;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct offcpu_start);
	__uint(max_entries, 32768);
} start SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(offcpu_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns(), delta;
	struct offcpu_start s = {}, *in;
	__u32 tid = prev->pid;

	/* prev is the current task: it blocks (or is preempted) now */
	if (tid && (!preempt || cfg_preempted)) {
		s.key.pid = prev->tgid;
		if (task_wanted(s.key.pid)) {
			bpf_get_current_comm(&s.key.comm, sizeof(s.key.comm));
			if (comm_wanted(s.key.comm)) {
				s.ts = now;
				key_fill_stacks(ctx, &s.key);
				if (bpf_map_update_elem(&start, &tid, &s, BPF_ANY))
					stat_add(ST_COUNTS_FULL);
			}
		}
	}
	/* next comes back: the time it was away */
	tid = next->pid;
	in = bpf_map_lookup_elem(&start, &tid);
	if (!in)
		return 0;
	delta = now - in->ts;
	/* a new key with a user stack: announce next's process (cfg_new_pids) */
	if (delta >= cfg_min_ns && key_count(&in->key, delta) && cfg_new_pids &&
	    in->key.ustack >= 0)
		announce(in->key.pid, next);
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
