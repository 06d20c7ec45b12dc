/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Benchmark-only maps: a hash of 8-byte keys and values for the batch-read row
 * of bench/run (filled from Python, read back in batches and per entry). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 100000);
	__type(key, __u64);
	__type(value, __u64);
} bench_hash SEC(".maps");

/* pytracers opens objects with at least one program: a trivial one, never attached. */
SEC("tp/syscalls/sys_enter_getpgid")
int bench_hash_touch(void *ctx)
{
	__u64 k = 0;

	bpf_map_lookup_elem(&bench_hash, &k);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
