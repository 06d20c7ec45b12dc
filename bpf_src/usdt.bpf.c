// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * USDT tracer: one program, attached by libbpf's bpf_program__attach_usdt()
 * to any number of USDT probes (statically defined tracepoints in user
 * programs: the .note.stapsdt notes of <sys/sdt.h>).  libbpf's usdt.bpf.h
 * reads each argument as its note describes it (a register, a constant, or
 * memory at register+offset), sign- or zero-extended from its size.
 *
 * The USDT cookie (bpf_usdt_cookie(): set by Python at attach time, one per
 * attached probe) says what to do with the arguments:
 *
 *   bits  0..11  three 4-bit fields, one per string slot: 1 + the index of
 *                the argument to read as a NUL-terminated user string into
 *                strs[slot] (0: the slot is unused)
 *   bits 16..63  the caller's own id for the probe (which probe fired)
 *
 * One record per hit (usdt_event): every argument (up to 12, as libbpf reads
 * at most that many) and up to three strings of at most USDT_STR_LEN - 1
 * bytes each, read with bpf_probe_read_user_str; str_len[slot] is what that
 * helper returned (the length with the NUL, or a negative errno: the
 * argument did not point to readable memory).
 */
#include "pytracers.h"
#include <bpf/usdt.bpf.h>

#define USDT_MAX_ARGS 12
#define USDT_MAX_STRS 3
#define USDT_STR_LEN 256

struct usdt_event {
	PT_EVENT_HEADER;
	__u64 cookie;             /* bpf_usdt_cookie(): the probe's id and string slots */
	__s32 nargs;              /* bpf_usdt_arg_cnt(): arguments the note declares */
	__s32 str_len[USDT_MAX_STRS];
	__u64 args[USDT_MAX_ARGS];
	char strs[USDT_MAX_STRS][USDT_STR_LEN];
};
PT_BTF_EXPORT(struct usdt_event, usdt_event);

SEC("usdt")
int usdt_probe(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct usdt_event *e;
	long cookie, v;
	int n;

	if (!pt_wanted(id >> 32))
		return 0;
	e = PT_RESERVE(struct usdt_event);
	if (!e)
		return 0;
	PT_FILL_HEADER(e, id);
	cookie = bpf_usdt_cookie(ctx);
	n = bpf_usdt_arg_cnt(ctx);
	e->cookie = cookie;
	e->nargs = n;
#pragma unroll
	for (int i = 0; i < USDT_MAX_ARGS; i++) {
		v = 0;
		if (i < n && bpf_usdt_arg(ctx, i, &v))
			v = 0;
		e->args[i] = v;
	}
#pragma unroll
	for (int s = 0; s < USDT_MAX_STRS; s++) {
		__u32 arg = (cookie >> (4 * s)) & 0xf;

		e->strs[s][0] = 0;
		e->str_len[s] = 0;
		if (arg == 0 || arg > USDT_MAX_ARGS || (int)arg > n)
			continue;
		/* read the argument again rather than index e->args with a
		 * variable: 5.10's verifier loses the bound of that index */
		v = 0;
		if (bpf_usdt_arg(ctx, arg - 1, &v))
			continue;
		e->str_len[s] = bpf_probe_read_user_str(e->strs[s], USDT_STR_LEN,
							(const void *)v);
	}
	pt_submit(e);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
