// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The producer of bench/run's perf-buffer drain figure (section "perf"):
 * built by build.py into bench/perf_fill.bpf.o beside this file; not shipped.
 *
 *   fill_perf64   SEC("raw_tp"), run with BPF_PROG_TEST_RUN
 *     ctx[0] = n: send up to min(n, PERF_MAX_PER_RUN) 64-byte samples
 *     (struct perf_rec64: seq, a counter running across runs, and seven pad
 *     words equal to seq) to `events` on the CPU the run is on, stopping at
 *     the first the kernel refuses (that CPU's ring is full).  Returns how
 *     many were sent; a refused sample takes no seq.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define PERF_MAX_PER_RUN 1024

struct perf_rec64 {
	__u64 seq;
	__u64 pad[7];
};

struct perf_rec64 _perf_rec64 = {0};    /* keeps the struct in .BTF */

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

__u64 perf_seq = 0;

SEC("raw_tp")
int fill_perf64(__u64 *ctx)
{
	__u64 n = ctx[0];
	int sent = 0;

	for (int i = 0; i < PERF_MAX_PER_RUN && i < n; i++) {
		struct perf_rec64 r;
		__u64 seq = perf_seq;

		r.seq = seq;
		for (int j = 0; j < 7; j++)
			r.pad[j] = seq;
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &r, sizeof(r)))
			break;
		perf_seq = seq + 1;
		sent++;
	}
	return sent;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
