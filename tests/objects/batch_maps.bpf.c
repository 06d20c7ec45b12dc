/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Test object: maps for batch operations -- a hash of u64 -> u64 (sized from
 * Python before load), an array, a per-CPU hash, and a hash whose value struct
 * has fields named like tuple methods (count, index).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct slot_stat {
	__u64 count;
	__u64 index;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} pcounts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct slot_stat);
} stats SEC(".maps");

int my_pid = 0;

SEC("tp/syscalls/sys_enter_getpgid")
int bump(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 key, one = 1, *v;
	__u32 k32;
	struct slot_stat *st, init = {};

	if (pid != my_pid)
		return 0;
	key = ctx->args[0];
	v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	k32 = key & 63;
	v = bpf_map_lookup_elem(&slots, &k32);
	if (v)
		__sync_fetch_and_add(v, 1);
	v = bpf_map_lookup_elem(&pcounts, &k32);
	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&pcounts, &k32, &one, BPF_NOEXIST);
	st = bpf_map_lookup_elem(&stats, &k32);
	if (!st) {
		init.index = k32;
		bpf_map_update_elem(&stats, &k32, &init, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats, &k32);
		if (!st)
			return 0;
	}
	__sync_fetch_and_add(&st->count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
