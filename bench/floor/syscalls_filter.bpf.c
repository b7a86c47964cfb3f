/* Our hooks with only the untargeted path: one hash lookup by tgid, then return. */
BPF_HASH(targets, u32, u32, 8192);

static __always_inline int filter(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 *t = targets.lookup(&tgid);
	return t ? 1 : 0;
}

#define HOOK(cat, name) TRACEPOINT_PROBE(cat, name) { filter(); return 0; }
#define PAIR(name) HOOK(syscalls, sys_enter_##name) HOOK(syscalls, sys_exit_##name)

PAIR(read) PAIR(write) PAIR(pread64) PAIR(pwrite64) PAIR(readv) PAIR(writev)
PAIR(sendto) PAIR(recvfrom) PAIR(sendmsg) PAIR(recvmsg) PAIR(connect) PAIR(accept)
PAIR(accept4) PAIR(openat) PAIR(openat2) PAIR(close) PAIR(clone) PAIR(clone3)
PAIR(fork) PAIR(vfork) PAIR(execve) PAIR(execveat)
