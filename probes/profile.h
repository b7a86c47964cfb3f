/* profile.bpf.c's contract with probes/profile.py: the counts key and the stats indices.
 *
 * Mirrored in probes/profile.py (SAMPLE_KEY, ProfileStat); Profiler.load() checks the
 * key size against the kernel's.
 */
#ifndef PERISCOPE_PROFILE_H
#define PERISCOPE_PROFILE_H

#ifndef STACK_STORAGE
#define STACK_STORAGE 8192        /* distinct stacks kept (user and kernel share the map) */
#endif
#ifndef PROFILE_MAX_COUNTS
#define PROFILE_MAX_COUNTS 16384  /* distinct (tgid, user, kernel, comm) keys */
#endif
#define PROFILE_MAX_TARGETS 1024
#define PROFILE_COMM_LEN 16

#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef ENOMEM
#define ENOMEM 12
#endif

/* Kernel-side counters (per-CPU array indices), summed by user space. */
enum profile_stat {
	PST_SAMPLES = 0,          /* samples of targeted processes */
	PST_USER_COLLISION,       /* user stack lost: hash collision in the stack map */
	PST_USER_FULL,            /* user stack lost: stack map full */
	PST_KERNEL_COLLISION,     /* kernel stack lost: hash collision */
	PST_KERNEL_FULL,          /* kernel stack lost: stack map full */
	PST_COUNTS_FULL,          /* whole sample lost: counts map full */
	PST_MAX,
};

struct sample_key {
	u32 tgid;
	s32 user_stack;           /* stack id, or a negative errno */
	s32 kernel_stack;
	char comm[PROFILE_COMM_LEN];   /* the thread's name */
};

#endif /* PERISCOPE_PROFILE_H */
