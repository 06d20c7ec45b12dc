// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The failed-load benchmark's object (bench/failed_loads.py): sixteen
 * programs, as in the report -- fifteen tracepoint programs the
 * verifier accepts and one it rejects (a hash-map value used without the NULL
 * check), so every load of the whole object fails after fifteen verifier
 * runs, each with its 1 MiB log buffer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

#define GOOD(n)                                         \
SEC("tp/syscalls/sys_enter_getpid")                     \
int good_##n(void *ctx)                                 \
{                                                       \
	__u32 k = n;                                    \
	__u64 *v = bpf_map_lookup_elem(&seen, &k);      \
	if (v)                                          \
		__sync_fetch_and_add(v, 1);             \
	return 0;                                       \
}

GOOD(1) GOOD(2) GOOD(3) GOOD(4) GOOD(5) GOOD(6) GOOD(7) GOOD(8)
GOOD(9) GOOD(10) GOOD(11) GOOD(12) GOOD(13) GOOD(14) GOOD(15)

SEC("tp/syscalls/sys_enter_getpid")
int rejected(void *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&seen, &k);

	*v += 1;	/* no NULL check: every verifier refuses this */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
