"""`trustcard`: submit, follow, cancel and list tasks from a terminal, over the HTTP API.

Exit status: 0 completed (or the command worked), 1 the task failed, 2 the task was
cancelled, 3 a usage, API or connection error.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from trustcard.catalogue import JOB_TYPES, find_by_route
from trustcard.cli.client import ApiClient, ApiError, ConnectionFailed

EXIT_FAILED, EXIT_CANCELLED, EXIT_ERROR = 1, 2, 3
POLL_SECONDS = 0.25
ENDED = ("completed", "failed", "cancelled")


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value`: the value as JSON when it parses (7, 2.5, true), else as text."""
    name, equals, raw = text.partition("=")
    if not equals or not name:
        raise click.BadParameter(f"{text!r} is not name=value")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif isinstance(data, dict):
        for key, value in data.items():
            click.echo(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    else:
        click.echo(data)


class Context:
    def __init__(self, url: str, api_key: str | None, as_json: bool) -> None:
        self.client = ApiClient(url, api_key)
        self.as_json = as_json


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="TRUSTCARD_URL", default="http://127.0.0.1:8000", show_default=True,
              help="Base URL of the API (env TRUSTCARD_URL).")
@click.option("--api-key", envvar="API_KEY", default=None, help="Bearer key for /tasks (env API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, as_json: bool) -> None:
    """Client of the TrustCard queue service.

    Exit status: 0 done, 1 task failed, 2 task cancelled, 3 usage, API or connection error.
    """
    ctx.obj = Context(url, api_key, as_json)


@cli.command()
@click.argument("job_type")
@click.argument("params", nargs=-1)
@click.option("--wait", is_flag=True, help="Follow the task with a progress bar until it ends.")
@click.pass_obj
def submit(obj: Context, job_type: str, params: tuple[str, ...], wait: bool) -> None:
    """Submit JOB_TYPE (e.g. test.add or test/add) with PARAMS as name=value."""
    kind = find_by_route(job_type.replace(".", "/"))
    if kind is None:
        raise click.UsageError(f"unknown job type {job_type!r}; see `trustcard types`")
    task = obj.client.submit(kind.name, dict(parse_param(param) for param in params))
    if not wait:
        emit(task if obj.as_json else {"task_id": task["task_id"], "status": task["status"]}, obj.as_json)
        return
    if not obj.as_json:
        click.echo(f"task {task['task_id']} submitted", err=True)
    finish(obj, follow(obj, task["task_id"]))


def follow(obj: Context, task_id: str) -> dict[str, Any]:
    """Poll until the task ends, drawing a bar of its percent and stage on stderr when interactive."""
    show_bar = not obj.as_json and sys.stderr.isatty()
    last_stage = None
    with click.progressbar(length=100, label="running", file=sys.stderr, show_eta=False,
                           item_show_func=lambda stage: stage) as bar:
        while True:
            task = obj.client.task(task_id)
            progress = task.get("progress") or {}
            percent = int(progress.get("percent") or 0)
            stage = progress.get("stage")
            if show_bar:
                bar.update(max(0, percent - bar.pos), stage)
            elif stage and stage != last_stage and not obj.as_json:
                click.echo(f"[{percent:3d}%] {stage}", err=True)
            last_stage = stage
            if task["status"] in ENDED:
                if show_bar and task["status"] == "completed":
                    bar.update(100 - bar.pos, stage)
                return task
            time.sleep(POLL_SECONDS)


def finish(obj: Context, task: dict[str, Any]) -> None:
    if obj.as_json:
        emit(task, True)
    elif task["status"] == "completed":
        click.echo(json.dumps(task["result"]))
    else:
        click.echo(f"task {task['task_id']} {task['status']}: {task['error']}", err=True)
    if task["status"] == "failed":
        sys.exit(EXIT_FAILED)
    if task["status"] == "cancelled":
        sys.exit(EXIT_CANCELLED)


@cli.command()
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Follow the task until it ends.")
@click.pass_obj
def status(obj: Context, task_id: str, wait: bool) -> None:
    """Show a task: status, progress, result, error."""
    task = follow(obj, task_id) if wait else obj.client.task(task_id)
    if wait:
        finish(obj, task)
    else:
        emit(task, obj.as_json)


@cli.command()
@click.argument("task_id")
@click.pass_obj
def cancel(obj: Context, task_id: str) -> None:
    """Cancel a waiting or running task."""
    emit(obj.client.cancel(task_id), obj.as_json)


@cli.command()
@click.pass_obj
def running(obj: Context) -> None:
    """List the tasks running now."""
    answer = obj.client.running()
    if obj.as_json:
        emit(answer, True)
        return
    for task in answer["tasks"]:
        progress = task.get("progress") or {}
        click.echo(f"{task['task_id']}  {task['name']}  {progress.get('percent', '-')}%  {progress.get('stage', '')}"
                   f"  worker {task['worker']}  since {task['started_at']}")
    click.echo(f"{answer['count']} running")


@cli.command()
@click.pass_obj
def health(obj: Context) -> None:
    """Queue depths, worker count and the state of Redis and the database."""
    answer = obj.client.health()
    emit(answer, obj.as_json)
    if answer.get("status") != "healthy":
        sys.exit(EXIT_ERROR)


@cli.command()
@click.pass_obj
def types(obj: Context) -> None:
    """List the job types and their parameters."""
    listing = [
        {"name": kind.name, "queue": kind.queue, "parameters": list(kind.params.model_fields), "summary": kind.summary}
        for kind in JOB_TYPES
    ]
    if obj.as_json:
        emit(listing, True)
        return
    for kind in listing:
        click.echo(f"{kind['name']:<24} {' '.join(p + '=...' for p in kind['parameters']):<22} {kind['summary']}")


def main() -> None:
    """Entry point: API and connection errors become one line and exit status 3."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_ERROR)
    except (ApiError, ConnectionFailed) as error:
        click.echo(f"trustcard: {error}", err=True)
        sys.exit(EXIT_ERROR)
