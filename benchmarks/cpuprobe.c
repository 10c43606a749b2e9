/*
 * cpuprobe: how fast this CPU runs right now -- the same fixed work, timed,
 * so that a slow benchmark cell can be told apart from a slow machine (on a
 * shared VM host, other guests on the same cores and memory slow every
 * instruction without showing as steal).
 *
 * Built by benchmarks/runner.py at run time (gcc -O2) and run pinned to
 * one CPU.  Prints one line: "<alu ns> <chase ns>": nanoseconds per step of
 * a dependent multiply-add chain (the core's speed) and of a pointer chase
 * through a shuffled 4 MiB array (cache, memory and TLB latency).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHASE_WORDS (1u << 19) /* 4 MiB of size_t */
#define ALU_STEPS 10000000L
#define CHASE_STEPS 1000000L

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
	size_t *a = malloc(CHASE_WORDS * sizeof(*a));
	uint64_t v = 1, seed = 88172645463325252ULL;
	volatile uint64_t sink;
	size_t p = 0;
	double t0, t1, t2;

	if (!a)
		return 1;
	/* one cycle through every word (Sattolo's shuffle), xorshift-driven */
	for (size_t i = 0; i < CHASE_WORDS; i++)
		a[i] = i;
	for (size_t i = CHASE_WORDS - 1; i > 0; i--) {
		size_t j, t;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		j = (size_t)(seed % i);
		t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
	for (size_t i = 0; i < CHASE_WORDS; i += 512) /* fault it all in first */
		p += a[i];
	p = 0;
	t0 = now();
	for (long i = 0; i < ALU_STEPS; i++)
		v = v * 6364136223846793005ULL + 1442695040888963407ULL;
	t1 = now();
	for (long i = 0; i < CHASE_STEPS; i++)
		p = a[p];
	t2 = now();
	sink = v + p;
	(void)sink;
	printf("%.3f %.2f\n", (t1 - t0) / ALU_STEPS * 1e9, (t2 - t1) / CHASE_STEPS * 1e9);
	free(a);
	return 0;
}
