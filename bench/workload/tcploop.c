/* TCP request/response on loopback: a server thread echoes MSG-byte requests.
 * One process (both threads are traced by tgid). Waits for a byte on stdin,
 * runs SECS seconds, prints "requests elapsed_ns". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 100

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int full(int fd, char *b, int n, int out)
{
	int got = 0;
	while (got < n) {
		int r = out ? write(fd, b + got, n - got) : read(fd, b + got, n - got);
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static void *serve(void *arg)
{
	int lfd = *(int *)arg, one = 1;
	int c = accept(lfd, NULL, NULL);
	char buf[MSG];
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (full(c, buf, MSG, 0) == 0 && full(c, buf, MSG, 1) == 0)
		;
	close(c);
	return NULL;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	char buf[MSG], go;
	pthread_t th;
	for (int i = 0; i < MSG; i++)
		buf[i] = 'A' + i % 26;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen))
		return 2;
	pthread_create(&th, NULL, serve, &lfd);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		return 2;
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	printf("%d\n", getpid());
	fflush(stdout);
	if (read(0, &go, 1) != 1)
		return 3;
	long long t0 = now_ns(), end = t0 + (long long)(secs * 1e9), n = 0;
	while ((n & 63) || now_ns() < end) {
		if (full(c, buf, MSG, 1) || full(c, buf, MSG, 0))
			return 4;
		n++;
	}
	printf("%lld %lld\n", n, now_ns() - t0);
	shutdown(c, SHUT_RDWR);
	close(c);
	pthread_join(th, NULL);
	return 0;
}
