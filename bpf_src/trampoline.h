/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Reading the context of trampoline programs (fentry, fexit, fmod_ret) with
 * the generic `__u64 *ctx` signature, for a target chosen at load time.
 *
 * ctx[i] is the target's i-th argument slot; fexit and fmod_ret also see the
 * return value (fmod_ret: the value returned by the previous fmod_ret
 * program, 0 if none) in slot cfg_nargs.  The verifier rejects any read of a
 * slot the target does not have, and a variable slot index.  cfg_nargs is
 * set by Python from the target's BTF prototype (the number of u64 slots its
 * arguments take); .rodata is frozen before load, so the verifier knows it
 * as a constant and never sees the reads that the tests below rule out.
 * Each read therefore uses a constant index behind its own test.
 */
#ifndef PYTRACERS_TRAMPOLINE_H
#define PYTRACERS_TRAMPOLINE_H

#include "pytracers.h"

/* Argument slots of the attach target (0..12). */
const volatile __u32 cfg_nargs = 0;
/* Bit i set: do not read argument slot i (reported as 0).  Older kernels
 * (5.10) refuse to expose some argument types to trampoline programs -- a
 * pointer to anything but a struct, void or char, e.g. vfs_read's loff_t *;
 * skipping those slots lets the program load there. */
const volatile __u32 cfg_skip_args = 0;

/* ctx[k] for a constant k.  The load is written in assembly: clang would
 * otherwise merge the loads of the branches below into one load from
 * ctx + variable offset, which the verifier refuses ("dereference of
 * modified ctx ptr"). */
#define TR_CTX(ctx, k) ({                                               \
	__u64 __v;                                                      \
	asm volatile("%0 = *(u64 *)(%1 + %2)"                           \
		     : "=r"(__v) : "r"(ctx), "i"((k) * 8));             \
	__v;                                                            \
})

/* The first min(cfg_nargs, n) argument slots into args[0..n-1], zeros for
 * the rest and for the slots in cfg_skip_args; n is a constant, at most 6. */
static __always_inline void tr_args(const __u64 *ctx, __u64 *args, const int n)
{
	__u32 nargs = cfg_nargs, skip = cfg_skip_args;

	for (int i = 0; i < n; i++)
		args[i] = 0;
#define TR_ARG(k) \
	if (n > k && nargs > k && !(skip & (1u << k))) \
		args[k] = TR_CTX(ctx, k)
	TR_ARG(0);
	TR_ARG(1);
	TR_ARG(2);
	TR_ARG(3);
	TR_ARG(4);
	TR_ARG(5);
#undef TR_ARG
}

/* ctx[cfg_nargs]: the return value slot (fexit, fmod_ret only). */
static __always_inline __u64 tr_ret(const __u64 *ctx)
{
	switch (cfg_nargs) {
	case 0: return TR_CTX(ctx, 0);
	case 1: return TR_CTX(ctx, 1);
	case 2: return TR_CTX(ctx, 2);
	case 3: return TR_CTX(ctx, 3);
	case 4: return TR_CTX(ctx, 4);
	case 5: return TR_CTX(ctx, 5);
	case 6: return TR_CTX(ctx, 6);
	case 7: return TR_CTX(ctx, 7);
	case 8: return TR_CTX(ctx, 8);
	case 9: return TR_CTX(ctx, 9);
	case 10: return TR_CTX(ctx, 10);
	case 11: return TR_CTX(ctx, 11);
	case 12: return TR_CTX(ctx, 12);
	}
	return 0;
}

#endif /* PYTRACERS_TRAMPOLINE_H */
