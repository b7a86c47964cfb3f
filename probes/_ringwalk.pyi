"""Types of the C twin of probes/ringbuf.walk (probes/_ringwalk.c)."""

def walk(data: memoryview, mask: int, cons: int, prod: int, limit: int, out: list[bytes],
         /) -> int: ...
