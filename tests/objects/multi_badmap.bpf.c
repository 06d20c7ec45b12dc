// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * An object whose second map no kernel creates: an array map with
 * BPF_F_NO_PREALLOC (only hash-like maps take it), so the kernel refuses the
 * map with EINVAL and libbpf names it.  The first map and the program are
 * fine.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} good SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} refused SEC(".maps");

SEC("tp/syscalls/sys_enter_getpid")
int use_maps(void *ctx)
{
	__u32 k = 0;
	__u64 *a = bpf_map_lookup_elem(&good, &k);
	__u64 *b = bpf_map_lookup_elem(&refused, &k);

	if (a && b)
		*a += *b;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
