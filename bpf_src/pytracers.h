/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by every pytracers tracer: the event header, the pid/comm filters,
 * the per-CPU count of events lost to a full ring buffer, and the wakeup
 * policy.  The Python side never redeclares these layouts: it reads them from
 * each object's .BTF, so a field added here shows up in the decoded records.
 */
#ifndef PYTRACERS_H
#define PYTRACERS_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define PT_COMM_LEN 16

/* An event struct that is only ever reached through bpf_ringbuf_reserve()
 * (which returns void *) would be left out of .BTF, where Python looks its
 * layout up by name.  PT_BTF_EXPORT(struct foo_event, foo_event) keeps it
 * there, at the cost of one never-read pointer in .rodata named
 * pt_btf_foo_event. */
#define PT_BTF_EXPORT(type, name) \
	type *const volatile pt_btf_##name __attribute__((unused)) = (void *)0

/* Expanded at the top of every event struct, so records are flat:
 * ev.ts_ns, ev.pid (tgid), ev.tid, ev.cpu, ev.comm.  _kstack / _ustack are
 * stack ids in the `stacks` map (tracers made with stack=...; Python turns
 * them into ev.kstack / ev.ustack), or negative: -1 not asked for, else the
 * -errno of bpf_get_stackid (-EFAULT: no such stack, -ENOMEM/-EEXIST: lost).
 * 16 bits each (the map has at most PT_STACK_MAX_ENTRIES entries), in the
 * 4 bytes that were padding: the header's layout and size are unchanged. */
#define PT_EVENT_HEADER      \
	__u64 ts_ns;         \
	__u32 pid;           \
	__u32 tid;           \
	__u32 cpu;           \
	__s16 _kstack;       \
	__s16 _ustack;       \
	char comm[PT_COMM_LEN]

/* ---- configuration ------------------------------------------------------
 * Read-only globals are set by Python before load (the verifier then prunes
 * the branches they switch off).  The `filters` map can be changed after load.
 */
const volatile __u32 cfg_pid = 0;                  /* 0: any process */
const volatile char cfg_comm[PT_COMM_LEN] = {};    /* "": any command */
/* Wakeup policy: 0 = libbpf/kernel default (adaptive); otherwise wake the
 * consumer only when at least this many bytes are pending, so the traced path
 * does not pay for a wakeup per event.  The consumer polls with a timeout (the
 * latency bound) and so still drains a trickle of events. */
const volatile __u64 cfg_wakeup_bytes = 0;
/* Stacks on records (PT_FILL_STACKS): bit 0 the kernel stack, bit 1 the user stack. */
const volatile __u32 cfg_stacks = 0;
#define PT_STACK_KERNEL 1
#define PT_STACK_USER 2
#define PT_STACK_DEPTH 127
#define PT_STACK_MAX_ENTRIES 32767   /* stack ids fit the header's 16 bits */

struct pytracers_filter {
	__u32 pid;                  /* 0: any */
	__u32 use_comm;             /* 1: only `comm` */
	char comm[PT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pytracers_filter);
} filters SEC(".maps");

/* Events that could not be reserved in the ring (it was full). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Stack traces of records (cfg_stacks); Python sizes it before load (one
 * entry when no stacks are asked for). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PT_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 1);
} stacks SEC(".maps");

/* Resized by Python before load (must stay a power of two pages). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline bool pt_comm_eq(const char *a, const volatile char *b)
{
	for (int i = 0; i < PT_COMM_LEN; i++) {
		if (a[i] != b[i])
			return false;
		if (a[i] == 0)
			return true;
	}
	return true;
}

/* true when the current task passes both the load-time and the run-time filter */
static __always_inline bool pt_wanted(__u32 tgid)
{
	char comm[PT_COMM_LEN];
	__u32 zero = 0;
	struct pytracers_filter *f;
	bool have_comm = false;

	if (cfg_pid && cfg_pid != tgid)
		return false;
	if (cfg_comm[0]) {
		bpf_get_current_comm(comm, sizeof(comm));
		have_comm = true;
		if (!pt_comm_eq(comm, cfg_comm))
			return false;
	}
	f = bpf_map_lookup_elem(&filters, &zero);
	if (!f)
		return true;
	if (f->pid && f->pid != tgid)
		return false;
	if (f->use_comm) {
		if (!have_comm)
			bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < PT_COMM_LEN; i++) {
			if (comm[i] != f->comm[i])
				return false;
			if (comm[i] == 0)
				break;
		}
	}
	return true;
}

/* Add one to slot 0 of a one-entry BPF_MAP_TYPE_PERCPU_ARRAY of __u64. */
static __always_inline void pt_percpu_inc(void *map)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(map, &zero);

	if (n)
		*n += 1;   /* per-CPU slot: no other writer */
}

static __always_inline void pt_count_lost(void)
{
	pt_percpu_inc(&lost);
}

/* Reserve a record in `events`; on failure count it as lost. */
static __always_inline void *pt_reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		pt_count_lost();
	return e;
}

#define PT_RESERVE(type) ((type *)pt_reserve(sizeof(type)))

/* Fill the common header from the current task. */
#define PT_FILL_HEADER(e, id) do {                                  \
	(e)->ts_ns = bpf_ktime_get_ns();                             \
	(e)->pid = (__u32)((id) >> 32);                              \
	(e)->tid = (__u32)(id);                                      \
	(e)->cpu = bpf_get_smp_processor_id();                       \
	(e)->_kstack = -1;                                           \
	(e)->_ustack = -1;                                           \
	bpf_get_current_comm((e)->comm, sizeof((e)->comm));          \
} while (0)

/* The stacks cfg_stacks asks for, from the program's context `ctx`. */
#define PT_FILL_STACKS(e, ctx) do {                                         \
	if (cfg_stacks & PT_STACK_KERNEL)                                    \
		(e)->_kstack = (__s16)bpf_get_stackid((ctx), &stacks, 0);    \
	if (cfg_stacks & PT_STACK_USER)                                      \
		(e)->_ustack = (__s16)bpf_get_stackid((ctx), &stacks,        \
						       BPF_F_USER_STACK);    \
} while (0)

/* With cfg_wakeup_bytes set, a record wakes the consumer only when it finds
 * the pending data at or past the threshold while the wakeup is armed; that
 * disarms it until a record finds the pending data below the threshold again
 * (the consumer has drained).  So: one wakeup per threshold's worth of data,
 * none while the consumer lags.  Forcing a wakeup for every record past the
 * threshold would cost the traced path an irq_work interrupt per event exactly
 * when the consumer is behind (measured: one interrupt per event).  Two CPUs
 * may both find it armed and both wake the consumer, which is harmless; a
 * consumer that went to sleep with data pending finds it within its latency
 * bound. */
__u32 pt_wakeup_armed = 1;

static __always_inline __u64 pt_wakeup_flags(void)
{
	if (!cfg_wakeup_bytes)
		return 0;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < cfg_wakeup_bytes) {
		if (!pt_wakeup_armed)
			pt_wakeup_armed = 1;
		return BPF_RB_NO_WAKEUP;
	}
	if (pt_wakeup_armed) {
		pt_wakeup_armed = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void pt_submit(void *e)
{
	bpf_ringbuf_submit(e, pt_wakeup_flags());
}

#endif /* PYTRACERS_H */
