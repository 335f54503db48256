"""The shared harness (tests/support) itself: what the integration tests and scripts rely on."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import BIN, venv_command
from tests.support.ports import free_port, port_answers
from tests.support.procfile import procfile_line, with_worker_class, worker_class
from tests.support.processes import ProcessGroup, process_tree, running
from tests.support.waiting import TimedOut, wait_until


def test_the_worker_class_is_read_from_the_procfile_and_can_be_swapped() -> None:
    line = procfile_line("worker")
    assert line[:2] == ["rq", "worker"]
    ours = worker_class()
    assert "." in ours and ours in line
    stock = with_worker_class(line, None)
    assert "--worker-class" not in stock and ours not in stock
    simple = with_worker_class(line, "rq.SimpleWorker")
    assert worker_class(simple) == "rq.SimpleWorker" and simple[:2] == ["rq", "worker"]
    assert [word for word in simple if word not in ("--worker-class", "rq.SimpleWorker")] == stock
    assert worker_class(["rq", "worker", "--worker-class=a.B"]) == "a.B"
    with pytest.raises(LookupError):
        procfile_line("no-such-type")


def test_procfile_programs_come_from_the_virtualenv() -> None:
    assert venv_command(procfile_line("web"))[0] == str(BIN / "gunicorn")
    assert venv_command(["no-such-program-here", "x"]) == ["no-such-program-here", "x"]


def test_wait_until_returns_the_value_or_fails_naming_what() -> None:
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, "a value", interval=0.001) == 7
    started = time.monotonic()
    with pytest.raises(TimedOut, match="timed out after 0.2 s: the impossible"):
        wait_until(lambda: False, 0.2, "the impossible", interval=0.01)
    assert time.monotonic() - started < 2

    def refuses() -> bool:
        raise ConnectionRefusedError

    with pytest.raises(TimedOut):
        wait_until(refuses, 0.1, "a server", interval=0.01, ignore=(OSError,))
    with pytest.raises(ConnectionRefusedError):  # not ignored: at once
        wait_until(refuses, 5, "a server")


def test_free_port_is_free_and_port_answers_sees_a_listener() -> None:
    port = free_port()
    assert not port_answers(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_answers(port)


def test_a_process_group_is_stopped_with_its_children(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print('up', flush=True); time.sleep(60)"
    )
    group = ProcessGroup.start("sleeper", [sys.executable, "-c", script], {}, tmp_path / "sleeper.log")
    wait_until(lambda: "up" in group.log() and len(process_tree(group.pid)) == 2, 10, "the child to start")
    tree = process_tree(group.pid)
    assert group.stop(grace=5) is not None
    assert not any(running(pid) for pid in tree)



def test_redis_memory_names_kinds_of_key_and_divides_growth_by_tasks() -> None:
    """`tests/support/redis_memory` (MEMORY USAGE itself needs a real Redis: the scripts and
    tests/integration/test_lean_results.py use it there)."""
    from collections import Counter

    from tests.support.redis_memory import MemorySnapshot, key_kind, per_task

    assert key_kind(b"rq:job:4f1c2b3a-1111-2222-3333-444455556666") == "rq:job:<id>"
    assert key_kind(b"rq:worker:" + b"a" * 32) == "rq:worker:<id>"
    assert key_kind(b"rq:finished:analysis") == "rq:finished:analysis"
    before = MemorySnapshot(Counter({"rq:finished:analysis": 100, "rq:worker:<id>": 500}), Counter())
    after = MemorySnapshot(Counter({"rq:finished:analysis": 500, "rq:worker:<id>": 400, "rq:job:<id>": 2_400,
                                    "trustcard:metrics:submissions": 101}), Counter())
    assert per_task(before, after, 4) == {"rq:job:<id>": 600, "rq:finished:analysis": 100,
                                          "trustcard:metrics:submissions": 25.25}
