/* TLS plaintext at the library boundary: uprobes on OpenSSL's SSL_{read,write}[_ex], tied
 * to the connection's socket fd (SSL_set_fd, or the syscalls the same thread makes inside
 * an SSL_* call, which carry ciphertext and are marked F_CIPHERTEXT, never copied).
 *
 * Appended to trace.bpf.c's text by probes/loader.py and compiled as one object (it
 * shares the targets map, scratch buffer and ring buffer); attached by tls.py only while a
 * payload-level session targets a process that maps libssl. Read-only: we copy
 * the plaintext buffer after the library filled it (read) or before it encrypts
 * it (write); nothing in the process is modified.
 */

#include <uapi/linux/ptrace.h>

/* struct tls_call (common.h) and the tls_calls/ssl_fds maps are declared in trace.bpf.c:
 * its syscall exits read them (a read/write inside SSL_* is that connection's ciphertext). */

static __always_inline int tls_enter(struct pt_regs *ctx, int ex)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t || !t->payload_cap || !admitted(t))
		return 0;
	struct tls_call c = {};
	c.ssl = PT_REGS_PARM1(ctx);
	c.buf = PT_REGS_PARM2(ctx);
	c.nbytes_ptr = ex ? PT_REGS_PARM4(ctx) : 0;
	c.cookie = t->cookie;
	c.payload_cap = t->payload_cap;
	c.ts = bpf_ktime_get_ns();
	c.fd = -1;
	if (tls_calls.update(&id, &c))
		count(ST_DROP_INFLIGHT);
	return 0;
}

static __always_inline int tls_exit(struct pt_regs *ctx, u16 nr)
{
	u64 id = bpf_get_current_pid_tgid();
	struct tls_call *c = tls_calls.lookup(&id);
	if (!c)
		return 0;
	struct tls_call call = *c;
	tls_calls.delete(&id);
	/* All four return int: the upper half of the register is not a sign (a failed
	 * SSL_read's -1 read as s64 is 4294967295, which copied stale buffer bytes). */
	s64 ret = (int)PT_REGS_RC(ctx);
	if (call.nbytes_ptr) {   /* _ex: 1 on success with the count in *nbytes, else 0 */
		u64 n = 0;
		if (ret == 1 && bpf_probe_read_user(&n, sizeof(n), (void *)call.nbytes_ptr) == 0
		    && n <= 0x7fffffff)
			ret = (s64)n;
		else
			ret = ret == 1 ? -1 : 0;   /* unreadable count: no bytes are trusted */
	}
	/* The connection's fd: from a syscall this call made (remembered for calls served
	 * from OpenSSL's buffer, which make none), else what SSL_set_fd or an earlier call said. */
	s32 fd = call.fd;
	struct ssl_key k = { .tgid = id >> 32, .ssl = call.ssl };
	if (fd >= 0) {
		ssl_fds.update(&k, &fd);
	} else {
		s32 *known = ssl_fds.lookup(&k);
		if (known)
			fd = *known;
	}
	int zero = 0;
	struct sys_event *e = scratch.lookup(&zero);
	if (!e)
		return 0;
	e->nr = nr;
	e->flags = nr == SC_SSL_WRITE ? F_DATA_OUT : 0;
	e->fd = fd;
	e->ret = ret;
	u64 now = bpf_ktime_get_ns();
	e->latency_ns = now - call.ts;
	e->arg = call.ssl;
	e->data_len = 0;
	e->aux = 0;
	/* Only bytes the call returned: ret > 0 and at most ret (copy_payload caps at avail). */
	if (ret > 0)
		copy_payload(e, call.buf, ret, fd >= 0 ? fd_cap(id, fd, call.payload_cap)
							  : call.payload_cap, ret);
	submit_sys(e, OP_TLS, call.cookie, id, now);
	return 0;
}

/* SSL_set_fd(ssl, fd): the connection's socket, before any byte moves (curl, nginx and
 * Python's ssl module call it; BIO-based callers are learned from their syscalls). */
int tls_set_fd_enter(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t || !t->payload_cap)
		return 0;
	struct ssl_key k = { .tgid = id >> 32, .ssl = PT_REGS_PARM1(ctx) };
	s32 fd = (s32)PT_REGS_PARM2(ctx);
	ssl_fds.update(&k, &fd);
	return 0;
}

/* The handshake and shutdown (SSL_do_handshake, SSL_connect, SSL_accept, SSL_shutdown)
 * move only ciphertext: their syscalls are marked like those inside SSL_read/SSL_write, and
 * teach the SSL its fd. No record of their own. A call nested in another SSL_* call (e.g.
 * SSL_connect -> SSL_do_handshake) keeps the outer call's state. */
int tls_quiet_enter(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t || !t->payload_cap || tls_calls.lookup(&id))
		return 0;
	struct tls_call c = {};
	c.ssl = PT_REGS_PARM1(ctx);
	c.cookie = t->cookie;
	c.ts = bpf_ktime_get_ns();
	c.fd = -1;
	if (tls_calls.update(&id, &c))
		count(ST_DROP_INFLIGHT);
	return 0;
}

int tls_quiet_exit(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct tls_call *c = tls_calls.lookup(&id);
	if (!c || c->buf)
		return 0;   /* none, or an SSL_read/SSL_write this call is nested in */
	if (c->fd >= 0) {
		struct ssl_key k = { .tgid = id >> 32, .ssl = c->ssl };
		s32 fd = c->fd;
		ssl_fds.update(&k, &fd);
	}
	tls_calls.delete(&id);
	return 0;
}

int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1); }
int tls_read_exit(struct pt_regs *ctx) { return tls_exit(ctx, SC_SSL_READ); }
int tls_write_exit(struct pt_regs *ctx) { return tls_exit(ctx, SC_SSL_WRITE); }
