#!/usr/bin/env python3
"""Chaos soak: mixed traffic for a set time while processes are SIGKILLed and Redis restarts,
then a drain and a check that no accepted task was lost, stuck, wrong or run twice unexplained.

    .venv/bin/python scripts/chaos.py                       # 2 minutes at the default settings
    .venv/bin/python scripts/chaos.py --duration 600 --seed 1 --keep-log
    .venv/bin/python scripts/chaos.py --ci                  # the suite's size, about 2 minutes in all

It starts the Procfile's release, web (gunicorn, gevent) and worker lines (supervisors, each
with its job process and RQ's scheduler in its loop) on a private redis-server with an
append-only file (fsynced every second) and a SQLite file, at the default settings. Clients
submit test.tally (counts its runs in Redis), add, sleep, long, fail, batches and analyses,
and cancel some tasks and analyses, at about --rate requests per second. Meanwhile, every
--fault-interval seconds on average, one fault (tests/support/chaos_faults.py; each kind once
per round, in random order): SIGKILL of a gunicorn worker, of the gunicorn master (the web line
is restarted), of a worker supervisor (the worker line is restarted), of a job process, of the
supervisor holding the scheduler lock (the scheduler runs in a supervisor's loop), or a restart
of Redis with SIGTERM (which fsyncs the append-only file). `--redis-kill` adds SIGKILL of Redis:
with appendfsync everysec Redis may then lose the last second of acknowledged writes, its
documented limit; a task lost that way (accepted within 2 s before such a kill) is counted
apart and does not fail the run.

Then every line is made to run again, and each accepted task is read through the API until it
ends or --drain-timeout passes (tests/support/chaos_check.py). It prints a table (faults by
kind, accepted, ended by outcome, lost, stuck, wrong, runs, time to drain) and exits 1 when a
task was lost, stuck, wrong or run more often than its record explains.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from tests.support.chaos_check import Verdict, check_executions, drain  # noqa: E402
from tests.support.chaos_faults import ALL_KINDS, FAULT_KINDS, REDIS_KILL, FaultInjector  # noqa: E402
from tests.support.chaos_traffic import Traffic  # noqa: E402
from tests.support.procfile_stack import ProcfileStack, StackFailed, procfile_stack  # noqa: E402

CI_SIZE = {"duration": 40.0, "rate": 6.0, "fault_interval": 3.0, "drain_timeout": 150.0}
"""Every fault kind at least twice, in about two minutes with the drain."""


class Timeline:
    """The soak's own lines (faults, accepted ids, cancels), with the wall time, in a file
    beside the stack's log: what a lost task's story is read from."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path, self.echo = path, echo
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} chaos: {line}"
        with self._lock:
            self._file.write(stamped + "\n")
        if self.echo and not line.startswith(("accepted", "cancelled")):
            print(stamped, flush=True)

    def close(self) -> None:
        self._file.close()


def inject_faults(injector: FaultInjector, rng: random.Random, interval: float, stop: threading.Event) -> None:
    """One fault every `interval` seconds on average until `stop` is set."""
    while not stop.wait(rng.uniform(0.5, 1.5) * interval):
        injector.inject(injector.next_kind())


def waiting_jobs(stack: ProcfileStack) -> int:
    """Jobs on the queues and scheduled (a retry's back-off): the backlog the drain starts with."""
    client = stack.redis.local_client(socket_timeout=10)
    try:
        queues = sum(client.llen(key) for key in client.scan_iter("rq:queue:*") if client.type(key) == b"list")
        scheduled = sum(client.zcard(key) for key in client.scan_iter("rq:scheduled:*"))
        return queues + scheduled
    finally:
        client.close()


def table(
    injector: FaultInjector, traffic: Traffic, verdict: Verdict, backlog: int, args: argparse.Namespace
) -> str:
    accepted = len(traffic.accepted)
    analyses = sum(1 for task in traffic.accepted if task.is_analysis)
    refused = sum(count for answer, count in traffic.answers.items()
                  if not answer.startswith(("202", "200", "409")))
    rows = [("fault", "injected")]
    rows += [(kind, str(injector.injected[kind])) for kind in injector.kinds]
    rows += [
        ("tasks accepted", f"{accepted} ({analyses} analyses), {refused} requests refused or unanswered"),
        ("jobs waiting when the traffic stopped", str(backlog)),
        *[(f"ended {outcome}", str(verdict.outcomes[outcome])) for outcome in ("completed", "failed", "cancelled")],
        ("lost (must be 0)", str(len(verdict.lost))),
        ("stuck (must be 0)", str(len(verdict.stuck))),
        ("wrong result or end (must be 0)", str(len(verdict.wrong))),
        ("cancelled by a DELETE that got no answer or a 503", str(verdict.cancelled_unanswered)),
        ("ran more than once, explained by the record", str(verdict.explained_reruns)),
        ("ran more than once, unexplained (must be 0)", str(len(verdict.unexplained_runs))),
        ("time to drain", f"{verdict.drain_seconds:.1f} s"),
    ]
    if REDIS_KILL in injector.kinds:
        rows.insert(-1, ("lost within Redis' 1 s fsync window (not failing)", str(len(verdict.lost_to_redis_kill))))
    width = max(len(row[0]) for row in rows)
    lines = [f"| {rows[0][0]:<{width}} | {rows[0][1]} |", f"| {'-' * width} | --- |"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows[1:]]
    lines.append(f"\n{args.duration:.0f} s of traffic at about {args.rate:g} requests/s, a fault every "
                 f"{args.fault_interval:g} s on average, seed {args.seed}, {args.workers} workers, "
                 f"{args.web_processes} web processes (gunicorn workers)")
    return "\n".join(lines)


