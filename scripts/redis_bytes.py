"""Where Redis' bytes go for each finished task, at the default settings.

    .venv/bin/python scripts/redis_bytes.py [--tasks N] [--idempotency-keys]

Starts the Procfile's stack (release, web, one worker) on a private redis-server,
submits N `test.add` tasks through the HTTP API (each with an `Idempotency-Key` when
asked), waits until every one reads completed, and prints `MEMORY USAGE` per kind of key
(task ids replaced by `<id>`) per task: the job hash, the result record, the registries'
entries, execution records, our own counters and keys. Then one job hash, field by field.
The database is the stack's own; everything stops at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from redis import Redis  # noqa: E402

from tests.support.procfile_stack import procfile_stack  # noqa: E402
from tests.support.redis_memory import hash_field_bytes, per_task, snapshot  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402


def submit(connection: http.client.HTTPConnection, index: int, idempotency: bool) -> str:
    headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotency else {}
    connection.request("POST", f"/tasks/test/add?x={index}&y=1", headers=headers)
    answer = connection.getresponse()
    body = answer.read()
    if answer.status != 202:
        raise RuntimeError(f"submission answered {answer.status}: {body!r}")
    return str(json.loads(body)["task_id"])


def completed(connection: http.client.HTTPConnection, task_id: str) -> bool:
    connection.request("GET", f"/tasks/{task_id}")
    answer = connection.getresponse()
    return answer.status == 200 and json.loads(answer.read())["status"] == "completed"


def measure(tasks: int, idempotency: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="trustcard-bytes-") as scratch, \
            procfile_stack(Path(scratch), {}) as stack:
        redis = Redis.from_url(stack.redis_url)
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
        submit(connection, 0, idempotency)  # first task: the shared keys (counters, registries) exist
        time.sleep(0.5)
        before = snapshot(redis)
        ids = [submit(connection, index, idempotency) for index in range(1, tasks + 1)]
        wait_until(lambda: completed(connection, ids[-1]), 120, "the last task completed")
        wait_until(lambda: all(completed(connection, task_id) for task_id in ids), 120, "every task completed")
        time.sleep(1)  # the counts written after the answer, and the worker's idle state
        after = snapshot(redis)
        grown = per_task(before, after, tasks)
        lines = [f"{tasks} `test.add` tasks through the API, finished, default settings"
                 f"{' (each with an Idempotency-Key)' if idempotency else ''}:", "",
                 "| key kind | bytes per task |", "| --- | --- |"]
        lines += [f"| `{kind}` | {value:,.0f} |" for kind, value in grown.items()]
        lines += [f"| **total** | **{(after.total - before.total) / tasks:,.0f}** |", "",
                  f"One job hash (`rq:job:{ids[-1]}`), value length per field:",
                  json.dumps(hash_field_bytes(redis, f"rq:job:{ids[-1]}"), indent=1),
                  f"encoding: {redis.object('encoding', f'rq:job:{ids[-1]}')!r}"]
        redis.close()
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500, help="tasks to finish (500)")
    parser.add_argument("--idempotency-keys", action="store_true", help="send each with an Idempotency-Key")
    args = parser.parse_args(argv)
    print(measure(args.tasks, args.idempotency_keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
