/* N write(2)s of SIZE bytes to /dev/null; waits for a byte on stdin, prints loop ns.
 * writeloop N SIZE getppid: N getppid(2)s instead, a syscall periscope does not trace. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	int untraced = argc > 3 && strcmp(argv[3], "getppid") == 0;
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
	if (untraced)
		for (long i = 0; i < n; i++)
			getppid();
	else
		for (long i = 0; i < n; i++)
			if (write(fd, buf, size) != size)
				return 4;
	long long t1 = now_ns();
	printf("%lld %ld\n", t1 - t0, n);
	return 0;
}
