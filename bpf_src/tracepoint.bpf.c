// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Tracepoint tracer (tp): any tracepoint, its raw record copied for Python.
 *
 * A SEC("tp") program receives the tracepoint's record as the kernel lays it
 * out (events/<category>/<name>/format: the common_* fields, then the
 * tracepoint's own, then the payloads of its __data_loc fields).  This
 * program knows none of that: after the pid/comm filters it copies cfg_copy
 * bytes of the record, from offset TP_SKIP on, into a ring record, and Python
 * decodes the fields by the format file.
 *
 * The first 8 bytes (common_type, common_flags, common_preempt_count,
 * common_pid) are not copied: before running the programs the kernel
 * overwrites them with a pointer to the traced context's pt_regs (for
 * bpf_get_stackid and friends), which would only leak a kernel address.  The
 * header's pid/tid say who ran.
 *
 * Why a copy through bpf_probe_read_kernel and not loads from ctx: the
 * verifier allows direct loads from a tp context only at constant offsets,
 * and attaching refuses a program whose loads reach past the tracepoint's
 * fixed part (EACCES); a __data_loc payload lies after it, at an offset
 * only known per record.  The helper copies any constant size.  The record
 * sits at the start of the per-CPU perf trace buffer, PERF_MAX_TRACE_SIZE
 * (2048) bytes, which also bounds the record itself, so a copy of at most
 * TP_MAX bytes from TP_SKIP on stays inside that buffer.  (The syscalls
 * category is the exception: its BPF context is a smaller struct on the
 * stack, the syscall number and arguments only; Python asks for only those.)
 *
 * cfg_copy is set by Python before load: the fixed part of the record, plus
 * room for __data_loc payloads.  It is a constant to the verifier (frozen
 * .rodata), so the ring record is reserved at exactly
 * offsetof(data) + cfg_copy bytes: a tracepoint of fixed fields costs the
 * ring only its own size, not TP_MAX.
 *
 * No CO-RE relocations: nothing here reads a kernel struct, so libbpf need
 * not load the kernel's BTF to load this object.
 */
#include "pytracers.h"

/* The first bytes of the record not copied (see above). */
#define TP_SKIP 8
/* The largest record a tracepoint hands to BPF is PERF_MAX_TRACE_SIZE
 * (2048) bytes; the copy starts TP_SKIP bytes in. */
#define TP_MAX (2048 - TP_SKIP)

struct tp_event {
	PT_EVENT_HEADER;
	__u32 size;                 /* bytes of the raw record in data (0: the copy failed) */
	__u32 _pad;
	__u8 data[TP_MAX];          /* the raw record from offset TP_SKIP on */
};
PT_BTF_EXPORT(struct tp_event, tp_event);

const volatile __u32 cfg_copy = 0;          /* bytes to copy, 1..TP_MAX */

SEC("tp")
int tp_record(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 n = cfg_copy;
	struct tp_event *e;

	if (n == 0 || n > TP_MAX)
		return 0;
	if (!pt_wanted(id >> 32))
		return 0;
	e = pt_reserve(__builtin_offsetof(struct tp_event, data) + n);
	if (!e)
		return 0;
	PT_FILL_HEADER(e, id);
	PT_FILL_STACKS(e, ctx);
	e->_pad = 0;
	e->size = bpf_probe_read_kernel(e->data, n, ctx + TP_SKIP) ? 0 : n;
	pt_submit(e);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
