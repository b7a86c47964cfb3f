/* Shared kernel<->user contract: op enum, record layouts, maps and the one filter.
 *
 * Mirrored in probes/layout.py; a root test checks the mirror against bcc's view.
 * Only tracepoint args, user memory and helpers are read: never kernel structs,
 * so the distro's generic headers are enough to compile this.
 */
#ifndef PERISCOPE_COMMON_H
#define PERISCOPE_COMMON_H

#define LAYOUT_VERSION 2

#ifndef MAX_DATA
#define MAX_DATA 256          /* payload/path/argv bytes per record (power of two) */
#endif
#ifndef MAX_TARGETS
#define MAX_TARGETS 8192
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 1024    /* 4 MiB */
#endif
#define TARGET_BIT_WORDS 65536   /* u64 words of the target bitmaps: 2^22 tgids */
#ifndef INFLIGHT_SLOTS
#define INFLIGHT_SLOTS 65536  /* in-flight syscalls: slot tid % this (power of two); 3.5 MiB */
#endif
#define ARGV_MAX 16
#define ARG_LEN 64
#define COMM_LEN 16

enum op {
	OP_SYSCALL = 1,   /* a completed syscall (enter+exit paired) */
	OP_EXEC = 2,      /* execve/execveat attempt: filename + argv, read at enter */
	OP_FORK = 3,      /* a targeted process forked: the child inherits the target */
	OP_EXIT = 4,      /* a targeted process exited */
	OP_TLS = 5,       /* SSL_read/SSL_write plaintext (uprobes; sys_event layout) */
};

/* Our syscall ids (not the arch's numbers): stable across kernels and arches. */
enum sc {
	SC_READ = 1, SC_WRITE, SC_READV, SC_WRITEV, SC_PREAD64, SC_PWRITE64,
	SC_SENDTO, SC_RECVFROM, SC_SENDMSG, SC_RECVMSG,
	SC_CONNECT, SC_ACCEPT, SC_ACCEPT4, SC_CLOSE,
	SC_OPENAT, SC_OPENAT2, SC_EXECVE, SC_EXECVEAT,
	SC_CLONE, SC_CLONE3, SC_FORK, SC_VFORK,
	SC_SSL_READ, SC_SSL_WRITE,   /* OP_TLS only: arg holds the SSL* (connection id) */
	SC_SENDFILE,                 /* bytes sent from a file: counted, never copied */
};

/* Record flags. */
#define F_TRUNCATED 0x1   /* data holds fewer bytes than the syscall moved */
#define F_DATA_OUT  0x2   /* data is payload the process sent (else received) */
#define F_PAYLOAD   0x4   /* data is payload bytes (else path/sockaddr/argv or none) */
#define F_CIPHERTEXT 0x8  /* made inside SSL_read/SSL_write: TLS records, never copied */

/* Kernel-side counters (per-CPU array indices), summed by user space. */
enum stat {
	ST_EMITTED = 0,       /* records written to the ring buffer */
	ST_DROP_RINGBUF,      /* ring buffer full: record lost */
	ST_DROP_INFLIGHT,     /* an unfinished syscall's slot taken by another thread (tid collision) */
	ST_MISSING_ENTER,     /* exit without enter (attached mid-syscall) */
	ST_TARGET_FULL,       /* fork/exec inheritance failed: targets map full */
	ST_SKIPPED_SAMPLE,    /* skipped by per-target sampling */
	ST_SKIPPED_RATE,      /* skipped: the process was over its rate limit */
	ST_SHED_OVERLOAD,     /* I/O syscall not recorded: the daemon was overloaded (shedding) */
	ST_MAX,
};

struct event_hdr {
	u8  op;
	u8  version;
	u16 size;        /* bytes of this record, header included */
	u32 cookie;      /* target id the daemon assigned; children inherit it */
	u64 ktime;       /* bpf_ktime_get_ns() at record time */
	u32 tgid;
	u32 tid;
	/* Who, as the kernel saw it at record time: a process that exits before the daemon
	 * reads /proc is still named (and placed in its cgroup, hence its unit). */
	u64 cgroup_id;   /* bpf_get_current_cgroup_id(): the task's cgroup v2 (kernfs id) */
	char comm[COMM_LEN];   /* bpf_get_current_comm(): the thread's name, NUL-padded */
};

struct sys_event {
	struct event_hdr hdr;
	u16 nr;          /* enum sc */
	u16 flags;       /* F_* */
	s32 fd;
	s64 ret;
	u64 latency_ns;
	u64 arg;         /* requested bytes, open flags, or sockaddr length */
	u32 data_len;    /* valid bytes in data[] */
	u32 aux;         /* connect/accept: 1 if data holds a sockaddr */
	u8  data[2 * MAX_DATA];   /* doubled: a length masked with 2*MAX_DATA-1 is provably in bounds */
};
#define SYS_EVENT_HDR_SIZE (sizeof(struct sys_event) - 2 * MAX_DATA)

struct fork_event {
	struct event_hdr hdr;
	u32 child_tgid;
	u32 pad;
};

struct exit_event {
	struct event_hdr hdr;
	s32 code;        /* exit_group() status, or -1 when killed by a signal */
	u32 pad;
};

/* A target: the process is traced, with this cookie and payload cap. */
struct target {
	u32 cookie;
	u32 payload_cap;   /* 0: meta only, no payload bytes copied */
	u32 sample_every;  /* 0/1: every syscall; N: 1 in N (counted when skipped) */
	u32 rate_limit;    /* 0: none; N: at most ~N syscalls/s for this target (rest counted) */
};

#define RATE_SLICE_NS 100000000ULL   /* rate limits are enforced per 100 ms slice */

/* Rate-limit state per target cookie (kernel only): the current slice and its count. */
struct rate {
	u64 slice;
	u64 used;
};

struct comm_key {
	char comm[COMM_LEN];
};

/* Enter-side state of a thread's syscall, in slot tid % INFLIGHT_SLOTS, consumed at exit.
 * `id` (pid_tgid) says whose it is: 0 while free or being written. */
struct inflight {
	u64 id;
	u64 ts;
	u64 a0, a1, a2;
	u32 cookie;
	u32 payload_cap;
	u16 nr;
	u16 pad[3];
};

/* A thread inside SSL_read/SSL_write[_ex] (tls.bpf.c), keyed by pid_tgid: the socket
 * syscall it makes meanwhile carries that connection's ciphertext and tells us its fd. */
struct tls_call {
	u64 ssl;        /* SSL*: identifies the connection within the process */
	u64 buf;
	u64 nbytes_ptr; /* _ex variants: size_t *readbytes / *written */
	u32 cookie;
	u32 payload_cap;
	u64 ts;
	s32 fd;         /* the socket a syscall inside this call used; -1 until one does */
	u32 pad;
};

/* SSL* -> its socket fd, per process: from SSL_set_fd, or learned from a syscall. */
struct ssl_key {
	u32 tgid;
	u32 pad;
	u64 ssl;
};

/* uapi layouts we read from user memory (x86_64/arm64 LP64). */
struct p_iovec {
	u64 base;
	u64 len;
};

struct p_msghdr {
	u64 name;
	s32 namelen;
	s32 pad;
	u64 iov;
	u64 iovlen;
};

#endif /* PERISCOPE_COMMON_H */
