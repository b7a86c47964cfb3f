"""python -m bench.stages [--base TREE]: the pipeline's stages in-process, this tree against
another, side by side: µs of CPU per event (best of 3) on synthetic 256-byte write records
(alphabet or HTTP heads), no root needed. Each tree runs in its own interpreter (its own
PYTHONPATH); rounds alternate the trees.

Stages: Pipeline.process (decode, event build, stream redaction, enrich); serialization
(one orjson.dumps per event before batches, one per batch after); the store (SQLite
rows before, blocks after: aggregates, zstd, one row per block); bytes on disk per event.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.harness import PY, REPO, spread_f

# Runs inside the measured tree's interpreter; prints one JSON line.
_CHILD = r'''
import json, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import orjson
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from collector.store.store import EventStore
from probes.layout import F_DATA_OUT, F_PAYLOAD, HDR, LAYOUT_VERSION, SYS, Op, Sc
from redact import Redactor
content, n = sys.argv[2], int(sys.argv[3])
pid = os.getpid()
def payload(i):
    if content == "alpha":
        return bytes(97 + j % 26 for j in range(256))
    return (f"GET /api/v1/orders/{i}?page={i % 97}&sort=desc HTTP/1.1\r\nHost: shop.example.com"
            f"\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\nCookie: region=eu; "
            f"ab={i % 7}\r\nX-Request-Id: {i * 2654435761:016x}\r\nConnection: keep-alive"
            "\r\n\r\n").encode()[:256].ljust(256, b" ")
def rec(i):
    data = payload(i)
    body = SYS.pack(Sc.WRITE, F_PAYLOAD | F_DATA_OUT, 5, 256, 1500 + i % 5000, 256, 256, 0)
    # the tree's own header: fields after tid (kernel comm, cgroup id) only where it has them
    head = [Op.SYSCALL, LAYOUT_VERSION, HDR.size + len(body) + 256, 9, 10**9 + i * 1000, pid, pid]
    extra = [0, b"bench"][:len(HDR.unpack(bytes(HDR.size))) - len(head)]
    return HDR.pack(*head, *extra) + body + data
batches = [[rec(i) for i in range(b, min(n, b + 1024))] for b in range(0, n, 1024)]
def best(fn):
    out = []
    for _ in range(3):
        t = time.process_time(); fn(); out.append(time.process_time() - t)
    return min(out) / n * 1e6
res = {}
p = Pipeline(Redactor.default(), [], Enricher())
done = []
def process():
    done.clear()
    for b in batches:
        procs = []
        done.append((p.process(b, procs=procs), procs))
res["pipeline.process"] = best(process)
try:
    from collector.capture.events import Batch
except ImportError:
    Batch = None
if Batch is None:
    res["serialize"] = best(lambda: [[orjson.dumps(e) for e in evs] for evs, _p in done])
    bodies = [[orjson.dumps(e) for e in evs] for evs, _p in done]
    with tempfile.TemporaryDirectory() as d:
        st = EventStore(Path(d) / "e.db")
        res["store"] = best(lambda: [st.add_many(evs, bs, pr)
                                     for (evs, pr), bs in zip(done, bodies)])
        st.close()
        res["disk_bytes_per_event"] = sum(f.stat().st_size for f in Path(d).iterdir()) / (3 * n)
else:
    res["serialize"] = best(lambda: [Batch(evs, pr).json() for evs, pr in done])
    with tempfile.TemporaryDirectory() as d:
        st = EventStore(Path(d) / "e.db")
        def put():
            for evs, pr in done:
                b = Batch(evs, pr)
                b.json()  # serialized once for every sink: not the store's cost
                st(b)
            st.flush()
        res["store"] = best(put)
        st.close()
        res["disk_bytes_per_event"] = sum(f.stat().st_size for f in Path(d).iterdir()) / (3 * n)
print(json.dumps(res))
'''


def measure(tree: Path, content: str, n: int) -> dict[str, float]:
    out = subprocess.run([PY, "-c", _CHILD, str(tree), content, str(n)], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="the other tree (e.g. a git worktree of main)")
    ap.add_argument("--n", type=int, default=30_000, help="records per run")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    trees = {"this": REPO} | ({"base": a.base} if a.base else {})
    for content in ("alpha", "http"):
        got: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
        for _ in range(a.rounds):
            for name, tree in trees.items():
                got[name].append(measure(tree, content, a.n))
        print(f"\n{content} 256 B writes, {a.n:,} records, µs of CPU per event, "
              f"median [min..max] of {a.rounds} rounds:")
        keys = list(next(iter(got.values()))[0])
        print(f"  {'stage':<22}" + "".join(f"{name:>30}" for name in trees))
        for key in keys:
            print(f"  {key:<22}" + "".join(
                f"{spread_f([r[key] for r in runs], 1 if key.startswith('disk') else 2):>30}"
                for runs in got.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
