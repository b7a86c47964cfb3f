/* Syscall and process-lifecycle tracing for targeted processes only.
 *
 * Tracepoints only (no kprobes on our kernels). Every handler starts with
 * trace_allowed() or an in-flight slot check, so untargeted processes pay a bit test
 * in two arrays (enter) or one array load (exit). Records go to a ring buffer
 * without wakeups; the daemon polls.
 * Read-only: no helper here writes to user memory or signals a task.
 */
#include "common.h"

BPF_HASH(targets, u32, struct target, MAX_TARGETS);
/* A bit per tgid that may be in `targets`, tested before it: array loads the verifier
 * inlines, where the hash lookup cost an untargeted write(2) ~50 ns here. Never a false
 * negative: every writer sets the bit before it adds the tgid and clears it only after
 * removing it; a stale bit costs only the hash lookup. Two arrays, so that each word has
 * one kind of writer: the programs (fork, exec, exit; atomics) and the daemon (add_pid,
 * under a lock), whose map updates write whole words and would lose a program's concurrent
 * bit. 512 KiB each: 2^22 bits, PID_MAX_LIMIT on 64-bit, whatever pid_max is raised to. */
BPF_ARRAY(target_bits, u64, TARGET_BIT_WORDS);
BPF_ARRAY(target_bits_user, u64, TARGET_BIT_WORDS);
BPF_HASH(comm_targets, struct comm_key, struct target, 256);
BPF_HASH(cgroup_targets, u64, struct target, 256);
/* A syscall between its enter and exit, in an array slot per thread rather than a hash:
 * a hash update and delete per syscall take a bucket lock each, ~0.5 us of the ~1.8 us a
 * traced syscall cost the task here. Two traced threads whose tids are equal modulo
 * INFLIGHT_SLOTS share a slot: the later enter takes it (counted, drop_inflight) and the
 * earlier syscall's exit then finds another id and records nothing. */
BPF_ARRAY(inflight, struct inflight, INFLIGHT_SLOTS);
BPF_HASH(exit_codes, u32, s32, MAX_TARGETS);
BPF_TABLE("lru_hash", u32, struct rate, rates, 1024);   /* by target cookie */
BPF_PERCPU_ARRAY(stats, u64, ST_MAX);
BPF_PERCPU_ARRAY(scratch, struct sys_event, 1);
/* Non-zero while the daemon's pipeline is overloaded (set by its ring reader): the I/O
 * syscalls of targets are then skipped at their enter, counted (ST_SHED_OVERLOAD), where
 * a skip costs the target least, rather than recorded, read and dropped by the daemon. */
BPF_ARRAY(shedding, u32, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* TLS correlation: tls.bpf.c (appended to this text) keeps a thread's SSL_* call here, and
 * a socket syscall made inside it learns the SSL's fd (ssl_fds) and copies nothing. */
BPF_HASH(tls_calls, u64, struct tls_call, 16384);
/* Non-zero once the daemon attached any SSL uprobe: until then tls_calls is empty and an
 * I/O exit does not look it up. */
BPF_ARRAY(tls_hooked, u32, 1);
BPF_TABLE("lru_hash", struct ssl_key, s32, ssl_fds, 16384);
/* (tgid << 32 | fd) -> a larger payload cap the daemon set for an fd where it detected an
 * L7 protocol (request heads longer than the default cap then parse); removed at close. */
BPF_TABLE("lru_hash", u64, u32, fd_caps, 4096);

#define CLONE_THREAD 0x00010000

static __always_inline void count(int idx)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		(*v)++;
}

/* Clamp v to max after hiding it from clang, so the verifier sees the bound. */
static __always_inline u32 bounded(u32 v, u32 mask, u32 max)
{
	asm volatile("" : "+r"(v));
	v &= mask;
	return v > max ? max : v;
}

static __always_inline int maybe_target(u32 tgid)
{
	u32 w = tgid >> 6;
	u64 bit = 1ULL << (tgid & 63);
	u64 *k = target_bits.lookup(&w);
	u64 *u = target_bits_user.lookup(&w);
	return (k && (*k & bit)) || (u && (*u & bit));
}