def details(injector: FaultInjector, traffic: Traffic, verdict: Verdict) -> str:
    lines = ["failure reasons:"]
    lines += [f"  {count:5}  {reason}" for reason, count in verdict.failure_reasons.most_common(12)]
    lines.append("answers: " + ", ".join(f"{answer} x{count}" for answer, count in sorted(traffic.answers.items())))
    if injector.skipped:
        lines.append("faults skipped (no target at that moment): "
                     + ", ".join(f"{kind} x{count}" for kind, count in injector.skipped.items()))
    for label, items in (("LOST", [(task, "404") for task in verdict.lost]), ("STUCK", verdict.stuck),
                         ("WRONG", verdict.wrong), ("UNEXPLAINED RUNS", verdict.unexplained_runs)):
        for task, why in items[:20]:
            accepted_at = time.strftime("%H:%M:%S", time.localtime(task.accepted_at))
            lines.append(f"{label}: {task.kind} {task.id} (accepted {accepted_at}): {why}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of traffic and faults")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second, about")
    parser.add_argument("--fault-interval", type=float, default=5.0, help="seconds between faults, on average")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds allowed for every task to end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3, help="worker lines (supervisors)")
    parser.add_argument("--web-processes", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--redis-kill", action="store_true", help="also SIGKILL Redis (may lose its last second)")
    parser.add_argument("--keep-log", action="store_true", help="keep the stack's log and the timeline")
    parser.add_argument("--ci", action="store_true", help=f"the suite's small size: {CI_SIZE}")
    parser.add_argument("--quiet", action="store_true", help="print only the table and what went wrong")
    args = parser.parse_args()
    if args.ci:
        for name, value in CI_SIZE.items():
            setattr(args, name, value)

    scratch = Path(tempfile.mkdtemp(prefix="trustcard-chaos-"))
    timeline = Timeline(scratch / "chaos.log", echo=not args.quiet)
    rng = random.Random(args.seed)
    try:
        with procfile_stack(scratch, {"WEB_CONCURRENCY": str(args.web_processes)}, workers=args.workers,
                            appendonly=True) as stack:
            injector = FaultInjector(stack, rng, timeline.say, ALL_KINDS if args.redis_kill else FAULT_KINDS)
            traffic = Traffic(stack.url, args.rate, args.seed, timeline.say)
            stop_faults = threading.Event()
            faults = threading.Thread(target=inject_faults, args=(injector, rng, args.fault_interval, stop_faults))
            timeline.say(f"stack up at {stack.url}; traffic and faults for {args.duration:g} s")
            faults.start()
            try:
                traffic.run(args.duration)
            finally:
                stop_faults.set()
                faults.join()
            injector.ensure_running()
            backlog = waiting_jobs(stack)
            timeline.say(f"traffic over: {len(traffic.accepted)} accepted, {backlog} jobs waiting; draining")
            verdict, final = drain(stack.url, traffic.accepted, args.drain_timeout, injector.redis_kills)
            client = stack.redis.local_client(socket_timeout=10)
            try:
                check_executions(client, traffic.accepted, final, verdict)
            finally:
                client.close()
            timeline.say("drained; stopping the stack")
    except StackFailed as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2
    finally:
        timeline.close()
        if not args.keep_log:
            shutil.rmtree(scratch, ignore_errors=True)

    print(table(injector, traffic, verdict, backlog, args))
    print(details(injector, traffic, verdict))
    if args.keep_log:
        print(f"logs kept: {scratch / 'stack.log'} (the processes), {scratch / 'chaos.log'} (the soak's timeline)")
    print("PASSED: nothing lost, stuck, wrong or run twice unexplained" if verdict.passed else
          "FAILED: see above")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
