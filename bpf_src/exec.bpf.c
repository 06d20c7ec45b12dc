// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Tracepoint tracer (tp): process executions.
 *
 * syscalls:sys_enter_execve records who asked to run what; the matching
 * syscalls:sys_exit_execve (same thread) completes the record with the return
 * value -- 0 and the new comm on success, -errno on failure -- and emits it.
 *
 * The command line is copied at enter (after a successful exec the caller's
 * argv is gone) into argbuf, packed: each argument followed by its NUL, at
 * most EXEC_MAX_ARGS arguments and EXEC_ARGBUF_SIZE bytes in all.  When it
 * does not fit -- more arguments, or an argument cut by the space left, or
 * an argument that could not be read -- args_truncated is set; a cut
 * argument is kept (NUL-ended) as the last one.  Only the used part of
 * argbuf goes into the ring: a record is offsetof(argbuf) + argbuf_len bytes.
 *
 * Bounds: 2048 bytes hold a whole typical command line (shell commands,
 * package scripts, most compiler invocations); the pending map keeps one
 * whole event per thread inside execve, preallocated, so its memory is
 * max_entries * sizeof(struct exec_event) (2048 * 2368 bytes, 4.6 MiB, less
 * than the 4-argument record took at 10240 entries).  32 arguments bound the
 * copy loop, which the verifier walks iteration by iteration (5.10 checks it
 * in well under its limit); with 2048 bytes that is 64 bytes per argument on
 * average, and BCC's execsnoop shows 20 by default.
 */
#include "pytracers.h"

#define EXEC_MAX_ARGS 32
#define EXEC_ARGBUF_SIZE 2048        /* a power of two: offsets are clamped by a mask */

struct exec_event {
	PT_EVENT_HEADER;
	__u32 ppid;
	__u32 uid;
	__s32 ret;
	__u32 argc;                 /* arguments in argbuf (a cut one included) */
	char filename[256];
	__u32 argbuf_len;           /* bytes of argbuf used, each argument's NUL included */
	__u32 args_truncated;       /* 1: the command line was longer than argbuf holds */
	__u8 argbuf[EXEC_ARGBUF_SIZE];  /* argv[0] NUL argv[1] NUL ... */
};

/* One event per thread between sys_enter_execve and sys_exit_execve.  When it
 * is full the exec is not traced and is counted in `lost`. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, __u32);                  /* tid */
	__type(value, struct exec_event);
} pending SEC(".maps");

/* The event is built here: it is too large for the BPF stack.  An argument
 * is read at a variable offset into argbuf with the space left as its size;
 * the verifier bounds the offset and the size separately (each up to
 * EXEC_ARGBUF_SIZE), so `slack` gives it room for their sum.  Nothing is
 * ever written there: offset + size never passes the end of argbuf. */
struct exec_scratch {
	struct exec_event ev;
	__u8 slack[EXEC_ARGBUF_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} scratch SEC(".maps");

/* Copy argv[] into e->argbuf, packed; set argc, argbuf_len and args_truncated. */
static __always_inline void read_args(struct exec_event *e, const char *const *argv)
{
	__u32 off = 0, argc = 0, cut = 0;
	const char *p;
	long n, ret;
	char last;

	for (int i = 0; i <= EXEC_MAX_ARGS; i++) {
		p = NULL;
		if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) || !p)
			break;                          /* the end of argv */
		if (i == EXEC_MAX_ARGS || off >= EXEC_ARGBUF_SIZE) {
			cut = 1;                        /* more than the record holds */
			break;
		}
		/* clang knows off < EXEC_ARGBUF_SIZE here and would drop the mask;
		 * the verifier needs it to bound the offset */
		asm volatile("" : "+r"(off));
		off &= EXEC_ARGBUF_SIZE - 1;
		n = EXEC_ARGBUF_SIZE - off;             /* 1 .. EXEC_ARGBUF_SIZE */
		ret = bpf_probe_read_user_str(&e->argbuf[off], n, p);
		if (ret < 0) {
			cut = 1;                        /* unreadable: the line stops here */
			break;
		}
		if (ret == 0) {
			/* older kernels (5.10 among them) return 0 for an
			 * empty string and write no NUL */
			e->argbuf[off] = 0;
			ret = 1;
		}
		argc++;
		if (ret == n) {
			/* the space is full: the argument fit exactly if its NUL was
			 * at p[n - 1], else it was cut (its copy is NUL-ended) */
			last = 1;
			bpf_probe_read_user(&last, 1, p + n - 1);
			if (last)
				cut = 1;
		}
		off += ret;
		if (cut)
			break;
	}
	e->argc = argc;
	e->argbuf_len = off;
	e->args_truncated = cut;
}

SEC("tp/syscalls/sys_enter_execve")
int exec_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, zero = 0;
	const char *const *argv = (const char *const *)ctx->args[1];
	struct task_struct *task;
	struct exec_scratch *s;
	struct exec_event *e;

	if (!pt_wanted(id >> 32))
		return 0;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	e = &s->ev;
	PT_FILL_HEADER(e, id);
	/* the caller of execve: taken here, before a successful exec replaces
	 * the process's image (and its user stack) */
	PT_FILL_STACKS(e, ctx);
	task = (struct task_struct *)bpf_get_current_task();
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->ret = 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[0]);
	e->argc = e->argbuf_len = e->args_truncated = 0;
	if (argv)
		read_args(e, argv);
	if (bpf_map_update_elem(&pending, &tid, e, BPF_ANY))
		pt_count_lost();                /* too many execs in flight */
	return 0;
}

SEC("tp/syscalls/sys_exit_execve")
int exec_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, len;
	struct exec_event *e;

	e = bpf_map_lookup_elem(&pending, &tid);
	if (!e)
		return 0;
	e->ret = (__s32)ctx->ret;
	/* after a successful exec the task runs the new program; older kernels
	 * copy the name without padding, so clear it first */
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	len = e->argbuf_len;
	asm volatile("" : "+r"(len));
	if (len > EXEC_ARGBUF_SIZE)
		len = EXEC_ARGBUF_SIZE;
	/* only the used part of argbuf: a record of 320 + argbuf_len bytes */
	if (bpf_ringbuf_output(&events, e, offsetof(struct exec_event, argbuf) + len,
			       pt_wakeup_flags()))
		pt_count_lost();
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