static __always_inline struct target *trace_allowed(u32 tgid)
{
	return maybe_target(tgid) ? targets.lookup(&tgid) : 0;
}

/* A target the programs add (a fork's child, an exec by name or cgroup): its bit first. */
static __always_inline void add_target(u32 tgid, struct target *t)
{
	u32 w = tgid >> 6;
	u64 *k = target_bits.lookup(&w);
	if (k)
		__sync_fetch_and_or(k, 1ULL << (tgid & 63));
	if (targets.update(&tgid, t))
		count(ST_TARGET_FULL);
}

static __always_inline struct inflight *slot_of(u64 id)
{
	u32 slot = (u32)id & (INFLIGHT_SLOTS - 1);
	return inflight.lookup(&slot);
}

/* Sampling and the rate limit: whether this syscall of a target is recorded.
 * The limit is per target (cookie), shared by the processes it covers, so a forking
 * server cannot multiply it. Slices are 100 ms with a budget of rate_limit/10; CPUs
 * racing at a slice change may admit a few extra records (no lock); every skip is counted. */
static __always_inline int admitted(struct target *t)
{
	if (t->sample_every > 1 && bpf_get_prandom_u32() % t->sample_every) {
		count(ST_SKIPPED_SAMPLE);
		return 0;
	}
	if (!t->rate_limit)
		return 1;
	u64 slice = bpf_ktime_get_ns() / RATE_SLICE_NS;
	u64 budget = t->rate_limit / 10 ? t->rate_limit / 10 : 1;
	u32 cookie = t->cookie;
	struct rate *r = rates.lookup(&cookie);
	if (!r || r->slice != slice) {
		struct rate fresh = { .slice = slice, .used = 1 };
		rates.update(&cookie, &fresh);
		return 1;
	}
	if (__sync_fetch_and_add(&r->used, 1) < budget)
		return 1;
	count(ST_SKIPPED_RATE);
	return 0;
}

static __always_inline void fill_hdr(struct event_hdr *h, u8 op, u16 size, u32 cookie, u64 id,
				     u64 now)
{
	h->op = op;
	h->version = LAYOUT_VERSION;
	h->size = size;
	h->cookie = cookie;
	h->ktime = now;
	h->tgid = id >> 32;
	h->tid = (u32)id;
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void submit(void *rec, u32 size)
{
	if (events.ringbuf_output(rec, size, BPF_RB_NO_WAKEUP) < 0)
		count(ST_DROP_RINGBUF);
	else
		count(ST_EMITTED);
}

/* Emit the header plus only the data bytes used; `now` is the record's ktime (an exit's
 * own clock read, which its latency used too). */
static __always_inline void submit_sys(struct sys_event *e, u8 op, u32 cookie, u64 id, u64 now)
{
	u32 size = SYS_EVENT_HDR_SIZE + bounded(e->data_len, 2 * MAX_DATA - 1, MAX_DATA);
	fill_hdr(&e->hdr, op, size, cookie, id, now);
	submit(e, size);
}

/* The syscalls shed under overload: those that move bytes, the volume. Opens, closes,
 * connects, accepts and the process lifecycle are always recorded, so the daemon's view of
 * processes and their fds stays right. nr is a constant where this is inlined. */
static __always_inline int sheddable(u16 nr)
{
	return (nr >= SC_READ && nr <= SC_RECVMSG) || nr == SC_SENDFILE;
}

static __always_inline int shed(u16 nr)
{
	if (!sheddable(nr))
		return 0;
	int zero = 0;
	u32 *on = shedding.lookup(&zero);
	if (!on || !*on)
		return 0;
	count(ST_SHED_OVERLOAD);
	return 1;
}

static __always_inline int on_enter(u16 nr, u64 a0, u64 a1, u64 a2)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t || shed(nr) || !admitted(t))
		return 0;
	struct inflight *f = slot_of(id);
	if (!f)
		return 0;
	/* Claim (id 0: an exit reading the slot meanwhile sees it is no longer its own),
	 * write, then publish with our id. The atomics order this on every arch. */
	u64 was = __sync_lock_test_and_set(&f->id, 0);
	if (was && was != id)
		count(ST_DROP_INFLIGHT);
	f->ts = bpf_ktime_get_ns();
	f->a0 = a0;
	f->a1 = a1;
	f->a2 = a2;
	f->cookie = t->cookie;
	f->payload_cap = t->payload_cap;
	f->nr = nr;
	__sync_lock_test_and_set(&f->id, id);
	return 0;
}

