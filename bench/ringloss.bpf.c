// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * bench/ringloss.py's producer: why does a ring-buffer reservation fail in a
 * ring far from full?  Built by build.py into bench/ringloss.bpf.o; not part
 * of pytracers.
 *
 *   rl_getpgid  (tp syscalls:sys_enter_getpgid; cfg_pid filters)
 *     Reserves a 120-byte record (the syscall tracer's size), fills the
 *     header, submits it with the tracers' wakeup policy -- the floor of
 *     bench/probe_cost.bpf.c -- and times the reservation.  When it fails,
 *     it asks the ring where its positions are and records them, so each
 *     failure can be told apart:
 *       full     the producer position would pass the consumer's by more
 *                than the ring's size (what `lost` is documented to mean);
 *       not full the ring had room: the kernel refused for another reason
 *                (its spinlock: not taken in NMI context before 6.15, a
 *                timeout or a detected deadlock of the resilient spinlock
 *                since), or the oldest record still being written spans the
 *                ring (6.10+'s pending_pos check).
 *     The time the failing call took separates a lock timeout (~250 ms on
 *     6.15+) from an immediate refusal.
 */
#include "pytracers.h"

struct rl_record {
	PT_EVENT_HEADER;
	__u8 pad[120 - 40];
};
PT_BTF_EXPORT(struct rl_record, rl_record);

enum {
	RL_ATTEMPTS,     /* reservations tried */
	RL_FULL,         /* failed, the ring had no room for the record */
	RL_NOT_FULL,     /* failed with room in the ring */
	RL_SLOW,         /* a successful reservation that took over 1 ms */
	RL_MAX_NS,       /* the longest successful reservation */
	RL_NSTATS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RL_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} rl_stats SEC(".maps");

struct rl_failure {
	__u64 ts_ns;        /* when the failing call started */
	__u64 took_ns;      /* how long bpf_ringbuf_reserve took to fail */
	__u64 cons_pos;     /* the ring, asked right after the failure */
	__u64 prod_pos;
	__u64 avail;
	__u64 size;
	__u32 cpu;
	__u32 pid;
};

#define RL_MAX_FAILURES 64

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RL_MAX_FAILURES);
	__type(key, __u32);
	__type(value, struct rl_failure);
} rl_failures SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rl_nfail SEC(".maps");           /* failures recorded (the next slot) */

static __always_inline void rl_add(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&rl_stats, &which);

	if (v)
		*v += n;
}

SEC("tp/syscalls/sys_enter_getpgid")
int rl_getpgid(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 t0, took, avail, size, len = sizeof(struct rl_record) + 8;
	struct rl_record *e;
	__u32 zero = 0, slot, which = RL_MAX_NS;
	__u64 *n, *max;
	struct rl_failure *f;

	if (!pt_wanted(id >> 32))
		return 0;
	rl_add(RL_ATTEMPTS, 1);
	t0 = bpf_ktime_get_ns();
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	took = bpf_ktime_get_ns() - t0;
	if (e) {
		PT_FILL_HEADER(e, id);
		pt_submit(e);
		if (took > 1000000)
			rl_add(RL_SLOW, 1);
		max = bpf_map_lookup_elem(&rl_stats, &which);
		if (max && took > *max)
			*max = took;
		return 0;
	}
	pt_count_lost();
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	rl_add(avail + len > size - 1 ? RL_FULL : RL_NOT_FULL, 1);
	n = bpf_map_lookup_elem(&rl_nfail, &zero);
	if (!n)
		return 0;
	slot = (__u32)__sync_fetch_and_add(n, 1);
	if (slot >= RL_MAX_FAILURES)
		return 0;
	f = bpf_map_lookup_elem(&rl_failures, &slot);
	if (!f)
		return 0;
	f->ts_ns = t0;
	f->took_ns = took;
	f->cons_pos = bpf_ringbuf_query(&events, BPF_RB_CONS_POS);
	f->prod_pos = bpf_ringbuf_query(&events, BPF_RB_PROD_POS);
	f->avail = avail;
	f->size = size;
	f->cpu = bpf_get_smp_processor_id();
	f->pid = id >> 32;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
