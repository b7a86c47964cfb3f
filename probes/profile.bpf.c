/* On-CPU stack sampling for targeted processes: a perf_event program on the software
 * CPU clock (one event per online CPU, attached by probes/profile.py).
 *
 * Each sample of a targeted tgid records its user and kernel stack ids (stack map) and
 * counts them by (tgid, user stack, kernel stack, comm). Everything else returns at the
 * first hash lookup. Read-only: only helpers that read (pid, comm, stacks); no kernel
 * structs besides the perf_event context, which bcc's uapi header declares.
 */
#include <uapi/linux/bpf_perf_event.h>

#include "profile.h"

BPF_HASH(profile_targets, u32, u8, PROFILE_MAX_TARGETS);
BPF_HASH(counts, struct sample_key, u64, PROFILE_MAX_COUNTS);
BPF_STACK_TRACE(stacks, STACK_STORAGE);
BPF_PERCPU_ARRAY(profile_stats, u64, PST_MAX);

static __always_inline void pcount(int idx)
{
	u64 *v = profile_stats.lookup(&idx);
	if (v)
		(*v)++;
}

/* A negative id: -EFAULT means "no stack of this kind" (kernel stack of a sample taken
 * in user mode, user stack of a kernel thread) and is normal; -EEXIST (a hash collision
 * in the stack map) and -ENOMEM (the map is full) lose the stack, so they are counted. */
static __always_inline void stack_error(int id, int collision, int full)
{
	if (id == -EEXIST)
		pcount(collision);
	else if (id == -ENOMEM)
		pcount(full);
}

int profile_sample(struct bpf_perf_event_data *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!profile_targets.lookup(&tgid))
		return 0;
	pcount(PST_SAMPLES);
	struct sample_key key = {};
	key.tgid = tgid;
	key.user_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
	key.kernel_stack = stacks.get_stackid(ctx, 0);
	stack_error(key.user_stack, PST_USER_COLLISION, PST_USER_FULL);
	stack_error(key.kernel_stack, PST_KERNEL_COLLISION, PST_KERNEL_FULL);
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	u64 *n = counts.lookup(&key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	u64 one = 1;
	int err = counts.insert(&key, &one);
	if (err == -EEXIST) {   /* another CPU inserted the key first */
		n = counts.lookup(&key);
		if (n)
			__sync_fetch_and_add(n, 1);
	} else if (err) {
		pcount(PST_COUNTS_FULL);   /* this sample is lost: the counts map is full */
	}
	return 0;
}
