/* Paced producer: RATE write(2)s/s of SIZE bytes to /dev/null for SECS seconds.
 * Waits for a byte on stdin; prints "done wanted elapsed_ns". Paced per 1 ms tick,
 * catching up if late, so the offered rate holds when the process is not starved.
 * A 4th argument "http" writes HTTP request heads (text lines, a query string, a cookie)
 * instead of the alphabet, varying per write: what redaction meets in real payload. */
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
	double rate = argc > 1 ? atof(argv[1]) : 100000;
	double secs = argc > 2 ? atof(argv[2]) : 5;
	int size = argc > 3 ? atoi(argv[3]) : 64;
	char buf[4096] = {0};
	char go;
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0 || size > (int)sizeof(buf))
		return 2;
	int http = argc > 4 && strcmp(argv[4], "http") == 0;
	for (int i = 0; i < size; i++)
		buf[i] = 'a' + i % 26;
	printf("%d\n", getpid());
	fflush(stdout);
	if (read(0, &go, 1) != 1)
		return 3;
	long long t0 = now_ns(), end = t0 + (long long)(secs * 1e9);
	long long wanted = (long long)(rate * secs), done = 0;
	struct timespec tick = {0, 1000000};
	for (;;) {
		long long t = now_ns();
		if (t >= end)
			break;
		long long due = (long long)((t - t0) / 1e9 * rate);
		while (done < due && done < wanted) {
			if (http) {
				int n = snprintf(buf, sizeof(buf),
					"GET /api/v1/orders/%lld?page=%lld&sort=desc HTTP/1.1\r\n"
					"Host: shop.example.com\r\nUser-Agent: bench/1.0\r\n"
					"Accept: application/json\r\nCookie: region=eu; ab=%lld\r\n"
					"X-Request-Id: %016llx\r\nConnection: keep-alive\r\n\r\n",
					done, done % 97, done % 7, done * 2654435761LL);
				for (; n < size; n++)
					buf[n] = ' ';
			}
			if (write(fd, buf, size) != size)
				return 4;
			done++;
		}
		nanosleep(&tick, NULL);
	}
	printf("%lld %lld %lld\n", done, wanted, now_ns() - t0);
	return 0;
}
