// SPDX-License-Identifier: MIT
/*
 * The traced workload of bench/run: getpgid(2) in a tight loop.
 *
 *   sysloop count N     N calls; prints "<ns per call> <wall ns per call>":
 *                       process CPU time (user + system, where the BPF
 *                       programs run), then CLOCK_MONOTONIC
 *   sysloop rate N R    N calls at R calls per second (spinning on the clock
 *                       between calls: the CPU figure then includes the
 *                       spin; for loss at a given event rate)
 *   sysloop tick US     one call every US microseconds until stdin closes
 *                       or it is killed (the trigger of the start-up figure)
 *
 * getpgid is cheap, has a per-syscall tracepoint (syscalls:sys_enter_getpgid)
 * and nothing else on the machine calls it often.  The raw syscall is used
 * so no libc wrapper or caching sits in between.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "count")) {
		long n = atol(argv[2]);
		uint64_t w0 = clock_ns(CLOCK_MONOTONIC);
		uint64_t c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);

		for (long i = 0; i < n; i++)
			syscall(SYS_getpgid, 0);
		uint64_t c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		uint64_t w1 = clock_ns(CLOCK_MONOTONIC);
		printf("%.2f %.2f\n", (double)(c1 - c0) / (double)n, (double)(w1 - w0) / (double)n);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "rate")) {
		long n = atol(argv[2]);
		double gap = 1e9 / atof(argv[3]);
		uint64_t w0 = clock_ns(CLOCK_MONOTONIC);
		uint64_t c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);

		for (long i = 0; i < n; i++) {
			uint64_t due = w0 + (uint64_t)(gap * (double)i);

			while (clock_ns(CLOCK_MONOTONIC) < due)
				;
			syscall(SYS_getpgid, 0);
		}
		uint64_t c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		uint64_t w1 = clock_ns(CLOCK_MONOTONIC);
		printf("%.2f %.2f\n", (double)(c1 - c0) / (double)n, (double)(w1 - w0) / (double)n);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "tick")) {
		int us = atoi(argv[2]);
		struct pollfd in = { .fd = 0, .events = POLLIN };

		for (;;) {
			syscall(SYS_getpgid, 0);
			/* wait US microseconds, or stop when the parent closes stdin */
			struct timespec ts = { 0, (long)us * 1000 };
			if (ppoll(&in, 1, &ts, NULL) > 0)
				return 0;
		}
	}
	fprintf(stderr, "usage: %s count N | rate N PER_SECOND | tick MICROSECONDS\n", argv[0]);
	return 2;
}
