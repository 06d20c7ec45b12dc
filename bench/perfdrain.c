// SPDX-License-Identifier: MIT
/*
 * The C baseline of bench/run's perf-buffer drain figure: libbpf's own
 * consumer.
 *
 *   perfdrain OBJ PAGES REPS|-
 *
 * Loads OBJ (bench/perf_fill.bpf.o), runs on CPU 0 only, opens a perf buffer
 * of PAGES data pages per CPU on its `events` map with perf_buffer__new(),
 * then REPS times: fills CPU 0's ring to capacity with BPF_PROG_TEST_RUN of
 * fill_perf64 (64-byte samples, 80-byte records: as many as fit, so none is
 * refused; not timed) and drains it with one
 * perf_buffer__consume() call whose C callback counts the samples and adds
 * up their seq field (timed); with "-" for REPS, one rep per line read from
 * stdin, until EOF (bench/run alternates its rounds with pytracers').
 * Prints one line per rep: "<samples> <ns>".
 * Exits non-zero if a drain did not return exactly the samples filled, their
 * seqs were not consecutive, or a sample was lost.
 *
 * Built by bench/run with the system compiler against libbpf-dev; never
 * shipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

struct tally {
	uint64_t n;
	uint64_t sum;
	uint64_t lost;
};

static void on_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct tally *t = ctx;

	(void)cpu;
	(void)size;
	t->n++;
	t->sum += *(const uint64_t *)data;     /* one field decoded: seq */
}

static void on_lost(void *ctx, int cpu, __u64 cnt)
{
	struct tally *t = ctx;

	(void)cpu;
	t->lost += cnt;
}

/* CPU time of this thread (see ringdrain.c) */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int silent(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_WARN)
		return vfprintf(stderr, fmt, ap);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s OBJ PAGES REPS|-\n", argv[0]);
		return 2;
	}
	const char *path = argv[1];
	size_t pages = strtoul(argv[2], NULL, 0);
	int stepped = strcmp(argv[argc - 1], "-") == 0;
	int reps = stepped ? 0 : atoi(argv[3]);
	struct bpf_object *obj;
	struct bpf_program *fill;
	struct bpf_map *events;
	struct perf_buffer *pb;
	struct tally t = {0, 0, 0};
	uint64_t next_seq = 0;
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(0, sizeof(one), &one)) {
		fprintf(stderr, "sched_setaffinity: %s\n", strerror(errno));
		return 1;
	}
	libbpf_set_print(silent);
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "open %s: %s\n", path, strerror(errno));
		return 1;
	}
	fill = bpf_object__find_program_by_name(obj, "fill_perf64");
	events = bpf_object__find_map_by_name(obj, "events");
	if (!fill || !events || bpf_object__load(obj)) {
		fprintf(stderr, "load %s: %s\n", path, strerror(errno));
		return 1;
	}
	pb = perf_buffer__new(bpf_map__fd(events), pages, on_sample, on_lost, &t, NULL);
	if (!pb) {
		fprintf(stderr, "perf_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	/* the kernel keeps one byte free: records of 80 bytes, as many as fit */
	unsigned long capacity = (pages * (size_t)sysconf(_SC_PAGESIZE) - 1) / 80;

	for (int rep = 0; stepped || rep < reps; rep++) {
		char line[16];

		if (stepped && !fgets(line, sizeof(line), stdin))
			break;          /* "-": one rep per line read, until EOF */
		unsigned long filled = 0;

		while (filled < capacity) {
			uint64_t ctx[1] = { capacity - filled < 1024 ? capacity - filled : 1024 };
			LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = ctx, .ctx_size_in = sizeof(ctx));

			if (bpf_prog_test_run_opts(bpf_program__fd(fill), &opts)) {
				fprintf(stderr, "test run: %s\n", strerror(errno));
				return 1;
			}
			if (!opts.retval)
				break;                  /* CPU 0's ring is full */
			filled += opts.retval;
		}
		t.n = 0;
		t.sum = 0;
		uint64_t t0 = now_ns();
		int err = perf_buffer__consume(pb);
		uint64_t t1 = now_ns();
		uint64_t want_sum = filled * next_seq + (uint64_t)filled * (filled - 1) / 2;

		if (err < 0 || t.n != filled || t.sum != want_sum || t.lost) {
			fprintf(stderr, "drained %llu samples (filled %lu, lost %llu), seq sum %llu != %llu\n",
				(unsigned long long)t.n, filled, (unsigned long long)t.lost,
				(unsigned long long)t.sum, (unsigned long long)want_sum);
			return 1;
		}
		next_seq += filled;
		printf("%lu %llu\n", filled, (unsigned long long)(t1 - t0));
		fflush(stdout);
	}
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
