/* A minimal "JIT": copies a machine-code loop into anonymous executable memory, announces
 * it in /tmp/perf-PID.map (the perf-map format JITs write) and runs it forever. x86-64. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
	/* mov rax, rdi; loop: dec rax; jnz loop; ret */
	static const unsigned char code[] = {0x48, 0x89, 0xf8, 0x48, 0xff, 0xc8, 0x75, 0xfb, 0xc3};
	unsigned char *page = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return 1;
	memcpy(page + 64, code, sizeof(code));
	char path[64];
	snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
	FILE *f = fopen(path, "w");
	if (!f)
		return 1;
	fprintf(f, "%lx %zx jit_hot_loop\n", (unsigned long)(page + 64), sizeof(code));
	fclose(f);
	void (*fn)(unsigned long) = (void (*)(unsigned long))(page + 64);
	for (;;)
		fn(100000000UL);
}
