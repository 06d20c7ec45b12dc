// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * bench/run's stack-cost section: what a sample pays to capture its kernel
 * and user stacks, as stack ids (bpf_get_stackid into a STACK_TRACE map: the
 * walk, a hash of the frames, a store of a stack not seen before) or as
 * copies (bpf_get_stack into a per-CPU buffer: the walk and the copy; a
 * record or key carrying them would then be up to 2 x 1016 bytes larger).
 * Each is attached alone to a perf event per CPU; the run time per sample
 * comes from kernel.bpf_stats_enabled.  Not part of pytracers.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define DEPTH 127

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, DEPTH * sizeof(__u64));
	__uint(max_entries, 16384);
} stacks SEC(".maps");

struct frames {
	__u64 k[DEPTH];
	__u64 u[DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frames);
} bufs SEC(".maps");

/* results land here so nothing is optimised away */
__s64 sink;

SEC("perf_event")
int stack_by_id(void *ctx)
{
	long k = bpf_get_stackid(ctx, &stacks, 0);
	long u = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);

	__sync_fetch_and_add(&sink, k + u);
	return 0;
}

SEC("perf_event")
int stack_by_copy(void *ctx)
{
	__u32 zero = 0;
	struct frames *f = bpf_map_lookup_elem(&bufs, &zero);
	long k, u;

	if (!f)
		return 0;
	k = bpf_get_stack(ctx, f->k, sizeof(f->k), 0);
	u = bpf_get_stack(ctx, f->u, sizeof(f->u), BPF_F_USER_STACK);
	__sync_fetch_and_add(&sink, k + u);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
