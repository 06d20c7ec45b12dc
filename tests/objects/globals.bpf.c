/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Test object: results kept in global variables, as many libbpf tools keep
 * them -- .bss counters and a histogram array, .data globals with initial
 * values (a number, a string, a struct), a .rodata constant.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define NSLOTS 16

struct point {
	__s32 x;
	__s32 y;
	__u64 count;
	__u64 index;
};

/* .bss */
int my_pid = 0;
__u64 calls = 0;
__u64 hist[NSLOTS] = {};
__s64 last_arg = 0;

/* .data */
__u64 step = 3;
char label[8] = "hello";
struct point origin = { .x = 1, .y = -2, .count = 5, .index = 6 };

/* .rodata */
const volatile __u32 scale = 1;

SEC("tp/syscalls/sys_enter_getpgid")
int count_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 arg = ctx->args[0];

	if (pid != my_pid)
		return 0;
	__sync_fetch_and_add(&calls, step);
	__sync_fetch_and_add(&hist[arg & (NSLOTS - 1)], scale);
	last_arg = arg;
	origin.count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
