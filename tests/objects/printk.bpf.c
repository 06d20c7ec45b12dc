// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * bpf_printk, as tools use it for debugging: one line in tracefs' trace_pipe
 * per getppid() of the process whose pid Python sets before load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 cfg_pid = 0;
const volatile __u32 cfg_tag = 0;

SEC("tp/syscalls/sys_enter_getppid")
int say_hello(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (pid != cfg_pid)
		return 0;
	bpf_printk("pytracers-printk tag=%u pid=%u", cfg_tag, pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
