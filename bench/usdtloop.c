/* bench/run's usdt section: a USDT probe in a tight loop.
 *
 *   usdtloop N    hit the probe ptbench:tick (two arguments: the loop index,
 *                 a char * to a short string) N times; print the CPU ns per
 *                 iteration (user + system time of this process: the probe's
 *                 trap and the BPF programs included) and the wall ns.
 *
 * The probe has no semaphore: the arguments are always in registers, the
 * site is a nop until a uprobe is set on it.
 */
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv)
{
	static const char name[] = "usdt-bench";
	struct timespec a, b;
	double c0, c1;
	long n;

	if (argc < 2)
		return 2;
	n = atol(argv[1]);
	c0 = cpu_ns();
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		DTRACE_PROBE2(ptbench, tick, i, name);
		__asm__ volatile("" ::: "memory");
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	c1 = cpu_ns();
	printf("%.2f %.2f\n", (c1 - c0) / (n ? n : 1),
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (n ? n : 1));
	return 0;
}
