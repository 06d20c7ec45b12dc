// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Process lifecycle tracer (tp_btf): exec, fork, exit.
 *
 * The sched_process_* tracepoints hand over kernel structs with their BTF
 * types, so fields are read directly (CO-RE relocated) rather than through
 * bpf_probe_read.  The header (pid, tid, comm) is always the current task:
 * the exec'ing task, the forking parent, the exiting task.
 *
 *   exec  ppid = real parent's tgid, child_pid = the tid that called exec
 *         (old_pid: differs from tid only when a non-leader thread exec'd),
 *         lifetime_ns = age of the task, filename = the exec'd path
 *         (bprm->filename).
 *   fork  ppid = the new task's real parent's tgid (the forking process, or
 *         its parent with CLONE_PARENT), child_pid = the new task's pid (tid).
 *   exit  exit_code = task->exit_code as the kernel keeps it (wait(2)
 *         status encoding: code << 8 | signal), lifetime_ns = age of the task.
 *
 * Stacks (cfg_stacks, stack= in Python) are the current task's: the exec'ing
 * task's (its user stack already the new program's, at its entry point), the
 * forking parent's, the exiting task's.
 *
 * By default, fork events are only for new processes and exit events only for
 * thread-group leaders; cfg_threads = 1 also reports new threads and every
 * thread's exit.
 */
/* vmlinux.h has a struct proc_event of its own (the proc connector's);
 * rename it out of the way of ours. */
#define proc_event vmlinux_proc_event
#include "pytracers.h"
#undef proc_event

enum proc_event_type {
	PROC_EXEC = 1,
	PROC_FORK = 2,
	PROC_EXIT = 3,
};

struct proc_event {
	PT_EVENT_HEADER;
	__u32 type;                 /* enum proc_event_type */
	__u32 ppid;
	__u32 child_pid;
	__s32 exit_code;
	__u64 lifetime_ns;
	char filename[128];
};
PT_BTF_EXPORT(struct proc_event, proc_event);

const volatile __u32 cfg_threads = 0;

static __always_inline struct proc_event *proc_start(void *ctx, enum proc_event_type type,
						     struct task_struct *t)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct proc_event *e;

	if (!pt_wanted(pid_tgid >> 32))
		return NULL;
	e = PT_RESERVE(struct proc_event);
	if (!e)
		return NULL;
	PT_FILL_HEADER(e, pid_tgid);
	PT_FILL_STACKS(e, ctx);
	e->type = type;
	e->ppid = t->real_parent->tgid;
	e->child_pid = 0;
	e->exit_code = 0;
	e->lifetime_ns = 0;
	e->filename[0] = 0;
	return e;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(proc_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct proc_event *e = proc_start(ctx, PROC_EXEC, p);

	if (!e)
		return 0;
	e->child_pid = old_pid;
	e->lifetime_ns = e->ts_ns - p->start_time;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	pt_submit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(proc_fork, struct task_struct *parent, struct task_struct *child)
{
	struct proc_event *e;

	if (!cfg_threads && child->pid != child->tgid)
		return 0;
	e = proc_start(ctx, PROC_FORK, child);
	if (!e)
		return 0;
	e->child_pid = child->pid;
	pt_submit(e);
	return 0;
}

/* Newer kernels pass a second argument (group_dead); it is not read, so the
 * program verifies against both signatures. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(proc_exit, struct task_struct *p)
{
	struct proc_event *e;

	if (!cfg_threads && p->pid != p->tgid)
		return 0;
	e = proc_start(ctx, PROC_EXIT, p);
	if (!e)
		return 0;
	e->exit_code = p->exit_code;
	e->lifetime_ns = e->ts_ns - p->start_time;
	pt_submit(e);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
