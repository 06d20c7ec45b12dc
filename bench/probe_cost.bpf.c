// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The programs of bench/run's probe-cost section, each attached to getpgid(2)
 * the way the built-in tracer of its kind attaches.  Built by build.py into
 * bench/probe_cost.bpf.o beside this file; not part of pytracers (the wheel
 * does not ship it).
 *
 *   sc_tp_count, sc_raw_count, sc_btf_count, count_kprobe, count_fentry
 *     Add one to `counts` and emit nothing: the bare cost of a probe.
 *   sc_tp_floor, sc_raw_floor, sc_btf_floor, floor_kprobe, floor_fentry
 *     Emit a record of the tracer's size with only the header filled: the
 *     least a tracer emitting one ring record per call can cost (the
 *     benchmark's floor for the tracers).
 *
 *   count_uprobe
 *     The count-only program of the uprobe section (bench/user.py), attached
 *     to a user function of bench/uloop.c.
 *
 * The tracepoint ones (sc_*) pass the syscall tracer's own filters -- the
 * syscall-id filter of syscalls.h (`syscall_ids`, cfg_filter_ids) for raw_tp
 * and tp_btf, and cfg_pid when set -- and their floor record is a
 * syscall_event.  The function ones (bench/run attaches them to
 * __x64_sys_getpgid) emit a record of func_event's size (120 bytes); they
 * are not loaded unless asked for (the "?"): kprobes may be missing and
 * fentry needs set_attach_target() first.
 */
#include "syscalls.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);                    /* probe hits (count programs) */
} counts SEC(".maps");

/* ---- tp, raw_tp, tp_btf: as the syscall tracer (syscalls.bpf.c) ---------- */

static __always_inline bool sc_count_wanted(void)
{
	return !cfg_pid || (bpf_get_current_pid_tgid() >> 32) == cfg_pid;
}

/* The benchmark's floor: a record with only the header filled. */
static __always_inline void sc_floor_record(void)
{
	struct syscall_event *e = PT_RESERVE(struct syscall_event);

	if (e) {
		PT_FILL_HEADER(e, bpf_get_current_pid_tgid());
		pt_submit(e);
	}
}

SEC("tp")
int sc_tp_count(void *ctx)
{
	if (sc_count_wanted())
		pt_percpu_inc(&counts);
	return 0;
}

SEC("tp")
int sc_tp_floor(void *ctx)
{
	if (sc_count_wanted())
		sc_floor_record();
	return 0;
}

SEC("raw_tp/sys_enter")
int sc_raw_count(struct sc_raw_tp_args *ctx)
{
	if (sc_id_wanted((long)ctx->args[1]) && sc_count_wanted())
		pt_percpu_inc(&counts);
	return 0;
}

SEC("raw_tp/sys_enter")
int sc_raw_floor(struct sc_raw_tp_args *ctx)
{
	if (sc_id_wanted((long)ctx->args[1]) && sc_count_wanted())
		sc_floor_record();
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sc_btf_count, struct sc_pt_regs *regs, long id)
{
	if (sc_id_wanted(id) && sc_count_wanted())
		pt_percpu_inc(&counts);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sc_btf_floor, struct sc_pt_regs *regs, long id)
{
	if (sc_id_wanted(id) && sc_count_wanted())
		sc_floor_record();
	return 0;
}

/* ---- kprobe, fentry: as the function tracer (kprobe.bpf.c, fentry.bpf.c) - */

SEC("?kprobe")
int count_kprobe(void *ctx)
{
	pt_percpu_inc(&counts);
	return 0;
}

SEC("?fentry")
int count_fentry(void *ctx)
{
	pt_percpu_inc(&counts);
	return 0;
}

struct bench_floor_event {
	PT_EVENT_HEADER;
	__u64 body[10];            /* sizeof == sizeof(struct func_event) */
};

static __always_inline void bench_floor_record(void)
{
	struct bench_floor_event *e = PT_RESERVE(struct bench_floor_event);

	if (e) {
		PT_FILL_HEADER(e, bpf_get_current_pid_tgid());
		pt_submit(e);
	}
}

SEC("?kprobe")
int floor_kprobe(void *ctx)
{
	bench_floor_record();
	return 0;
}

SEC("?fentry")
int floor_fentry(void *ctx)
{
	bench_floor_record();
	return 0;
}

/* ---- uprobe: bench/user.py attaches it to bench/uloop.c's pt_loop -------- */

SEC("?uprobe")
int count_uprobe(void *ctx)
{
	pt_percpu_inc(&counts);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