/* Copy up to cap bytes of [ptr, ptr+avail) into e->data. */
static __always_inline void copy_payload(struct sys_event *e, u64 ptr, s64 avail, u32 cap, s64 moved)
{
	u32 n = cap < MAX_DATA ? cap : MAX_DATA;
	if (avail < n)
		n = avail > 0 ? avail : 0;
	if (n == 0 || !ptr)
		return;
	n = bounded(n, 2 * MAX_DATA - 1, MAX_DATA);
	if (bpf_probe_read_user(e->data, n, (void *)ptr) == 0) {
		e->data_len = n;
		e->flags |= F_PAYLOAD;
	}
	if (moved > n)
		e->flags |= F_TRUNCATED;
}

#define IOV_COPY 4   /* iovecs of one call copied at most: nginx writes a head and a body */

/* The bytes an iovec array moved (writev, readv, sendmsg, recvmsg), up to cap: the first
 * iovec as copy_payload copies it, then the next ones while the cap has room, each only
 * if the ones before were copied whole, so the copy stays the call's first bytes. */
static __always_inline void copy_iovecs(struct sys_event *e, u64 iovp, u64 iovcnt, u32 cap,
					s64 ret)
{
	struct p_iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)iovp))
		return;
	s64 whole = iov.len < (u64)ret ? (s64)iov.len : ret;   /* bytes of the iovecs so far */
	copy_payload(e, iov.base, whole, cap, ret);
	u32 lim = cap < MAX_DATA ? cap : MAX_DATA;
#pragma unroll
	for (int i = 1; i < IOV_COPY; i++) {
		u32 n = e->data_len;   /* 0 with an empty first iovec: its next one starts the copy */
		if ((s64)n != whole || n >= lim || whole >= ret || (u64)i >= iovcnt)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iovp + i * sizeof(iov))))
			break;
		u64 left = (u64)(ret - whole);
		u64 want = iov.len < left ? iov.len : left;
		whole += want;
		if (want == 0)
			continue;
		u32 m = lim - n;
		if (want < m)
			m = want;
		/* Both masked below MAX_DATA, so that n + m provably fits e->data on older
		 * verifiers too (6.1 lost a min() that clang kept on the stack before the mask):
		 * at most one byte less when the first iovec was empty and the next fills the cap. */
		if (m > MAX_DATA - 1)
			m = MAX_DATA - 1;
		n = bounded(n, MAX_DATA - 1, MAX_DATA - 1);
		m = bounded(m, MAX_DATA - 1, MAX_DATA - 1);
		if (m == 0 || !iov.base ||
		    bpf_probe_read_user(e->data + n, m, (void *)iov.base))
			break;
		e->data_len = n + m;
		e->flags |= F_PAYLOAD;
	}
	if (e->flags & F_PAYLOAD) {   /* truncated: the call moved more than was copied */
		if ((s64)e->data_len < ret)
			e->flags |= F_TRUNCATED;
		else
			e->flags &= ~F_TRUNCATED;
	}
}

static __always_inline u64 fd_key(u64 id, s32 fd)
{
	return (id & 0xffffffff00000000ULL) | (u32)fd;
}

/* A target's cap, raised where the daemon asked for more on this fd (fd_caps). */
static __always_inline u32 fd_cap(u64 id, s32 fd, u32 cap)
{
	u64 key = fd_key(id, fd);
	u32 *big = fd_caps.lookup(&key);
	return big && *big > cap ? *big : cap;
}

