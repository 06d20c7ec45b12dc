/* bench/run's uprobe section: call a traced user function in a tight loop.
 *
 *   uloop N    call pt_loop N times; print the CPU ns per call (user + system
 *              time of this process, which includes the uprobe's trap and the
 *              BPF program) and the wall ns per call
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#if defined(__GNUC__) && !defined(__clang__)
#define PT_NOIPA __attribute__((noinline, noipa))   /* no clone, no inlining */
#else
#define PT_NOIPA __attribute__((noinline))
#endif

PT_NOIPA unsigned pt_loop(unsigned i)
{
	__asm__ volatile("" ::: "memory");
	return i + 1;
}

static double cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv)
{
	struct timespec a, b;
	unsigned acc = 0;
	double c0, c1;
	long n;

	if (argc < 2)
		return 2;
	n = atol(argv[1]);
	c0 = cpu_ns();
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		acc = pt_loop(acc);
	clock_gettime(CLOCK_MONOTONIC, &b);
	c1 = cpu_ns();
	printf("%.2f %.2f\n", (c1 - c0) / n,
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return acc == (unsigned)n ? 0 : 1;
}
