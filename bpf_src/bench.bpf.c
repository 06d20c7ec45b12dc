// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Ring-buffer event producers run with BPF_PROG_TEST_RUN (raw_tp programs
 * accept an array of u64 as ctx_in since 5.10), for the ring-buffer tests,
 * the pytest-plugin example (examples/pytest) and bench/run's drain figure:
 *
 *   fill_8, fill_64, fill_256   SEC("raw_tp")
 *     ctx[0] = n: reserve up to min(n, BENCH_MAX_PER_RUN) records of 8, 64
 *              or 256 bytes in `events` (call again for more).
 *     ctx[1] = k: 0, or discard instead of submitting every record whose
 *              seq % k == k - 1 (the k-th, 2k-th, ... record overall).
 *     Pass both (ctx_in of 16 bytes).  Each record is struct bench_rec<size>:
 *     seq, a counter running across runs and programs (bench_seq), and, in
 *     the padded records, every pad word equal to seq.  A record that cannot
 *     be reserved (ring full) consumes no seq and counts in `lost`, so a
 *     reader sees consecutive seqs (bar the discarded ones) and can check
 *     received + lost = requested.  The run's return value is the number
 *     of records reserved (submitted + discarded).
 *     bench_seq is not updated atomically (5.10 has no fetch-and-add):
 *     concurrent runs on several CPUs may repeat seqs.
 *
 * The benchmark's probe-cost programs (count-only and floor) are not here but
 * in bench/probe_cost.bpf.c, which is not shipped.
 *
 * The per-record work is in global functions, which the verifier checks
 * once rather than per loop iteration; that keeps the loop within what the
 * 5.10 verifier accepts.
 */
#include "pytracers.h"

#define BENCH_MAX_PER_RUN 4096

struct bench_rec8 {
	__u64 seq;
};

struct bench_rec64 {
	__u64 seq;
	__u64 pad[7];
};

struct bench_rec256 {
	__u64 seq;
	__u64 pad[31];
};

PT_BTF_EXPORT(struct bench_rec8, bench_rec8);
PT_BTF_EXPORT(struct bench_rec64, bench_rec64);
PT_BTF_EXPORT(struct bench_rec256, bench_rec256);

/* seq of the next record reserved */
__u64 bench_seq = 0;

/* Reserve one record, stamp it and submit or discard it; 1 if reserved. */
#define BENCH_PUT(size)                                                 \
__noinline int bench_put##size(__u64 k)                                 \
{                                                                       \
	struct bench_rec##size *r = PT_RESERVE(struct bench_rec##size); \
	__u64 seq;                                                      \
                                                                        \
	if (!r)                                                         \
		return 0;                                               \
	seq = bench_seq;                                                \
	bench_seq = seq + 1;                                            \
	r->seq = seq;                                                   \
	for (int i = 0; i < (int)(sizeof(*r) / 8) - 1; i++)             \
		((__u64 *)r)[i + 1] = seq;                              \
	if (k && seq % k == k - 1)                                      \
		bpf_ringbuf_discard(r, pt_wakeup_flags());              \
	else                                                            \
		pt_submit(r);                                           \
	return 1;                                                       \
}

#define BENCH_FILL(size)                                                \
BENCH_PUT(size)                                                         \
                                                                        \
SEC("raw_tp")                                                           \
int fill_##size(__u64 *ctx)                                             \
{                                                                       \
	__u64 n = ctx[0], k = ctx[1];                                   \
	int done = 0;                                                   \
                                                                        \
	for (int i = 0; i < BENCH_MAX_PER_RUN && i < n; i++)            \
		done += bench_put##size(k);                             \
	return done;                                                    \
}

BENCH_FILL(8)
BENCH_FILL(64)
BENCH_FILL(256)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
