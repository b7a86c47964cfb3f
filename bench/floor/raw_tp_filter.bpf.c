/* What an untargeted task would pay with a raw-tracepoint design: one hash lookup
 * by tgid per enter and exit, then return (an in-program switch on the syscall id
 * would only run for targets). */
BPF_HASH(targets, u32, u32, 8192);

static __always_inline int filter(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 *t = targets.lookup(&tgid);
	return t ? 1 : 0;
}

RAW_TRACEPOINT_PROBE(sys_enter) { filter(); return 0; }
RAW_TRACEPOINT_PROBE(sys_exit) { filter(); return 0; }
