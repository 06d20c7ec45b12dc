/* A program whose function calls the uprobe tests control exactly.
 *
 *   ufunc calls N      wait for a line on stdin, then call pt_add and pt_neg
 *                      N times each, and libc's labs N times (through a
 *                      volatile pointer: a real call into libc); print "done"
 *                      and wait for another line before exiting
 *   ufunc loop N       call pt_loop N times; print the nanoseconds per call
 *   ufunc late LIB N   wait for a line, dlopen LIB, call its pt_late N times
 *
 * Built by the tests with gcc -O1 -g -fno-omit-frame-pointer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__attribute__((noinline)) int pt_add(int a, long b, unsigned char c, const char *s)
{
	__asm__ volatile("" ::: "memory");
	return a + (int)b + c + (s ? s[0] : 0);
}

__attribute__((noinline)) long pt_neg(long x)
{
	__asm__ volatile("" ::: "memory");
	return -x;
}

__attribute__((noinline)) unsigned pt_loop(unsigned i)
{
	__asm__ volatile("" ::: "memory");
	return i + 1;
}

static void wait_line(void)
{
	char buf[64];

	if (!fgets(buf, sizeof(buf), stdin))
		exit(3);
}

int main(int argc, char **argv)
{
	long (*volatile labs_p)(long) = labs;
	long n;

	if (argc < 3)
		return 2;
	if (!strcmp(argv[1], "calls")) {
		n = atol(argv[2]);
		printf("ready\n");
		fflush(stdout);
		wait_line();
		for (long i = 0; i < n; i++) {
			pt_add((int)i, -1000 * i, (unsigned char)(200 + i), "hello");
			pt_neg(i - 2);
			labs_p(-7 * i - 1);
		}
		printf("done\n");
		fflush(stdout);
		wait_line();
		return 0;
	}
	if (!strcmp(argv[1], "loop")) {
		struct timespec a, b;
		unsigned acc = 0;

		n = atol(argv[2]);
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++)
			acc = pt_loop(acc);
		clock_gettime(CLOCK_MONOTONIC, &b);
		printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
		return acc == (unsigned)n ? 0 : 1;
	}
	if (!strcmp(argv[1], "late") && argc > 3) {
		int (*late)(int);
		void *h;

		n = atol(argv[3]);
		printf("ready\n");
		fflush(stdout);
		wait_line();
		h = dlopen(argv[2], RTLD_NOW);
		if (!h)
			return 4;
		late = (int (*)(int))dlsym(h, "pt_late");
		if (!late)
			return 5;
		for (long i = 0; i < n; i++)
			late((int)i);
		printf("done\n");
		fflush(stdout);
		wait_line();
		return 0;
	}
	return 2;
}
