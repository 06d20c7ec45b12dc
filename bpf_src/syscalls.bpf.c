// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Syscall tracer: one record per completed syscall (id, return value,
 * latency from entry to exit, the six argument registers seen at entry).
 *
 * Three interchangeable variants share the event and the maps; Python
 * autoloads the programs of one of them:
 *
 *   tp      sc_tp_enter<N> / sc_tp_exit, SEC("tp"), attached by Python to
 *           syscalls:sys_enter_<X> / syscalls:sys_exit_<X> for each chosen X,
 *           N being X's number of arguments (see sc_tp_enter below).  Runs
 *           only for those syscalls, so it needs no id filter.
 *   raw_tp  sc_raw_enter / sc_raw_exit on the raw sys_enter / sys_exit
 *           tracepoints: run for every syscall of the system, filtered by id
 *           through `syscall_ids` when cfg_filter_ids is set.
 *   tp_btf  sc_btf_enter / sc_btf_exit: the same two tracepoints with typed
 *           (BTF) arguments, so pt_regs is read without bpf_probe_read.
 *
 * Without latency (Python's measure_latency=False) each variant has one
 * program per syscall, at exit, and no pairing: sc_tp_exit_regs,
 * sc_raw_exit_regs, sc_btf_exit_regs read the id, the return value and the
 * argument registers from the task's saved user registers (pt_regs), which
 * the syscall leaves as they were at entry -- except execve/execveat (the new
 * image's registers) and rt_sigreturn (the restored context).  The tp one
 * reaches pt_regs through bpf_task_pt_regs() (kernel 5.15+); Python falls
 * back to the entry/exit pair where the kernel refuses it.
 *
 * In-kernel statistics (Python's SyscallStats, `pytracers syscalls`): the
 * same entry programs, and sc_tp_stat_exit / sc_raw_stat_exit /
 * sc_btf_stat_exit at exit, which add the completed call to `stats` -- per
 * (process, syscall): calls, errors, total and largest latency, a latency
 * histogram -- instead of emitting a record.  Nothing per call crosses to
 * user space, so no call is lost to a reader that cannot keep up; the counts
 * only grow, and Python reads them when it likes and subtracts.
 *
 * The event, the id filter and the raw tracepoint contexts are in
 * syscalls.h, which the benchmark's count-only and floor programs for these
 * tracepoints (bench/probe_cost.bpf.c, not shipped) share.
 *
 * Entry and exit are paired per thread through `inflight`.  It is an LRU
 * hash: exit(2)/exit_group(2) have an entry but never an exit, and an LRU map
 * drops those stale entries instead of filling up.  An exit whose id differs
 * from the stored entry's (the entry is stale) drops the entry unreported.
 *
 * Arguments beyond the syscall's own arity: tp reports 0, raw_tp/tp_btf
 * report whatever the registers held (the consumer masks them by arity).  The
 * native syscall ABI of the object's architecture is handled (syscalls.h:
 * x86-64, arm64); 32-bit syscalls of compat tasks (ia32, AArch32) are
 * reported with the native numbering and registers.
 */
#include "syscalls.h"

struct sc_inflight {
	__u64 start_ns;
	__s64 id;
	__u64 args[SC_NARGS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);                      /* tid */
	__type(value, struct sc_inflight);
} inflight SEC(".maps");

/* Records of the per-syscall tracepoints, as their format files describe
 * them (events/syscalls/sys_{enter,exit}_<X>/format): the syscall number is
 * an int at offset 8, the arguments (enter) or the return value (exit) start
 * at offset 16.  The first 8 bytes (common fields) cannot be read by a tp
 * program. */
struct sc_tp_enter_args {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__u64 args[SC_NARGS];
};

struct sc_tp_exit_args {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* Filters of the raw_tp/tp_btf entry programs: syscall id, then process. */
static __always_inline bool sc_enter_wanted(long id, __u64 *pid_tgid)
{
	if (!sc_id_wanted(id))
		return false;
	*pid_tgid = bpf_get_current_pid_tgid();
	return pt_wanted(*pid_tgid >> 32);
}

/* Store the entry of the current thread's syscall (`in->args` filled by the
 * caller). */
static __always_inline void sc_store(struct sc_inflight *in, long id, __u64 pid_tgid)
{
	__u32 tid = (__u32)pid_tgid;

	in->start_ns = bpf_ktime_get_ns();
	in->id = id;
	bpf_map_update_elem(&inflight, &tid, in, BPF_ANY);
}

/* Complete the current thread's syscall `id` with `ret` and emit it. */
/* The entry the current thread (`tid`) stored for syscall `id`, or NULL.  A
 * stored entry of another syscall is stale (its exit was never seen) and is
 * deleted here; the caller deletes a returned entry once it has read it. */
static __always_inline struct sc_inflight *sc_entry(__u32 tid, long id)
{
	struct sc_inflight *in = bpf_map_lookup_elem(&inflight, &tid);

	if (in && in->id != id) {
		bpf_map_delete_elem(&inflight, &tid);
		return NULL;
	}
	return in;
}

static __always_inline void sc_complete(void *ctx, long id, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct syscall_event *e;
	struct sc_inflight *in;

	in = sc_entry(tid, id);
	if (!in)
		return;
	e = PT_RESERVE(struct syscall_event);
	if (e) {
		PT_FILL_HEADER(e, pid_tgid);
		PT_FILL_STACKS(e, ctx);
		e->id = id;
		e->ret = ret;
		e->latency_ns = e->ts_ns - in->start_ns;
		for (int i = 0; i < SC_NARGS; i++)
			e->args[i] = in->args[i];
		pt_submit(e);
	}
	bpf_map_delete_elem(&inflight, &tid);
}

/* measure_latency=False: emit the current thread's syscall `id` with `ret`
 * and the argument registers of `r` (a pt_regs or sc_regs_window) in one
 * program, at exit.  No entry, no pairing map. */
#define SC_EMIT_AT_EXIT(id_, ret_, r) do {                               \
	__u64 pid_tgid_ = bpf_get_current_pid_tgid();                     \
	struct syscall_event *e_;                                        \
                                                                         \
	if (!pt_wanted(pid_tgid_ >> 32))                                 \
		break;                                                   \
	e_ = PT_RESERVE(struct syscall_event);                           \
	if (!e_)                                                         \
		break;                                                   \
	PT_FILL_HEADER(e_, pid_tgid_);                                   \
	PT_FILL_STACKS(e_, ctx);                                         \
	e_->id = (id_);                                                  \
	e_->ret = (ret_);                                                \
	e_->latency_ns = 0;                                              \
	SC_EXIT_ARGS(e_->args, r);                                       \
	pt_submit(e_);                                                   \
} while (0)

/* ---- in-kernel statistics ------------------------------------------------ */

/* Latency histogram: log-linear, 4 buckets per power of two.  Bucket of ns:
 * ns itself below 8, else (bit_length(ns) << 2) | the two bits after the
 * leading one.  Python (pytracers.tracers.syscalls.stat_bucket) computes the
 * same function; latencies of 2^40 ns (18 minutes) or more share the last
 * bucket. */
#define SC_HIST_BUCKETS 168

struct sc_stat_key {
	__u32 pid;                  /* tgid */
	__u32 id;                   /* syscall number */
};

struct sc_stat {
	__u64 calls;
	__u64 errors;               /* returned -4095..-1 */
	__u64 total_ns;             /* sum of latencies */
	__u64 max_ns;
	char comm[PT_COMM_LEN];     /* the process's name at its latest call */
	__u32 hist[SC_HIST_BUCKETS];
};
PT_BTF_EXPORT(struct sc_stat, sc_stat);
PT_BTF_EXPORT(struct sc_stat_key, sc_stat_key);

/* Per-CPU, so a CPU updates its own copy without atomics; Python sums the
 * CPUs.  Preallocated: a map that allocates as keys appear cannot always do so
 * from a tracing program (measured: 19 of 3 million calls not counted in a
 * burst of new processes on 6.18), so Python sizes max_entries to a memory
 * budget instead (max_entries x sizeof(struct sc_stat) x possible CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sc_stat_key);
	__type(value, struct sc_stat);
} stats SEC(".maps");

/* Calls that completed but could not be counted: `stats` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} stats_dropped SEC(".maps");

/* A zeroed value to insert (too large for the BPF stack). */
struct sc_stat sc_stat_zero;

static __always_inline __u32 sc_bit_length(__u64 v)
{
	__u32 n = 0;

	if (v >> 32) { v >>= 32; n += 32; }
	if (v >> 16) { v >>= 16; n += 16; }
	if (v >> 8) { v >>= 8; n += 8; }
	if (v >> 4) { v >>= 4; n += 4; }
	if (v >> 2) { v >>= 2; n += 2; }
	if (v >> 1) { v >>= 1; n += 1; }
	return n + (__u32)v;
}

static __always_inline __u32 sc_hist_bucket(__u64 ns)
{
	__u32 bl, b;

	if (ns < 8)
		return (__u32)ns;
	bl = sc_bit_length(ns);
	b = (bl << 2) | (__u32)((ns >> (bl - 3)) & 3);
	return b < SC_HIST_BUCKETS ? b : SC_HIST_BUCKETS - 1;
}

/* Add the current thread's completed syscall `id` (entry stored by the
 * entry program) to `stats`. */
static __always_inline void sc_stat_complete(long id, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct sc_stat_key key = {};
	struct sc_inflight *in;
	struct sc_stat *st;
	__u64 lat, b;

	in = sc_entry(tid, id);
	if (!in)
		return;
	lat = bpf_ktime_get_ns() - in->start_ns;
	bpf_map_delete_elem(&inflight, &tid);
	key.pid = pid_tgid >> 32;
	key.id = (__u32)id;
	st = bpf_map_lookup_elem(&stats, &key);
	if (!st) {
		bpf_map_update_elem(&stats, &key, &sc_stat_zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats, &key);
		if (!st) {
			pt_percpu_inc(&stats_dropped);
			return;
		}
	}
	st->calls += 1;
	if (ret < 0 && ret >= -4095)
		st->errors += 1;
	st->total_ns += lat;
	if (lat > st->max_ns)
		st->max_ns = lat;
	b = sc_hist_bucket(lat);
	/* one register for the check and the index: 5.10's verifier loses the
	 * bound when clang checks a copy */
	barrier_var(b);
	if (b < SC_HIST_BUCKETS)
		st->hist[b] += 1;
	bpf_get_current_comm(st->comm, sizeof(st->comm));
}

/* ---- tp: syscalls:sys_enter_<X> / syscalls:sys_exit_<X> ----------------- */

/* The kernel refuses to attach a tp program that reads past the end of the
 * tracepoint's record (EACCES), and a sys_enter_<X> record holds only X's own
 * arguments: one program per arity, sc_tp_enter<N> for a syscall of N
 * arguments (the fields after __syscall_nr in its format file). */
static __always_inline int sc_tp_enter(struct sc_tp_enter_args *ctx, const int nargs)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sc_inflight in;

	if (!pt_wanted(pid_tgid >> 32))
		return 0;
	for (int i = 0; i < SC_NARGS; i++)
		in.args[i] = i < nargs ? ctx->args[i] : 0;
	sc_store(&in, ctx->nr, pid_tgid);
	return 0;
}

#define SC_TP_ENTER(n)                                       \
SEC("tp")                                                    \
int sc_tp_enter##n(struct sc_tp_enter_args *ctx)             \
{                                                            \
	return sc_tp_enter(ctx, n);                          \
}

SC_TP_ENTER(0)
SC_TP_ENTER(1)
SC_TP_ENTER(2)
SC_TP_ENTER(3)
SC_TP_ENTER(4)
SC_TP_ENTER(5)
SC_TP_ENTER(6)

SEC("tp")
int sc_tp_exit(struct sc_tp_exit_args *ctx)
{
	sc_complete(ctx, ctx->nr, ctx->ret);
	return 0;
}

/* The user registers of the current task (5.15+: bpf_task_pt_regs). */
SEC("tp")
int sc_tp_exit_regs(struct sc_tp_exit_args *ctx)
{
	struct sc_pt_regs *regs = (struct sc_pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	SC_EMIT_AT_EXIT(ctx->nr, ctx->ret, *regs);
	return 0;
}

SEC("tp")
int sc_tp_stat_exit(struct sc_tp_exit_args *ctx)
{
	sc_stat_complete(ctx->nr, ctx->ret);
	return 0;
}

/* ---- raw_tp: raw sys_enter(regs, id) / sys_exit(regs, ret) -------------- */

SEC("raw_tp/sys_enter")
int sc_raw_enter(struct sc_raw_tp_args *ctx)
{
	struct sc_pt_regs *regs = (struct sc_pt_regs *)ctx->args[0];
	long id = (long)ctx->args[1];
	struct sc_regs_window w;
	struct sc_inflight in;
	__u64 pid_tgid;

	if (!sc_enter_wanted(id, &pid_tgid))
		return 0;
	if (SC_WINDOW_READ(w, regs, false))
		return 0;
	SC_ENTRY_ARGS(in.args, w);
	sc_store(&in, id, pid_tgid);
	return 0;
}

/* The raw sys_exit's syscall number (of the saved registers) in *id; false
 * when it cannot be read or the id filter drops it. */
static __always_inline bool sc_raw_exit_wanted(struct sc_raw_tp_args *ctx, long *id)
{
	struct sc_pt_regs *regs = (struct sc_pt_regs *)ctx->args[0];

#if defined(bpf_target_x86)
	if (bpf_probe_read_kernel(id, sizeof(*id), &regs->orig_ax))
		return false;
#else
	__s32 nr;

	if (bpf_probe_read_kernel(&nr, sizeof(nr), &regs->syscallno))
		return false;
	*id = nr;
#endif
	return sc_id_wanted(*id);
}

SEC("raw_tp/sys_exit")
int sc_raw_exit(struct sc_raw_tp_args *ctx)
{
	long id;

	if (sc_raw_exit_wanted(ctx, &id))
		sc_complete(ctx, id, (long)ctx->args[1]);
	return 0;
}

SEC("raw_tp/sys_exit")
int sc_raw_stat_exit(struct sc_raw_tp_args *ctx)
{
	long id;

	if (sc_raw_exit_wanted(ctx, &id))
		sc_stat_complete(id, (long)ctx->args[1]);
	return 0;
}

SEC("raw_tp/sys_exit")
int sc_raw_exit_regs(struct sc_raw_tp_args *ctx)
{
	struct sc_pt_regs *regs = (struct sc_pt_regs *)ctx->args[0];
	struct sc_regs_window w;

	if (SC_WINDOW_READ(w, regs, true))
		return 0;
	if (!sc_id_wanted(SC_REGS_ID(w)))
		return 0;
	SC_EMIT_AT_EXIT(SC_REGS_ID(w), (long)ctx->args[1], w);
	return 0;
}

/* ---- tp_btf: the same tracepoints, typed -------------------------------- */

SEC("tp_btf/sys_enter")
int BPF_PROG(sc_btf_enter, struct sc_pt_regs *regs, long id)
{
	struct sc_inflight in;
	__u64 pid_tgid;

	if (!sc_enter_wanted(id, &pid_tgid))
		return 0;
	SC_ENTRY_ARGS(in.args, *regs);
	sc_store(&in, id, pid_tgid);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sc_btf_exit, struct sc_pt_regs *regs, long ret)
{
	long id = SC_REGS_ID(*regs);

	if (sc_id_wanted(id))
		sc_complete(ctx, id, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sc_btf_stat_exit, struct sc_pt_regs *regs, long ret)
{
	long id = SC_REGS_ID(*regs);

	if (sc_id_wanted(id))
		sc_stat_complete(id, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sc_btf_exit_regs, struct sc_pt_regs *regs, long ret)
{
	long id = SC_REGS_ID(*regs);

	if (!sc_id_wanted(id))
		return 0;
	SC_EMIT_AT_EXIT(id, ret, *regs);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
