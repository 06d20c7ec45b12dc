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
 * Filters as profile.bpf.c's: cfg_pid, cfg_comm, cfg_cgroup (applied when the
 * task blocks, as the current task), cfg_kernel / cfg_user.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define PT_COMM_LEN 16
#define PT_MAX_DEPTH 127

struct profile_key {
	__u32 pid;
	__s32 kstack;
	__s32 ustack;
	__u32 pad;
	char comm[PT_COMM_LEN];
};

struct offcpu_start {
	__u64 ts;
	struct profile_key key;
};

enum {
	ST_BLOCKS = 0,        /* blocks counted */
	ST_KSTACK_LOST = 1,
	ST_USTACK_LOST = 2,
	ST_COUNTS_FULL = 3,   /* counts or start map full */
	ST_NUM = 4,
};

const volatile __u32 cfg_pid = 0;
const volatile char cfg_comm[PT_COMM_LEN] = {};
const volatile __u64 cfg_cgroup = 0;
const volatile __u8 cfg_kernel = 1;
const volatile __u8 cfg_user = 1;
const volatile __u8 cfg_preempted = 0;
const volatile __u64 cfg_min_ns = 1000;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PT_MAX_DEPTH * sizeof(__u64));
	__uint(max_entries, 16384);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct offcpu_start);
	__uint(max_entries, 32768);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct profile_key);
	__type(value, __u64);
	__uint(max_entries, 32768);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, ST_NUM);
} stats SEC(".maps");

static __always_inline void stat_add(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);

	if (v)
		*v += 1;
}

static __always_inline int comm_wanted(const char *comm)
{
	int i;

	if (cfg_comm[0] == 0)
		return 1;
	for (i = 0; i < PT_COMM_LEN; i++) {
		if (comm[i] != cfg_comm[i])
			return 0;
		if (comm[i] == 0)
			return 1;
	}
	return 1;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(offcpu_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns(), *v, delta;
	struct offcpu_start s = {}, *in;
	__u32 tid = prev->pid;

	/* prev is the current task: it blocks (or is preempted) now */
	if (tid && (!preempt || cfg_preempted)) {
		s.key.pid = prev->tgid;
		if ((!cfg_pid || s.key.pid == cfg_pid) &&
		    (!cfg_cgroup || bpf_get_current_cgroup_id() == cfg_cgroup)) {
			bpf_get_current_comm(&s.key.comm, sizeof(s.key.comm));
			if (comm_wanted(s.key.comm)) {
				s.ts = now;
				s.key.kstack = cfg_kernel ? bpf_get_stackid(ctx, &stacks, 0) : -1;
				s.key.ustack = cfg_user ?
					bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK) : -1;
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
	if (delta >= cfg_min_ns) {
		stat_add(ST_BLOCKS);
		if (in->key.kstack < 0 && in->key.kstack != -14 && cfg_kernel)
			stat_add(ST_KSTACK_LOST);
		if (in->key.ustack < 0 && in->key.ustack != -14 && cfg_user)
			stat_add(ST_USTACK_LOST);
		v = bpf_map_lookup_elem(&counts, &in->key);
		if (v) {
			__sync_fetch_and_add(v, delta);
		} else if (bpf_map_update_elem(&counts, &in->key, &delta, BPF_NOEXIST)) {
			v = bpf_map_lookup_elem(&counts, &in->key);
			if (v)
				__sync_fetch_and_add(v, delta);
			else
				stat_add(ST_COUNTS_FULL);
		}
	}
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
