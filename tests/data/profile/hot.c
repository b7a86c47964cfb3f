/* A CPU-bound program with a known hot function (tests/root/test_profile.py, bench/profile.py).
 * hot_function takes ~90 % of the loop's work, cold_function the rest; tick() makes
 * hot_function a non-leaf, so it sets up a frame pointer and its caller (main) shows. */
#include <stdlib.h>

volatile unsigned long sink;

__attribute__((noinline)) void tick(void) { sink++; }

__attribute__((noinline)) void hot_function(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		sink += i * i;
		if ((i & 0xfffff) == 0)
			tick();
	}
}

__attribute__((noinline)) void cold_function(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i;
}

/* argv[1]: rounds (0 or absent: forever). */
int main(int argc, char **argv)
{
	unsigned long rounds = argc > 1 ? strtoul(argv[1], 0, 10) : 0;
	for (unsigned long r = 0; rounds == 0 || r < rounds; r++) {
		hot_function(9000000);
		cold_function(1000000);
	}
	return 0;
}
