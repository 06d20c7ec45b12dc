// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Tracepoint tracer (tp): process executions.
 *
 * syscalls:sys_enter_execve records who asked to run what; the matching
 * syscalls:sys_exit_execve (same thread) completes the record with the return
 * value -- 0 and the new comm on success, -errno on failure -- and emits it.
 */
#include "pytracers.h"

#define EXEC_ARGS 4
#define EXEC_ARG_LEN 64

struct exec_event {
	PT_EVENT_HEADER;
	__u32 ppid;
	__u32 uid;
	__s32 ret;
	__u32 argc;                 /* arguments seen, up to EXEC_ARGS + 1 */
	char filename[256];
	char arg0[EXEC_ARG_LEN];    /* argv[0..3] */
	char arg1[EXEC_ARG_LEN];
	char arg2[EXEC_ARG_LEN];
	char arg3[EXEC_ARG_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);                  /* tid */
	__type(value, struct exec_event);
} pending SEC(".maps");

/* zeroed template: the event is too large for the BPF stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_event);
} scratch SEC(".maps");

static __always_inline void read_arg(char *dst, const char *const *argv, int i, __u32 *argc)
{
	const char *p = NULL;

	if (*argc != (__u32)i)      /* an earlier argument was the terminating NULL */
		return;
	if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) || !p)
		return;
	bpf_probe_read_user_str(dst, EXEC_ARG_LEN, p);
	*argc = i + 1;
}

SEC("tp/syscalls/sys_enter_execve")
int exec_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, zero = 0;
	const char *const *argv = (const char *const *)ctx->args[1];
	struct task_struct *task;
	struct exec_event *e;

	if (!pt_wanted(id >> 32))
		return 0;
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	PT_FILL_HEADER(e, id);
	task = (struct task_struct *)bpf_get_current_task();
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->ret = 0;
	e->argc = 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[0]);
	if (argv) {
		read_arg(e->arg0, argv, 0, &e->argc);
		read_arg(e->arg1, argv, 1, &e->argc);
		read_arg(e->arg2, argv, 2, &e->argc);
		read_arg(e->arg3, argv, 3, &e->argc);
	}
	bpf_map_update_elem(&pending, &tid, e, BPF_ANY);
	/* clear the template for the next event on this CPU */
	e->filename[0] = e->arg0[0] = e->arg1[0] = e->arg2[0] = e->arg3[0] = 0;
	return 0;
}

SEC("tp/syscalls/sys_exit_execve")
int exec_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct exec_event *p, *e;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	e = PT_RESERVE(struct exec_event);
	if (e) {
		__builtin_memcpy(e, p, sizeof(*e));
		e->ret = (__s32)ctx->ret;
		/* after a successful exec the task runs the new program; older
		 * kernels copy the name without padding, so clear it first */
		__builtin_memset(e->comm, 0, sizeof(e->comm));
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		pt_submit(e);
	}
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
