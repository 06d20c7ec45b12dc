// SPDX-License-Identifier: MIT
/*
 * The C baseline of bench/run's ring-drain figure: libbpf's own consumer.
 *
 *   ringdrain OBJ RECORD_SIZE RING_BYTES REPS|-
 *
 * Loads OBJ (pytracers' bench.bpf.o) with only fill_<RECORD_SIZE>, sizes its
 * `events` ring to RING_BYTES, then REPS times: fills the ring to capacity
 * with BPF_PROG_TEST_RUN (not timed) and drains it with one
 * ring_buffer__consume() call whose C callback counts the records and adds
 * up their seq field (timed); with "-" for REPS, one rep per line read from
 * stdin, until EOF (bench/run alternates its rounds with pytracers').
 * Prints one line per rep: "<records> <ns>".
 * Exits non-zero if a drain did not return exactly the records filled or
 * their seqs were not consecutive.
 *
 * Built by bench/run with the system compiler against libbpf-dev; never
 * shipped.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

struct tally {
	uint64_t n;
	uint64_t sum;
};

static int on_record(void *ctx, void *data, size_t len)
{
	struct tally *t = ctx;

	(void)len;
	t->n++;
	t->sum += *(const uint64_t *)data;     /* one field decoded: seq */
	return 0;
}

/* CPU time of this thread: on a shared machine, time spent preempted by
 * other work is not the consumer's cost. */
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
	if (argc != 5) {
		fprintf(stderr, "usage: %s OBJ RECORD_SIZE RING_BYTES REPS|-\n", argv[0]);
		return 2;
	}
	const char *path = argv[1];
	unsigned size = (unsigned)atoi(argv[2]);
	unsigned long ring = strtoul(argv[3], NULL, 0);
	int stepped = strcmp(argv[argc - 1], "-") == 0;
	int reps = stepped ? 0 : atoi(argv[4]);
	char want[32];
	struct bpf_object *obj;
	struct bpf_program *prog, *fill = NULL;
	struct bpf_map *events;
	struct ring_buffer *rb;
	struct tally t = {0, 0};
	uint64_t next_seq = 0;

	libbpf_set_print(silent);
	snprintf(want, sizeof(want), "fill_%u", size);
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "open %s: %s\n", path, strerror(errno));
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		int mine = strcmp(bpf_program__name(prog), want) == 0;

		bpf_program__set_autoload(prog, mine);
		if (mine)
			fill = prog;
	}
	events = bpf_object__find_map_by_name(obj, "events");
	if (!fill || !events) {
		fprintf(stderr, "%s has no %s or no events map\n", path, want);
		return 1;
	}
	if (bpf_map__set_max_entries(events, ring) || bpf_object__load(obj)) {
		fprintf(stderr, "load %s: %s\n", path, strerror(errno));
		return 1;
	}
	rb = ring_buffer__new(bpf_map__fd(events), on_record, &t, NULL);
	if (!rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	unsigned long stride = (size + 8 + 7) & ~7ul;
	unsigned long capacity = ring / stride;

	for (int rep = 0; stepped || rep < reps; rep++) {
		char line[16];

		if (stepped && !fgets(line, sizeof(line), stdin))
			break;          /* "-": one rep per line read, until EOF */
		unsigned long filled = 0;

		while (filled < capacity) {
			uint64_t ctx[2] = { capacity - filled < 4096 ? capacity - filled : 4096, 0 };
			LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = ctx, .ctx_size_in = sizeof(ctx));

			if (bpf_prog_test_run_opts(bpf_program__fd(fill), &opts)) {
				fprintf(stderr, "test run: %s\n", strerror(errno));
				return 1;
			}
			if (!opts.retval)
				break;                  /* ring full */
			filled += opts.retval;
		}
		t.n = 0;
		t.sum = 0;
		uint64_t t0 = now_ns();
		int got = ring_buffer__consume(rb);
		uint64_t t1 = now_ns();
		/* seqs next_seq .. next_seq + filled - 1 */
		uint64_t want_sum = filled * next_seq + (uint64_t)filled * (filled - 1) / 2;

		if (got < 0 || t.n != filled || (unsigned long)got != filled || t.sum != want_sum) {
			fprintf(stderr, "drained %d/%llu records (filled %lu), seq sum %llu != %llu\n",
				got, (unsigned long long)t.n, filled, (unsigned long long)t.sum,
				(unsigned long long)want_sum);
			return 1;
		}
		next_seq += filled;
		printf("%lu %llu\n", filled, (unsigned long long)(t1 - t0));
		fflush(stdout);
	}
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
