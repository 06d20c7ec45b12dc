// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A perf-event-array output map written the way libbpf tools write it, for
 * tests/test_perfbuf.py.  Not shipped: build.py builds it into tests/objects/.
 *
 *   on_getppid   SEC("tracepoint/syscalls/sys_enter_getppid")
 *     For the process whose tgid is target_pid (const volatile, set before
 *     load): a struct event on the stack, sent with
 *     bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e)).
 *     nth counts the matching calls from 1 (not atomically).
 *   produce      SEC("raw_tp"), run with BPF_PROG_TEST_RUN
 *     ctx[0] = n: send min(n, MAX_PER_RUN) struct sample64 (64 bytes) from
 *     the stack; seq runs across runs (next_seq) and every pad word is
 *     seq ^ PAD_MAGIC.  Returns how many the kernel took.
 *   produce_var  SEC("raw_tp"), run with BPF_PROG_TEST_RUN
 *     ctx[0] = n: send min(n, MAX_PER_RUN) samples of var_len(seq) bytes
 *     (8 to 256) from a per-CPU heap: word 0 is seq, word i is seq * 31 + i.
 *     Returns how many the kernel took.
 *   counts[0] = samples the producers tried to send, counts[1] = samples the
 *   kernel refused (ring full), for both raw_tp producers.
 *
 * struct event and struct sample64 live on the stack; the unused global
 * instances below keep them in .BTF (a common idiom of libbpf tools, whose
 * skeleton generators need the same), so the reader can decode by name.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define MAX_PER_RUN 512
#define PAD_MAGIC 0x5a5a5a5a5a5a5a5aULL
#define TASK_COMM_LEN 16

struct event {
	__u32 pid;
	__u32 tid;
	__u64 nth;
	__u64 ts_ns;
	char comm[TASK_COMM_LEN];
};

struct sample64 {
	__u64 seq;
	__u64 pad[7];
};

struct var_sample {
	__u64 words[64];     /* the first 32 are sent at most */
};

struct event _event = {0};
struct sample64 _sample64 = {0};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct var_sample);
} heap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

const volatile __u32 target_pid = 0;
__u64 matches = 0;
__u64 next_seq = 0;
__u64 next_var_seq = 0;

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &which);

	if (c)
		__sync_fetch_and_add(c, 1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct event e = {};

	if (target_pid && (id >> 32) != target_pid)
		return 0;
	e.pid = id >> 32;
	e.tid = (__u32)id;
	/* not atomic: a fetching atomic add needs 5.12; the tests call from one thread */
	e.nth = ++matches;
	e.ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

SEC("raw_tp")
int produce(__u64 *ctx)
{
	__u64 n = ctx[0];
	int sent = 0;

	for (int i = 0; i < MAX_PER_RUN && i < n; i++) {
		struct sample64 s;
		__u64 seq = next_seq;

		s.seq = seq;
		for (int j = 0; j < 7; j++)
			s.pad[j] = seq ^ PAD_MAGIC;
		count(0);
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &s, sizeof(s))) {
			count(1);
			continue;       /* dropped: the next sample gets this seq */
		}
		next_seq = seq + 1;
		sent++;
	}
	return sent;
}

/* 8 .. 256 bytes, all lengths mod 8 */
static __always_inline __u64 var_len(__u64 seq)
{
	return 8 + (seq * 37) % 249;
}

SEC("raw_tp")
int produce_var(__u64 *ctx)
{
	__u64 n = ctx[0];
	__u32 zero = 0;
	int sent = 0;

	for (int i = 0; i < MAX_PER_RUN && i < n; i++) {
		struct var_sample *v = bpf_map_lookup_elem(&heap, &zero);
		__u64 seq = next_var_seq;
		__u64 len = var_len(seq);

		if (!v)
			return sent;
		v->words[0] = seq;
		for (int j = 1; j < 32; j++)
			v->words[j] = seq * 31 + j;
		count(0);
		barrier_var(len);     /* a bound the verifier sees: len < sizeof(*v) */
		len &= sizeof(*v) - 1;
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, v, len)) {
			count(1);
			continue;
		}
		next_var_seq = seq + 1;
		sent++;
	}
	return sent;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
