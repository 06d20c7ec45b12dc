/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Test object: ring records written the way real libbpf tools write them.
 * The event structs are reached only through the pointer that
 * bpf_ringbuf_reserve() returns, so clang leaves them out of .BTF: Python must
 * be given their layout (C text, a numpy dtype or a ctypes Structure).
 * `struct event` has fields named like tuple methods (count, index); `struct
 * blob` (ring `blobs`) is variable-length (a length and a flexible array).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct event {
	__u32 pid;
	__u32 count;
	__u64 index;
	char comm[16];
};

struct blob {
	__u32 len;
	__u32 kind;
	__u8 data[];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} blobs SEC(".maps");

int my_pid = 0;          /* .bss: set by the reader (before or after load) */
__u32 seen = 0;          /* .bss counter */

SEC("tp/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	struct event *e;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 n, i;
	__u8 buf[40];

	if (pid != my_pid)
		return 0;
	seen += 1;
	n = seen;
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = pid;
	e->count = n;
	e->index = ctx->args[0];
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);

	/* A variable-length record: header + (getpgid's argument & 31) bytes. */
	n = ctx->args[0] & 31;
	__builtin_memset(buf, 0, sizeof(buf));
	((struct blob *)buf)->len = n;
	((struct blob *)buf)->kind = 7;
	for (i = 0; i < 32; i++)
		buf[8 + i] = (__u8)(i + 1);
	bpf_ringbuf_output(&blobs, buf, 8 + (n & 31), 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
