/* A TLS client that drives every return path of SSL_read/SSL_write and their _ex forms,
 * printing what each call returned (the ground truth tests/root/test_tls_returns.py
 * compares periscope's events with). libssl is dlopen'ed, so no OpenSSL headers are
 * needed to build it: gcc -O1 -o tlscalls tlscalls.c -ldl
 *
 * usage: tlscalls PORT   (prints "ready", waits for a line on stdin, then runs)
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

static const SSL_METHOD *(*p_TLS_client_method)(void);
static SSL_CTX *(*p_SSL_CTX_new)(const SSL_METHOD *);
static SSL *(*p_SSL_new)(SSL_CTX *);
static int (*p_SSL_set_fd)(SSL *, int);
static int (*p_SSL_connect)(SSL *);
static int (*p_SSL_read)(SSL *, void *, int);
static int (*p_SSL_write)(SSL *, const void *, int);
static int (*p_SSL_read_ex)(SSL *, void *, size_t, size_t *);
static int (*p_SSL_write_ex)(SSL *, const void *, size_t, size_t *);

static void *need(void *lib, const char *name)
{
	void *f = dlsym(lib, name);
	if (!f) {
		fprintf(stderr, "missing %s\n", name);
		exit(2);
	}
	return f;
}

static char buf[4096];

static void stale(void)
{
	/* What a probe that copies bytes the call did not return would leak. */
	for (size_t i = 0; i + 8 <= sizeof(buf); i += 8)
		memcpy(buf + i, "STALE!!!", 8);
}

static void blocking(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	void *lib = dlopen("libssl.so.3", RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen libssl.so.3: %s\n", dlerror());
		return 2;
	}
	p_TLS_client_method = need(lib, "TLS_client_method");
	p_SSL_CTX_new = need(lib, "SSL_CTX_new");
	p_SSL_new = need(lib, "SSL_new");
	p_SSL_set_fd = need(lib, "SSL_set_fd");
	p_SSL_connect = need(lib, "SSL_connect");
	p_SSL_read = need(lib, "SSL_read");
	p_SSL_write = need(lib, "SSL_write");
	p_SSL_read_ex = need(lib, "SSL_read_ex");
	p_SSL_write_ex = need(lib, "SSL_write_ex");
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	if (!fgets(buf, sizeof(buf), stdin))
		return 2;

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return 3;
	SSL *ssl = p_SSL_new(p_SSL_CTX_new(p_TLS_client_method()));
	p_SSL_set_fd(ssl, fd);
	if (p_SSL_connect(ssl) != 1)
		return 4;

	size_t n = 0;
	int r;
	r = p_SSL_write(ssl, "hello-write\n", 12);
	printf("ssl_write %d\n", r);
	char big[600];
	memset(big, 'W', sizeof(big));
	memcpy(big, "big-write\n", 10);
	r = p_SSL_write_ex(ssl, big, sizeof(big), &n);
	printf("ssl_write_ex %d %zu\n", r, n);

	blocking(fd, 0);
	stale();
	r = p_SSL_read(ssl, buf, 1000);   /* nothing sent yet: -1 (want read) */
	printf("ssl_read %d\n", r);
	stale();
	n = 12345;
	r = p_SSL_read_ex(ssl, buf, 1000, &n);   /* still nothing: 0 */
	printf("ssl_read_ex %d\n", r);
	blocking(fd, 1);

	r = p_SSL_write(ssl, "send150\n", 8);
	printf("ssl_write %d\n", r);
	stale();
	r = p_SSL_read_ex(ssl, buf, 100, &n);   /* a partial read: 100 of the 150 sent */
	printf("ssl_read_ex %d %zu\n", r, n);
	stale();
	r = p_SSL_read_ex(ssl, buf, 100, &n);   /* the other 50, fewer than asked */
	printf("ssl_read_ex %d %zu\n", r, n);
	r = p_SSL_write(ssl, "send300\n", 8);
	printf("ssl_write %d\n", r);
	stale();
	r = p_SSL_read(ssl, buf, 1000);   /* 300, more than the 256 B capture cap */
	printf("ssl_read %d\n", r);
	r = p_SSL_write(ssl, "close\n", 6);
	printf("ssl_write %d\n", r);
	stale();
	r = p_SSL_read(ssl, buf, 1000);   /* close_notify: 0 */
	printf("ssl_read %d\n", r);
	close(fd);
	return 0;
}
