/* CPU-bound loop for bench/profile.py: waits for a line on stdin, runs `rounds` rounds of
 * the hot/cold functions of tests/data/profile/hot.c, prints "wall_ns cpu_ns". */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void hot_function(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i * i;
}

__attribute__((noinline)) void cold_function(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i;
}

static long long ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	unsigned long rounds = argc > 1 ? strtoul(argv[1], 0, 10) : 10;
	char line[16];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	long long w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_PROCESS_CPUTIME_ID);
	for (unsigned long r = 0; r < rounds; r++) {
		hot_function(9000000);
		cold_function(1000000);
	}
	printf("%lld %lld\n", ns(CLOCK_MONOTONIC) - w0, ns(CLOCK_PROCESS_CPUTIME_ID) - c0);
	return 0;
}
