// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Sampling profiler (perf_event): on every sample of a perf event (cpu-clock
 * or cycles at a frequency, one event per CPU), count in the kernel per
 * (process, comm, kernel stack, user stack).  Python reads the counts and the
 * stack-trace map once, at the end.
 *
 * Stacks go to a BPF_MAP_TYPE_STACK_TRACE map (bpf_get_stackid): identical
 * stacks are stored once and the count key stays small (a hash of 32-byte
 * keys), where copying the frames into the key (bpf_get_stack) would hash
 * 2 x 127 x 8 bytes per sample.  See docs/profiling.md for the measurement.
 *
 * Arch-neutral: the program reads nothing from the registers itself.
 *
 * Filters (const volatile, set before load): cfg_pid (a process, 0 = all),
 * cfg_comm (a command name, empty = all), cfg_cgroup (a cgroup v2 id,
 * 0 = all), cfg_idle (count the idle task too), cfg_kernel / cfg_user (which
 * stacks to walk).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define PT_COMM_LEN 16
#define PT_MAX_DEPTH 127

struct profile_key {
	__u32 pid;            /* tgid */
	__s32 kstack;         /* stack id, or -errno (EFAULT: none, e.g. a kernel thread's user stack) */
	__s32 ustack;
	__u32 pad;
	char comm[PT_COMM_LEN];
};

/* stats[]: what the program counted besides the samples */
enum {
	ST_SAMPLES = 0,       /* samples taken (after the filters) */
	ST_KSTACK_LOST = 1,   /* kernel stack not stored (map full or hash collision) */
	ST_USTACK_LOST = 2,
	ST_COUNTS_FULL = 3,   /* counts map full: sample dropped */
	ST_NUM = 4,
};

const volatile __u32 cfg_pid = 0;
const volatile char cfg_comm[PT_COMM_LEN] = {};
const volatile __u64 cfg_cgroup = 0;
const volatile __u8 cfg_idle = 0;
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

SEC("perf_event")
int profile_sample(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct profile_key key = {};
	__u64 one = 1, *v;

	key.pid = pid_tgid >> 32;
	if (!cfg_idle && (__u32)pid_tgid == 0)
		return 0;
	if (cfg_pid && key.pid != cfg_pid)
		return 0;
	if (cfg_cgroup && bpf_get_current_cgroup_id() != cfg_cgroup)
		return 0;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	if (!comm_wanted(key.comm))
		return 0;
	stat_add(ST_SAMPLES);
	key.kstack = cfg_kernel ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	key.ustack = cfg_user ? bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK) : -1;
	if (key.kstack < 0 && key.kstack != -14 && cfg_kernel)   /* -EFAULT: no stack */
		stat_add(ST_KSTACK_LOST);
	if (key.ustack < 0 && key.ustack != -14 && cfg_user)
		stat_add(ST_USTACK_LOST);
	v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		__sync_fetch_and_add(v, 1);
	} else if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&counts, &key);   /* another CPU added it */
		if (v)
			__sync_fetch_and_add(v, 1);
		else
			stat_add(ST_COUNTS_FULL);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
