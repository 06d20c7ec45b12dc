// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Feature probes: one trivial program per probe kind.  Python loads them one
 * at a time (autoload on for exactly one) and, where the kind needs it,
 * attaches it, to learn what this kernel supports.  Every program returns 0
 * and has no effect.  Each probe kind names its program here as its
 * `feature_program` in pytracers/kinds.py.
 *
 *   probe_tp            tp           attach to any tracepoint
 *   probe_raw_tp        raw_tp       attach to any raw tracepoint
 *   probe_tp_btf        tp_btf/sys_enter
 *   probe_kprobe        kprobe       attach to a function
 *   probe_kretprobe     kretprobe
 *   probe_kprobe_multi  kprobe.multi (5.18+)
 *   probe_fentry        fentry       set_attach_target() before load
 *   probe_fexit         fexit        same
 *   probe_fmod_ret      fmod_ret     same (a modifiable target)
 *   probe_uprobe        uprobe       attach to a user-space function (libc's getpid)
 *   probe_uretprobe     uretprobe
 *   probe_ringbuf       raw_tp using the ring buffer `probe_rb` (5.8+)
 *   probe_cookie        kprobe calling bpf_get_attach_cookie (5.15+)
 *   probe_usdt          usdt         bpf_program__attach_usdt to a USDT probe
 *   probe_perf_event    perf_event   attach to a cpu-clock event on one CPU (4.9+)
 *   probe_stack         perf_event calling bpf_get_stack (4.18+; kernel + user)
 *
 * `probe_rb` is used by probe_ringbuf alone, and the two maps of usdt.bpf.h
 * (`__bpf_usdt_specs`, `__bpf_usdt_ip_to_spec_id`, which libbpf fills when it
 * attaches a USDT probe) by probe_usdt alone: when probing anything else,
 * turn their autocreate off, so that a kernel without ring buffers does not
 * fail the load for an unrelated reason.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

SEC("tp")
int probe_tp(void *ctx)
{
	return 0;
}

SEC("raw_tp")
int probe_raw_tp(void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int probe_tp_btf(void *ctx)
{
	return 0;
}

SEC("kprobe")
int probe_kprobe(void *ctx)
{
	return 0;
}

SEC("kretprobe")
int probe_kretprobe(void *ctx)
{
	return 0;
}

SEC("uprobe")
int probe_uprobe(void *ctx)
{
	return 0;
}

SEC("uretprobe")
int probe_uretprobe(void *ctx)
{
	return 0;
}

SEC("kprobe.multi")
int probe_kprobe_multi(void *ctx)
{
	return 0;
}

SEC("fentry")
int probe_fentry(void *ctx)
{
	return 0;
}

SEC("fexit")
int probe_fexit(void *ctx)
{
	return 0;
}

SEC("fmod_ret")
int probe_fmod_ret(void *ctx)
{
	return 0;
}

/* Reserve and discard: exercises the ring buffer helpers without output. */
SEC("raw_tp")
int probe_ringbuf(void *ctx)
{
	void *p = bpf_ringbuf_reserve(&probe_rb, 8, 0);

	if (p)
		bpf_ringbuf_discard(p, 0);
	return 0;
}

SEC("kprobe")
int probe_cookie(void *ctx)
{
	bpf_get_attach_cookie(ctx);
	return 0;
}

SEC("usdt")
int probe_usdt(void *ctx)
{
	return 0;
}

SEC("perf_event")
int probe_perf_event(void *ctx)
{
	return 0;
}

SEC("perf_event")
int probe_stack(void *ctx)
{
	__u64 ips[8];

	bpf_get_stack(ctx, ips, sizeof(ips), 0);
	bpf_get_stack(ctx, ips, sizeof(ips), BPF_F_USER_STACK);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