/* The payload cap of an I/O syscall on fd that moved `ret` bytes. Inside SSL_read/SSL_write
 * (tls_calls, only while TLS uprobes are attached: tls_hooked) the bytes are ciphertext:
 * marked, never copied, and the SSL learns that it lives on this fd. A raised cap (fd_caps)
 * is looked up only when the call moved more than the target's: below it, it changes nothing. */
static __always_inline u32 io_cap(struct sys_event *e, u64 id, s32 fd, u32 cap, s64 ret)
{
	if (!cap)
		return 0;   /* meta level: never copies, and tls.bpf.c tracks no call of its */
	int zero = 0;
	u32 *hooked = tls_hooked.lookup(&zero);
	if (hooked && *hooked) {
		struct tls_call *c = tls_calls.lookup(&id);
		if (c) {
			c->fd = fd;
			e->flags |= F_CIPHERTEXT;
			return 0;
		}
	}
	return ret > (s64)cap ? fd_cap(id, fd, cap) : cap;
}

static __always_inline void copy_sockaddr(struct sys_event *e, u64 ptr, u32 len)
{
	if (!ptr || len == 0)
		return;
	len = bounded(len, 31, 28);   /* sizeof(struct sockaddr_in6) */
	if (len && bpf_probe_read_user(e->data, len, (void *)ptr) == 0) {
		e->data_len = len;
		e->aux = 1;
	}
}

/* `vectored` is a constant: 1 only in the exits of readv, writev, sendmsg and recvmsg, so
 * that the iovec copy (a loop the verifier walks per iteration) is in those four programs
 * and not in every exit: in all of them it made each start's load ~0.2 s slower here. */
static __always_inline int on_exit(long ret, const int vectored)
{
	u64 id = bpf_get_current_pid_tgid();
	struct inflight *f = slot_of(id);
	if (!f || f->id != id)
		return 0;
	u16 nr = f->nr;
	u32 cap = f->payload_cap;
	u64 a0 = f->a0, a1 = f->a1, a2 = f->a2, ts = f->ts;
	u32 cookie = f->cookie;
	/* Free the slot; if it is not ours any more, a colliding enter rewrote it as we read. */
	if (__sync_val_compare_and_swap(&f->id, id, 0) != id)
		return 0;
	int zero = 0;
	struct sys_event *e = scratch.lookup(&zero);
	if (!e)
		return 0;
	e->nr = nr;
	e->flags = 0;
	e->fd = (s32)a0;
	e->ret = ret;
	u64 now = bpf_ktime_get_ns();
	e->latency_ns = now - ts;
	e->arg = a2;
	e->data_len = 0;
	e->aux = 0;

	switch (nr) {
	case SC_WRITE: case SC_PWRITE64: case SC_SENDTO:
		e->flags |= F_DATA_OUT;
		/* fall through */
	case SC_READ: case SC_PREAD64: case SC_RECVFROM:
		cap = io_cap(e, id, e->fd, cap, ret);
		if (ret > 0 && cap)
			copy_payload(e, a1, ret, cap, ret);
		break;
	case SC_WRITEV: case SC_SENDMSG:
		e->flags |= F_DATA_OUT;
		/* fall through */
	case SC_READV: case SC_RECVMSG: {
		if (!vectored)   /* this enter's own exit was missed: no payload from another's */
			break;
		cap = io_cap(e, id, e->fd, cap, ret);
		if (ret <= 0 || !cap)
			break;
		u64 iovp = a1, iovcnt = a2;
		if (nr == SC_SENDMSG || nr == SC_RECVMSG) {
			struct p_msghdr m = {};
			if (bpf_probe_read_user(&m, sizeof(m), (void *)a1))
				break;
			iovp = m.iov;
			iovcnt = m.iovlen;
		}
		copy_iovecs(e, iovp, iovcnt, cap, ret);
		break;
	}
	case SC_SENDFILE:   /* a response body from a file: its bytes are an L7 gap */
		e->flags |= F_DATA_OUT;
		break;
	case SC_CONNECT:
		copy_sockaddr(e, a1, (u32)a2);
		break;
	case SC_CLOSE:
		if (ret == 0) {   /* the fd number may come back as another socket */
			u64 key = fd_key(id, e->fd);
			fd_caps.delete(&key);
		}
		break;
	case SC_ACCEPT: case SC_ACCEPT4: {
		s32 alen = 0;
		if (ret >= 0 && a2 && bpf_probe_read_user(&alen, sizeof(alen), (void *)a2) == 0)
			copy_sockaddr(e, a1, alen > 0 ? (u32)alen : 0);
		break;
	}
	case SC_OPENAT: case SC_OPENAT2: {
		/* a2: open flags (openat) or struct open_how* (openat2; flags first) */
		if (nr == SC_OPENAT2) {
			u64 flags = 0;
			bpf_probe_read_user(&flags, sizeof(flags), (void *)a2);
			e->arg = flags;
		}
		int n = bpf_probe_read_user_str(e->data, MAX_DATA, (void *)a1);
		if (n > 0) {
			e->data_len = n - 1;
			if (n == MAX_DATA)
				e->flags |= F_TRUNCATED;
		}
		break;
	}
	case SC_EXECVE: case SC_EXECVEAT: case SC_CLONE: case SC_CLONE3:
	case SC_FORK: case SC_VFORK:
		e->fd = -1;
		e->arg = 0;
		break;
	default:
		break;
	}
	submit_sys(e, OP_SYSCALL, cookie, id, now);
	return 0;
}

