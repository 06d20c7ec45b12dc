// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A multi-program object the way real tools write one: several tracepoint
 * programs sharing a counter map, plus programs some kernel refuses, each off
 * by default ("?" sections) so a test turns on the one it wants:
 *
 *   on_vfs_read     fentry: refused (EPERM, no verifier log) where BPF
 *                   trampolines are forbidden, loads elsewhere;
 *   on_missing      fentry on a function no kernel has: libbpf finds no BTF
 *                   type for it;
 *   bad_deref       a map value used without the NULL check: every verifier
 *                   rejects it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* A hash map: newer verifiers know that an array lookup with a constant key in
 * range cannot fail, a hash lookup can always miss. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void bump(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counts, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tp/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	bump(0);
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	bump(1);
	return 0;
}

SEC("raw_tp/sys_enter")
int count_enter(void *ctx)
{
	bump(2);
	return 0;
}

SEC("?fentry/vfs_read")
int BPF_PROG(on_vfs_read)
{
	bump(3);
	return 0;
}

SEC("?fentry/pt_no_such_function_xyz")
int BPF_PROG(on_missing)
{
	return 0;
}

SEC("?tp/syscalls/sys_enter_getpid")
int bad_deref(void *ctx)
{
	__u32 slot = 0;
	__u64 *v = bpf_map_lookup_elem(&seen, &slot);

	*v += 1;	/* no NULL check: the verifier refuses this */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
