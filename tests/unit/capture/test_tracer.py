"""The tracer's probe lifecycle: compiled ahead (preload), attached only while a target is
acquired, and kept loaded across sessions so a session waits for the attach alone."""

from __future__ import annotations

from pathlib import Path

from collector.capture.tracer import Tracer
from collector.proc.resolve import Resolver
from tests.unit.serve.conftest import FakeProbe


def _tracer(tmp_path: Path, made: list[FakeProbe], probe: type[FakeProbe] = FakeProbe
            ) -> Tracer:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "comm").write_text("x\n")

    def factory() -> FakeProbe:
        made.append(probe())
        return made[-1]

    return Tracer(factory, lambda cookie, cap: (cookie, cap), Resolver(proc, tmp_path / "cg"))


def test_preload_prepares_without_attaching_and_the_session_reuses_it(tmp_path: Path) -> None:
    made: list[FakeProbe] = []
    t = _tracer(tmp_path, made)
    t.preload().join(5)
    assert len(made) == 1 and made[0].prepared and not made[0].loaded
    assert not t.attached  # idle: nothing attached
    t.acquire("s1", "pid", "4242", 0)
    assert t.attached and made[0].loaded and len(made) == 1  # the preloaded probe
    t.release("s1")
    assert not t.attached and made[0].closed and made[0].prepared  # detached, kept loaded
    t.acquire("s2", "pid", "4242", 0)
    assert t.attached and len(made) == 1  # the next session: no second compile
    t.close()
    assert not made[0].prepared


def test_without_preload_the_first_session_prepares(tmp_path: Path) -> None:
    made: list[FakeProbe] = []
    t = _tracer(tmp_path, made)
    assert made == [] and not t.attached
    t.acquire("s1", "pid", "4242", 0)
    assert len(made) == 1 and made[0].loaded
    t.close()


def test_a_session_during_the_preload_waits_for_it_and_uses_its_probe(tmp_path: Path) -> None:
    import threading

    made: list[FakeProbe] = []
    t = _tracer(tmp_path, made)
    go = threading.Event()

    class Slow(FakeProbe):
        def prepare(self) -> None:
            go.wait(5)  # the compile takes a while
            super().prepare()

    t._factory = lambda: made.append(Slow()) or made[-1]  # type: ignore[assignment,func-returns-value]
    pre = t.preload()
    done = threading.Thread(target=t.acquire, args=("s1", "pid", "4242", 0))
    done.start()
    go.set()
    done.join(5)
    assert not done.is_alive() and not pre.is_alive()  # no deadlock on the tracer's lock
    assert t.attached and len(made) == 1 and made[0].loaded
    t.close()


def test_a_new_session_refreshes_the_targets_children_without_re_adding_exited_ones(
        tmp_path: Path) -> None:
    """The kernel added a target's children itself; a second session on the target gives
    them its cap by refreshing their entries: a child that exited in between (still listed
    a moment ago) is not re-added, and no child becomes a pid the daemon added."""

    class Kernel(FakeProbe):
        added: list[int] = []

        def add_pid(self, tgid: int, spec: object) -> None:
            self.added.append(tgid)
            super().add_pid(tgid, spec)

        def pids(self) -> dict[int, int]:
            cookie = self.pid_map.get(4242)
            return {**self.pid_map, 5001: cookie} if cookie is not None else {}

    made: list[FakeProbe] = []
    t = _tracer(tmp_path, made, Kernel)
    t.acquire("s1", "pid", "4242", 0)
    probe = made[0]
    probe.pid_map[5000] = probe.pid_map[4242]  # a child the kernel added at its fork
    t.acquire("s2", "pid", "4242", 64)
    assert set(probe.pid_map) == {4242, 5000}  # 5001 exited: not re-added
    assert set(Kernel.added) == {4242}
    t.close()
