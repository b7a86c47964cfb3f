/* N write(2)s of SIZE bytes to /dev/null; waits for a byte on stdin, prints loop ns. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000000;
	int size = argc > 2 ? atoi(argv[2]) : 64;
	char buf[4096] = {0};
	char go;
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0 || size > (int)sizeof(buf))
		return 2;
	for (int i = 0; i < size; i++)
		buf[i] = 'a' + i % 26;
	printf("%d\n", getpid());
	fflush(stdout);
	if (read(0, &go, 1) != 1)
		return 3;
	long long t0 = now_ns();
	for (long i = 0; i < n; i++)
		if (write(fd, buf, size) != size)
			return 4;
	long long t1 = now_ns();
	printf("%lld %ld\n", t1 - t0, n);
	return 0;
}
