"""The chaos soak's verdict: after the drain, how every accepted task ended.

Each task is read through the API (`GET /tasks/<id>`, `GET /analyses/<id>`) until it ends or the
drain's deadline passes. Lost: the API no longer knows it (404). Stuck: not ended by the
deadline. Wrong: completed with another result, a test.fail that completed, failed without a
reason, cancelled unasked (a DELETE that got no answer or a 503 may have done its work before
the web or Redis went away: not wrong, counted apart; DELETE is idempotent, asking again answers
409 with the end), or a cancel answered 200 that did not end cancelled. Executions (the
`test.tally` tasks): the job's own count in Redis against the runs its record explains: one per
retry its job hash shows used (RQ's `retries_left` against the catalogue's retries; RQ writes no
result for a run it retries), one per entry of RQ's results stream that is not a success (a
hand-back, a failure as abandoned or killed), and the one that completed.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.support.chaos_traffic import ANY, Accepted
from tests.support.http_connection import KeepAliveConnection
from trustcard.catalogue import BY_NAME
from workers.diagnostics import TALLY_KEY_PREFIX

ENDED = ("completed", "failed", "cancelled")
SUCCESSFUL_RESULT = b"1"
"""`rq.results.Result.Type.SUCCESSFUL` as its stream entries store it."""
POLL_SECONDS = 0.5


@dataclass
class Verdict:
    outcomes: Counter[str] = field(default_factory=Counter)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    lost: list[Accepted] = field(default_factory=list)
    lost_to_redis_kill: list[Accepted] = field(default_factory=list)
    stuck: list[tuple[Accepted, str]] = field(default_factory=list)
    wrong: list[tuple[Accepted, str]] = field(default_factory=list)
    explained_reruns: int = 0
    cancelled_unanswered: int = 0
    """Ended cancelled after a DELETE that got no answer or a 5xx (the web or Redis went away during it)."""
    unexplained_runs: list[tuple[Accepted, str]] = field(default_factory=list)
    drain_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.lost or self.stuck or self.wrong or self.unexplained_runs)


def drain(url: str, accepted: list[Accepted], timeout: float, redis_kills: list[float]) -> tuple[Verdict, dict]:
    """Poll every accepted task until it ends or `timeout` passes; returns the verdict (without
    the executions check) and the final views by id."""
    verdict = Verdict()
    parsed = urllib.parse.urlsplit(url)
    connection = KeepAliveConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=15)
    started = time.monotonic()
    deadline = started + timeout
    waiting = {task.id: task for task in accepted}
    final: dict[str, dict[str, Any]] = {}
    last_seen: dict[str, str] = {}
    while waiting:
        for task_id, task in list(waiting.items()):
            path = f"/analyses/{task_id}" if task.is_analysis else f"/tasks/{task_id}"
            try:
                status, view = connection.request_json("GET", path)
            except (OSError, http.client.HTTPException, ValueError):
                connection.close()
                continue
            if status == 404:
                lost_to_kill = any(0 <= kill - task.accepted_at <= 2.0 for kill in redis_kills)
                (verdict.lost_to_redis_kill if lost_to_kill else verdict.lost).append(task)
                del waiting[task_id]
            elif status == 200:
                last_seen[task_id] = view.get("status", "?")
                if view.get("status") in ENDED:
                    final[task_id] = view
                    del waiting[task_id]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    connection.close()
    verdict.drain_seconds = time.monotonic() - started
    verdict.stuck = [(task, last_seen.get(task.id, "unreadable")) for task in waiting.values()]
    for task in accepted:
        if task.id in final:
            judge(task, final[task.id], verdict)
    return verdict, final


def judge(task: Accepted, view: dict[str, Any], verdict: Verdict) -> None:
    """Count `task`'s end and note what is wrong with it."""
    status = view["status"]
    verdict.outcomes[status] += 1
    if task.cancelled and status != "cancelled":
        verdict.wrong.append((task, f"a cancel answered 200, but it ended {status}"))
    elif status == "cancelled" and not task.cancelled and task.cancel_unanswered:
        verdict.cancelled_unanswered += 1  # a request cut off mid-way may have done its work
    elif status == "cancelled" and not task.cancelled:
        why = f"its DELETE answered {task.cancel_unanswered}" if task.cancel_unanswered else "nobody cancelled it"
        verdict.wrong.append((task, f"cancelled, but {why}"))
    elif status == "failed":
        reason = view.get("error")
        if not reason:
            verdict.wrong.append((task, "failed without a reason"))
        verdict.failure_reasons[f"{task.kind}: {reason_kind(task, reason or '')}"] += 1
    elif status == "completed":
        problem = wrong_result(task, view)
        if problem:
            verdict.wrong.append((task, problem))


def wrong_result(task: Accepted, view: dict[str, Any]) -> str | None:
    if task.expected is ANY:
        return "test.fail completed"
    if task.is_analysis:
        stages = view.get("stages") or []
        if not stages or any(stage.get("status") != "completed" for stage in stages):
            return f"completed with stages {[stage.get('status') for stage in stages]}"
        if (view.get("result") or {}).get("stages", {}).keys() != {stage["name"] for stage in stages}:
            return f"completed with the result {view.get('result')!r}"
        return None
    if view.get("result") != task.expected:
        return f"completed with {view.get('result')!r}, expected {task.expected!r}"
    return None


def reason_kind(task: Accepted, reason: str) -> str:
    """A failure reason without its task-specific part, for counting."""
    if task.kind == "fail" and "DeliberateFailure: chaos-" in reason:
        return "DeliberateFailure (on purpose)"
    return reason[:90]


def check_executions(client: redis.Redis, accepted: list[Accepted], final: dict[str, dict], verdict: Verdict) -> None:
    """Each ended tally task ran once, or more times only as its record explains."""
    declared_retries = BY_NAME["test.tally"].retries
    for task in accepted:
        view = final.get(task.id)
        if task.kind != "tally" or view is None:
            continue
        runs = int(client.get(TALLY_KEY_PREFIX + task.id) or 0)
        entries = client.xrange(f"rq:results:{task.id}")
        not_successes = sum(1 for _, fields in entries if fields.get(b"type") != SUCCESSFUL_RESULT)
        retries_left = client.hget(f"rq:job:{task.id}", "retries_left")
        retried = declared_retries - int(retries_left) if retries_left is not None else 0
        allowed = retried + not_successes + (1 if view["status"] == "completed" else 0)
        if view["status"] == "cancelled":
            allowed = max(allowed, 1)  # stopped while it ran, or cancelled before it started
        if runs > allowed:
            verdict.unexplained_runs.append(
                (task, f"ran {runs} times; its record explains {allowed} ({retried} retried, {not_successes} ended "
                       "without completing)"))
        elif view["status"] == "completed" and runs == 0:
            verdict.unexplained_runs.append((task, "completed, but its job never ran"))
        elif runs > 1:
            verdict.explained_reruns += 1
