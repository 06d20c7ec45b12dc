/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by the function tracers (kprobe.bpf.c, fentry.bpf.c): the event and
 * the per-thread stack of calls in flight that pairs an entry with its return.
 *
 * Pairing (recursion).  `inflight` maps a tid to a small circular stack of
 * FN_MAX_DEPTH frames.  An entry pushes a frame; when the stack is full the
 * oldest frame is overwritten.  A return pops the newest frame (with
 * `match_ip`, the newest frame of the same function, dropping frames above it
 * whose returns were missed).  So recursion and nested traced functions pair
 * correctly up to FN_MAX_DEPTH levels; deeper returns, and returns whose
 * entry was not seen, are reported without args and latency (no
 * FN_HAS_ARGS / FN_HAS_LATENCY).  An entry whose return is never seen (a
 * kretprobe out of instances, a thread that died inside the function) leaves
 * a frame below the live ones that is later overwritten, or evicted with the
 * thread's slot: the map is an LRU hash.
 */
#ifndef PYTRACERS_FUNC_EVENT_H
#define PYTRACERS_FUNC_EVENT_H

#include "pytracers.h"

#define FN_NARGS 6

/* A `char *` argument read as a string.  An object that defines
 * FN_STR_READ(dst, size, ptr) (a bpf_probe_read_*_str helper, or
 * fn_read_any_str below) gets a `str` field at the end of its func_event and
 * cfg_str_arg: 1 + the index of the argument fn_emit reads into it, at most
 * FN_STR_LEN bytes with the NUL (0: none, str is empty).  The string is read
 * when the record is emitted (entry records: at entry; paired records: at the
 * return, through the pointer saved at entry).  Its own BTF tells Python the
 * layout. */
#define FN_STR_LEN 64
#ifdef FN_STR_READ
#define FN_EVENT_EXTRA char str[FN_STR_LEN];
#else
#define FN_EVENT_EXTRA
#endif

/* func_event.flags */
#define FN_ENTRY        1   /* emitted at function entry */
#define FN_RETURN       2   /* emitted at function return */
#define FN_HAS_ARGS     4   /* args[] are valid */
#define FN_HAS_RET      8   /* ret is valid */
#define FN_HAS_LATENCY 16   /* latency_ns is valid (the entry was seen) */

struct func_event {
	PT_EVENT_HEADER;
	__u64 ip;                   /* function address; 0 if unknown */
	__u64 args[FN_NARGS];
	__s64 ret;
	__u64 latency_ns;           /* entry to return */
	__u32 flags;                /* FN_* */
	__u32 _pad;
	FN_EVENT_EXTRA
};
PT_BTF_EXPORT(struct func_event, func_event);

/* 1: also emit a separate FN_ENTRY event at each entry. */
const volatile __u32 cfg_emit_entry = 0;

/* A kernel function's `char *` argument may point to kernel memory or, for a
 * `const char __user *` (BTF does not say which on most kernels), to the
 * calling process's memory: try the kernel read, then the user one (each
 * refuses the other's addresses on x86-64 and arm64, and zeroes dst when it
 * fails).  Both helpers exist from 5.5. */
static __always_inline long fn_read_any_str(char *dst, __u32 size, const void *ptr)
{
	long n = bpf_probe_read_kernel_str(dst, size, ptr);

	if (n < 0)
		n = bpf_probe_read_user_str(dst, size, ptr);
	return n;
}

#ifdef FN_STR_READ
const volatile __u32 cfg_str_arg = 0;

static __always_inline void fn_fill_str(char *str, const __u64 *args)
{
	__u32 i = cfg_str_arg - 1;

	str[0] = 0;
	if (!cfg_str_arg || !args || i >= FN_NARGS)
		return;
	FN_STR_READ(str, FN_STR_LEN, (const void *)args[i]);
}
#endif

#define FN_MAX_DEPTH 4      /* a power of two */
#define FN_DEPTH_MASK (FN_MAX_DEPTH - 1)

struct fn_frame {
	__u64 ip;
	__u64 start_ns;
	__u64 args[FN_NARGS];
};

struct fn_stack {
	__u32 top;                  /* index of the newest frame */
	__u32 count;                /* live frames, at most FN_MAX_DEPTH */
	struct fn_frame frames[FN_MAX_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);                      /* tid */
	__type(value, struct fn_stack);
} inflight SEC(".maps");

static const struct fn_stack fn_stack_empty;

/* Push a frame for the current thread; the caller fills it in. */
static __always_inline struct fn_frame *fn_push(__u32 tid)
{
	struct fn_stack *st = bpf_map_lookup_elem(&inflight, &tid);
	__u32 top;

	if (!st) {
		bpf_map_update_elem(&inflight, &tid, &fn_stack_empty, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&inflight, &tid);
		if (!st)
			return NULL;
	}
	top = (st->top + 1) & FN_DEPTH_MASK;
	st->top = top;
	if (st->count < FN_MAX_DEPTH)
		st->count++;
	return &st->frames[top];
}

/* Pop the current thread's frame for a return into *out.  With match_ip,
 * the newest frame whose ip equals `ip`; otherwise the newest frame. */
static __always_inline bool fn_pop(__u32 tid, __u64 ip, bool match_ip, struct fn_frame *out)
{
	struct fn_stack *st = bpf_map_lookup_elem(&inflight, &tid);
	__u32 top, count, skip = 0, idx;

	if (!st)
		return false;
	top = st->top;
	count = st->count;
	if (!count)
		return false;
	if (match_ip) {
		for (skip = 0; skip < FN_MAX_DEPTH; skip++) {
			if (skip >= count)
				return false;
			if (st->frames[(top - skip) & FN_DEPTH_MASK].ip == ip)
				break;
		}
		if (skip >= FN_MAX_DEPTH)
			return false;
	}
	idx = (top - skip) & FN_DEPTH_MASK;
	__builtin_memcpy(out, &st->frames[idx], sizeof(*out));
	count -= skip + 1;
	if (!count) {
		bpf_map_delete_elem(&inflight, &tid);
	} else {
		st->top = (idx - 1) & FN_DEPTH_MASK;
		st->count = count;
	}
	return true;
}

/* Emit one event.  `args` may be NULL (no FN_HAS_ARGS); `start_ns` 0 means
 * no latency. */
static __always_inline void fn_emit(void *ctx, __u64 pid_tgid, __u32 flags, __u64 ip,
				    const __u64 *args, __s64 ret, __u64 start_ns)
{
	struct func_event *e = PT_RESERVE(struct func_event);

	if (!e)
		return;
	PT_FILL_HEADER(e, pid_tgid);
	PT_FILL_STACKS(e, ctx);
	e->ip = ip;
	for (int i = 0; i < FN_NARGS; i++)
		e->args[i] = args ? args[i] : 0;
	e->ret = ret;
	e->latency_ns = start_ns ? e->ts_ns - start_ns : 0;
	if (args)
		flags |= FN_HAS_ARGS;
	if (start_ns)
		flags |= FN_HAS_LATENCY;
	e->flags = flags;
	e->_pad = 0;
#ifdef FN_STR_READ
	fn_fill_str(e->str, args);
#endif
	pt_submit(e);
}

#endif /* PYTRACERS_FUNC_EVENT_H */
