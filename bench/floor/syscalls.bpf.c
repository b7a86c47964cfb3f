/* The floor: the same tracepoints as probes/trace.bpf.c, each program just returns 0. */
#define EMPTY(cat, name) TRACEPOINT_PROBE(cat, name) { return 0; }
#define PAIR(name) EMPTY(syscalls, sys_enter_##name) EMPTY(syscalls, sys_exit_##name)

PAIR(read) PAIR(write) PAIR(pread64) PAIR(pwrite64) PAIR(readv) PAIR(writev)
PAIR(sendto) PAIR(recvfrom) PAIR(sendmsg) PAIR(recvmsg) PAIR(connect) PAIR(accept)
PAIR(accept4) PAIR(openat) PAIR(openat2) PAIR(close) PAIR(clone) PAIR(clone3)
PAIR(fork) PAIR(vfork) PAIR(execve) PAIR(execveat)
EMPTY(syscalls, sys_enter_exit_group)
EMPTY(sched, sched_process_exec)
EMPTY(sched, sched_process_fork)
EMPTY(sched, sched_process_exit)