#define VECTORED(nr) ((nr) == SC_READV || (nr) == SC_WRITEV || (nr) == SC_SENDMSG || \
		      (nr) == SC_RECVMSG)

#define SYS_IO(name, NR, fdf, bufp, cnt)                                    \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)                        \
	{ return on_enter(NR, (u64)args->fdf, (u64)args->bufp, (u64)args->cnt); } \
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)                         \
	{ return on_exit(args->ret, VECTORED(NR)); }

SYS_IO(read, SC_READ, fd, buf, count)
SYS_IO(write, SC_WRITE, fd, buf, count)
SYS_IO(pread64, SC_PREAD64, fd, buf, count)
SYS_IO(pwrite64, SC_PWRITE64, fd, buf, count)
SYS_IO(readv, SC_READV, fd, vec, vlen)
SYS_IO(writev, SC_WRITEV, fd, vec, vlen)
SYS_IO(sendto, SC_SENDTO, fd, buff, len)
SYS_IO(recvfrom, SC_RECVFROM, fd, ubuf, size)
SYS_IO(sendmsg, SC_SENDMSG, fd, msg, flags)
SYS_IO(recvmsg, SC_RECVMSG, fd, msg, flags)
SYS_IO(connect, SC_CONNECT, fd, uservaddr, addrlen)
SYS_IO(accept, SC_ACCEPT, fd, upeer_sockaddr, upeer_addrlen)
SYS_IO(accept4, SC_ACCEPT4, fd, upeer_sockaddr, upeer_addrlen)
SYS_IO(openat, SC_OPENAT, dfd, filename, flags)
SYS_IO(openat2, SC_OPENAT2, dfd, filename, how)
SYS_IO(sendfile64, SC_SENDFILE, out_fd, in_fd, count)

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{ return on_enter(SC_CLOSE, (u64)args->fd, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_close)
{ return on_exit(args->ret, 0); }

/* clone flags are kept in a0 so sched_process_fork can tell threads from processes. */
TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{ return on_enter(SC_CLONE, (u64)args->clone_flags, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_clone)
{ return on_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
	u64 flags = 0;   /* struct clone_args: flags is the first u64 */
	if (!trace_allowed(bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
	return on_enter(SC_CLONE3, flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_clone3)
{ return on_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_fork)
{ return on_enter(SC_FORK, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_fork)
{ return on_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_vfork)
{ return on_enter(SC_VFORK, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_vfork)
{ return on_exit(args->ret, 0); }

/* exec: argv lives in the old image, so it is read here, at enter. */
static __always_inline int exec_enter(u16 nr, const char *filename, const char *const *argv)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t)
		return 0;
	on_enter(nr, 0, 0, 0);
	int zero = 0;
	struct sys_event *e = scratch.lookup(&zero);
	if (!e)
		return 0;
	e->nr = nr;
	e->flags = 0;
	e->fd = -1;
	e->ret = 0;
	e->latency_ns = 0;
	e->arg = 0;
	e->aux = 0;
	u32 off = 0;
	int n = bpf_probe_read_user_str(e->data, ARG_LEN, filename);
	if (n > 0)
		off = n;
#pragma unroll
	for (int i = 0; i < ARGV_MAX; i++) {
		const char *arg = 0;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		if (off > MAX_DATA - ARG_LEN) {
			e->flags |= F_TRUNCATED;
			break;
		}
		n = bpf_probe_read_user_str(&e->data[off & (MAX_DATA - 1)], ARG_LEN, arg);
		if (n <= 0)
			break;
		off += n;
		e->arg++;   /* argc captured */
	}
	e->data_len = off > MAX_DATA ? MAX_DATA : off;
	submit_sys(e, OP_EXEC, t->cookie, id, bpf_ktime_get_ns());
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{ return exec_enter(SC_EXECVE, args->filename, args->argv); }
TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{ return on_exit(args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{ return exec_enter(SC_EXECVEAT, args->filename, args->argv); }
TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{ return on_exit(args->ret, 0); }

/* A fresh exec by name or in a cgroup becomes a target (exec is rare: cheap). */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (trace_allowed(tgid))
		return 0;
	struct comm_key k = {};
	bpf_get_current_comm(&k.comm, sizeof(k.comm));
	struct target *t = comm_targets.lookup(&k);
	if (!t) {
		u64 cg = bpf_get_current_cgroup_id();
		t = cgroup_targets.lookup(&cg);
	}
	if (!t)
		return 0;
	struct target copy = *t;
	add_target(tgid, &copy);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u64 id = bpf_get_current_pid_tgid();
	struct target *t = trace_allowed(id >> 32);
	if (!t)
		return 0;
	/* The parent is inside clone/clone3: a new thread is not a new process. */
	struct inflight *f = slot_of(id);
	if (f && f->id == id && (f->nr == SC_CLONE || f->nr == SC_CLONE3) && (f->a0 & CLONE_THREAD))
		return 0;
	u32 child = args->child_pid;
	struct target copy = *t;
	add_target(child, &copy);
	struct fork_event e = {};
	fill_hdr(&e.hdr, OP_FORK, sizeof(e), t->cookie, id, bpf_ktime_get_ns());
	e.child_tgid = child;
	submit(&e, sizeof(e));
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!trace_allowed(tgid))
		return 0;
	s32 code = args->error_code;
	exit_codes.update(&tgid, &code);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if ((u32)id != tgid || !maybe_target(tgid))
		return 0;   /* a thread (the process lives on), or never a target */
	struct target *t = targets.lookup(&tgid);
	if (t) {
		struct exit_event e = {};
		fill_hdr(&e.hdr, OP_EXIT, sizeof(e), t->cookie, id, bpf_ktime_get_ns());
		s32 *code = exit_codes.lookup(&tgid);
		e.code = code ? *code : -1;
		exit_codes.delete(&tgid);
		targets.delete(&tgid);
		submit(&e, sizeof(e));
	}
	/* After the delete; also when the daemon removed the target first. The daemon's own
	 * bit is the daemon's to clear (a stale one costs a hash lookup, nothing else). */
	u32 w = tgid >> 6;
	u64 *k = target_bits.lookup(&w);
	if (k)
		__sync_fetch_and_and(k, ~(1ULL << (tgid & 63)));
	return 0;
}
