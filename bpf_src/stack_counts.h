/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by the aggregating stack programs (profile.bpf.c, offcpu.bpf.c): the
 * count key (process, comm, kernel stack id, user stack id), the stack-trace
 * map the ids point into, the counts and stats maps, the load-time filters
 * and the helpers that fill a key and add to its count.  Python reads the
 * same map and config names from both objects (pytracers/profiler/).
 *
 * Stacks go to a BPF_MAP_TYPE_STACK_TRACE map (bpf_get_stackid): identical
 * stacks are stored once and the count key stays small (32 bytes), where
 * copying the frames into the key (bpf_get_stack) would hash 2 x 127 x 8
 * bytes per event.
 *
 * Filters (const volatile, set before load): cfg_pid (a process, 0 = all),
 * cfg_comm (a command name, empty = all), cfg_cgroup (a cgroup v2 id,
 * 0 = all), cfg_kernel / cfg_user (which stacks to walk).
 */
#ifndef PT_STACK_COUNTS_H
#define PT_STACK_COUNTS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PT_COMM_LEN 16
#define PT_MAX_DEPTH 127
#define PT_EFAULT 14          /* bpf_get_stackid's -EFAULT: no such stack (not lost) */

struct profile_key {
	__u32 pid;            /* tgid */
	__s32 kstack;         /* stack id, or -errno (EFAULT: none, e.g. a kernel thread's user stack) */
	__s32 ustack;
	__u32 pad;
	char comm[PT_COMM_LEN];
};

/* stats[]: what the program counted besides the counts themselves */
enum {
	ST_EVENTS = 0,        /* samples (profile) or blocks (offcpu) counted, after the filters */
	ST_KSTACK_LOST = 1,   /* kernel stack not stored (map full or hash collision) */
	ST_USTACK_LOST = 2,
	ST_COUNTS_FULL = 3,   /* a counts (or offcpu's start) map full: event dropped */
	ST_NUM = 4,
};

const volatile __u32 cfg_pid = 0;
const volatile char cfg_comm[PT_COMM_LEN] = {};
const volatile __u64 cfg_cgroup = 0;
const volatile __u8 cfg_kernel = 1;
const volatile __u8 cfg_user = 1;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PT_MAX_DEPTH * sizeof(__u64));
	__uint(max_entries, 16384);
} stacks SEC(".maps");

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

/* true when the current task passes cfg_pid and cfg_cgroup (tgid given) */
static __always_inline int task_wanted(__u32 tgid)
{
	if (cfg_pid && tgid != cfg_pid)
		return 0;
	if (cfg_cgroup && bpf_get_current_cgroup_id() != cfg_cgroup)
		return 0;
	return 1;
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

/* The stack ids cfg_kernel / cfg_user ask for (-1: not asked for). */
static __always_inline void key_fill_stacks(void *ctx, struct profile_key *key)
{
	key->kstack = cfg_kernel ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	key->ustack = cfg_user ? bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK) : -1;
}

/* Count one event of `key` (its stacks lost or not) and add `val` to its
 * count; true when the key is new (this event added it). */
static __always_inline bool key_count(const struct profile_key *key, __u64 val)
{
	__u64 *v;

	stat_add(ST_EVENTS);
	if (key->kstack < 0 && key->kstack != -PT_EFAULT && cfg_kernel)
		stat_add(ST_KSTACK_LOST);
	if (key->ustack < 0 && key->ustack != -PT_EFAULT && cfg_user)
		stat_add(ST_USTACK_LOST);
	v = bpf_map_lookup_elem(&counts, key);
	if (v) {
		__sync_fetch_and_add(v, val);
		return false;
	}
	if (!bpf_map_update_elem(&counts, key, &val, BPF_NOEXIST))
		return true;
	v = bpf_map_lookup_elem(&counts, key);   /* another CPU added it */
	if (v)
		__sync_fetch_and_add(v, val);
	else
		stat_add(ST_COUNTS_FULL);
	return false;
}

/*
 * New processes (cfg_new_pids): the first time a process gets a count of its
 * own with a user stack -- a new key, so not on the common path -- its pid
 * goes to the `new_pids` ring, where Python waits and reads the process's
 * mappings at once, so a process that exits before the end still symbolises.
 * seen_pids keeps the image a pid was announced in: its exec generation (the
 * task's self_exec_id, bumped by every exec) and the size of its executable
 * mappings (mm->exec_vm, in pages, which a library loaded with dlopen -- or
 * unloaded -- changes).  A process is announced again at its next new key
 * after either changes, so the maps Python holds cover the code its new
 * stacks run in.  Python may also drop a pid from seen_pids (its maps read in
 * the middle of an exec) so that it is announced again.  LRU: a forgotten
 * pid is announced again, harmlessly.
 */
const volatile __u8 cfg_new_pids = 0;

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

/* Put pid (the process of task) on new_pids unless it was announced with the
 * same image (two CPUs of one process may both announce it: Python reads the
 * maps twice). */
static __always_inline void announce(__u32 pid, struct task_struct *task)
{
	__u64 exec_id = BPF_CORE_READ(task, self_exec_id);
	__u64 exec_vm = BPF_CORE_READ(task, mm, exec_vm);
	__u64 image = (exec_id << 32 | (__u32)exec_vm) + 1;
	__u64 *was = bpf_map_lookup_elem(&seen_pids, &pid);

	if (was && *was == image)
		return;
	if (!bpf_map_update_elem(&seen_pids, &pid, &image, BPF_ANY))
		bpf_ringbuf_output(&new_pids, &pid, sizeof(pid), 0);
}

#endif /* PT_STACK_COUNTS_H */
