"""`trustcard submit-many FILE`: submit the tasks of a JSON-lines file through POST /tasks/batch.

Every line is checked before anything is sent (its JSON, its job type from the catalogue,
its parameters against the type's model), so a bad line costs nothing and is named by its
number. The tasks then go in batches of up to 1,000, in file order. Each batch carries an
Idempotency-Key of its own, so a batch sent again after a 429 (waiting its Retry-After) or
a dropped answer is never queued twice.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import click
from pydantic import ValidationError

from trustcard.catalogue import JOB_TYPES, find_by_route
from trustcard.cli.client import ApiError
from trustcard.cli.main import EXIT_STATUS_HELP, Context, ExitCode, cli, json_option

MAX_BATCH = 1_000
"""The most tasks POST /tasks/batch takes in one request."""
MAX_RATE_LIMIT_WAITS = 20
"""429s in a row for one batch before giving up (each waits the answer's Retry-After)."""
MAX_SHOWN_PROBLEMS = 20
TASK_INDEX = re.compile(r"^tasks\[(\d+)\]\.?")


@dataclass(frozen=True)
class Line:
    """One task of the file and the line it came from (counting from 1)."""

    number: int
    task: dict[str, Any]


def read_tasks(lines: Iterable[str]) -> tuple[list[Line], list[str]]:
    """The tasks of a JSON-lines text, and a problem per bad line (`line 3: ...`). Blank
    lines are skipped."""
    tasks: list[Line] = []
    problems: list[str] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        task, problem = _check_line(text)
        if problem is not None:
            problems.append(f"line {number}: {problem}")
        else:
            tasks.append(Line(number, task))
    return tasks, problems


def _check_line(text: str) -> tuple[dict[str, Any], str | None]:
    try:
        raw = json.loads(text)
    except ValueError as error:
        return {}, f"not JSON ({error})"
    if not isinstance(raw, dict):
        return {}, 'not a JSON object like {"type": "test.add", "params": {"x": 1, "y": 2}}'
    unknown = sorted(set(raw) - {"type", "params"})
    if unknown:
        return {}, f"{', '.join(unknown)}: not a field of a task (type, params)"
    type_name, params = raw.get("type"), raw.get("params", {})
    job_type = find_by_route(type_name.replace(".", "/")) if isinstance(type_name, str) else None
    if job_type is None:
        return {}, f"type {type_name!r} is not a job type; one of: {', '.join(kind.name for kind in JOB_TYPES)}"
    if not isinstance(params, dict):
        return {}, "params must be a JSON object of parameters"
    try:
        job_type.params.model_validate(params)
    except ValidationError as error:
        return {}, "; ".join(_describe(job_type.name, item) for item in error.errors(include_url=False))
    return {"type": job_type.name, "params": params}, None


def _describe(type_name: str, item: Any) -> str:
    """One parameter problem, in the API's words."""
    parameter = ".".join(str(part) for part in item["loc"]) or "params"
    problem = {"missing": "is required", "extra_forbidden": f"is not a parameter of {type_name}"}.get(
        item["type"], item["msg"].removeprefix("Value error, ")
    )
    return f"{parameter} {problem}"


def batches(tasks: list[Line], size: int) -> Iterable[list[Line]]:
    for start in range(0, len(tasks), size):
        yield tasks[start:start + size]


def send(obj: Context, batch: list[Line], key: str) -> list[dict[str, Any]]:
    """One batch, sent again (same key) after each 429 once its Retry-After has passed."""
    for _ in range(MAX_RATE_LIMIT_WAITS):
        try:
            return list(obj.client.submit_batch([line.task for line in batch], key)["tasks"])
        except ApiError as error:
            if error.status != 429:
                raise
            wait = error.retry_after or 1
            click.echo(f"trustcard: rate limited; sending lines {batch[0].number}-{batch[-1].number} again in {wait} s",
                       err=True)
            time.sleep(wait)
    raise click.ClickException(f"still rate limited after {MAX_RATE_LIMIT_WAITS} waits; try again later")


def line_problems(error: ApiError, batch: list[Line]) -> list[str]:
    """A 422's problems with each `tasks[i]` turned back into the file's line number."""
    problems = error.body.get("problems") if isinstance(error.body, dict) else None
    if not isinstance(problems, list):
        return []
    shown = []
    for problem in problems:
        parameter = str(problem.get("parameter", ""))
        match = TASK_INDEX.match(parameter)
        if match and int(match.group(1)) < len(batch):
            where, parameter = f"line {batch[int(match.group(1))].number}", parameter[match.end():]
        else:
            where = f"lines {batch[0].number}-{batch[-1].number}"
        shown.append(f"{where}: {parameter} {problem.get('problem', '')}".replace(":  ", ": "))
    return shown


@cli.command("submit-many", epilog=EXIT_STATUS_HELP)
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH, show_default=True,
              help="Tasks per request.")
@json_option
@click.pass_context
def submit_many(ctx: click.Context, file: IO[str], batch_size: int) -> None:
    """Submit every task of FILE, a JSON-lines file ('-' for stdin), one task a line:

    \b
      {"type": "test.add", "params": {"x": 1, "y": 2}}
      {"type": "test.long"}

    Every line is checked first; a bad one is named by its number and nothing is sent.
    The task ids are printed one a line, in file order (with --json, the tasks as the
    API answered them). Tasks go in batches of up to 1,000; each batch is queued whole or
    not at all, and should the API refuse a later batch, the earlier ones stay queued
    (their ids are printed). When rate limited, it waits as the API says and goes on.
    """
    obj: Context = ctx.obj
    with file:
        tasks, problems = read_tasks(file)
    if problems:
        for problem in problems[:MAX_SHOWN_PROBLEMS]:
            click.echo(f"trustcard: {problem}", err=True)
        if len(problems) > MAX_SHOWN_PROBLEMS:
            click.echo(f"trustcard: and {len(problems) - MAX_SHOWN_PROBLEMS} more bad lines", err=True)
        click.echo(f"trustcard: {len(problems)} bad lines; nothing was submitted", err=True)
        ctx.exit(ExitCode.ERROR)
    if not tasks:
        raise click.UsageError("the file holds no tasks")
    run = uuid.uuid4().hex
    submitted: list[dict[str, Any]] = []
    try:
        for number, batch in enumerate(batches(tasks, batch_size)):
            accepted = send(obj, batch, f"submit-many-{run}-{number}")
            submitted.extend(accepted)
            if not obj.as_json:
                for task in accepted:
                    click.echo(task["task_id"])
    except ApiError as error:
        for problem in line_problems(error, batch)[:MAX_SHOWN_PROBLEMS]:
            click.echo(f"trustcard: {problem}", err=True)
        _report_partial(obj, submitted, len(tasks))
        raise
    except BaseException:
        _report_partial(obj, submitted, len(tasks))
        raise
    if obj.as_json:
        click.echo(json.dumps({"tasks": submitted}, indent=2))
    else:
        click.echo(f"{len(submitted)} tasks submitted", err=True)


def _report_partial(obj: Context, submitted: list[dict[str, Any]], total: int) -> None:
    if obj.as_json and submitted:
        click.echo(json.dumps({"tasks": submitted}, indent=2))
    click.echo(f"trustcard: {len(submitted)} of {total} tasks were submitted before this error", err=True)

