// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Programs whose sections say where they attach (libbpf auto-attaches them)
 * and programs whose sections do not (a bare "raw_tp", a perf_event program,
 * a cgroup program): attach-all attaches the first and reports the others.
 * Every program but on_sock_create counts only the process whose pid Python
 * sets before load, each in its own slot of `hits`.
 * The lsm and iter programs are off by default ("?"): not every kernel has
 * the BPF LSM or lets it load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 cfg_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 slot)
{
	__u64 *v;

	if ((bpf_get_current_pid_tgid() >> 32) != cfg_pid)
		return;
	v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tp/syscalls/sys_enter_getppid")
int on_tp(void *ctx)
{
	hit(0);
	return 0;
}

SEC("raw_tp/sys_enter")
int on_raw_tp(void *ctx)
{
	hit(1);
	return 0;
}

SEC("tp_btf/sys_enter")
int on_tp_btf(void *ctx)
{
	hit(2);
	return 0;
}

SEC("raw_tp")
int no_target(void *ctx)
{
	hit(3);
	return 0;
}

SEC("perf_event")
int on_sample(void *ctx)
{
	hit(4);
	return 0;
}

/* Counts every socket created in the cgroup it is attached to (any process:
 * the test's cgroup holds only its own child). */
SEC("cgroup/sock_create")
int on_sock_create(struct bpf_sock *sk)
{
	__u32 slot = 5;
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 1;
}

SEC("?lsm/file_open")
int BPF_PROG(on_file_open, struct file *file)
{
	hit(6);
	return 0;
}

SEC("?iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->tgid == cfg_pid && task->pid == cfg_pid)
		BPF_SEQ_PRINTF(ctx->meta->seq, "pid %d\n", task->tgid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
