"""`trustcard`: submit, follow, cancel and list tasks from a terminal, over the HTTP API.

The command is a plain client of the API: it reads the job types from the catalogue
(pure data) and never imports Flask, RQ or the database layer. Results go to stdout,
progress and errors to stderr, so the output pipes cleanly.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

import click

from trustcard.catalogue import JOB_TYPES, JobType, find_by_route
from trustcard.cli.client import ApiClient, ApiError, ConnectionFailed
from trustcard.cli.progress import display_for, follow_events

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """The exit status of `trustcard`, the same for every command."""

    OK = 0
    FAILED = 1
    CANCELLED = 2
    ERROR = 3
    INTERRUPTED = 130


OUTCOMES = {"completed": ExitCode.OK, "failed": ExitCode.FAILED, "cancelled": ExitCode.CANCELLED}
"""The exit status for each way a task can end."""

EXIT_STATUS_HELP = """\b
Exit status:
  0    the command worked; with --wait, the task completed
  1    the task failed (its error is printed on stderr)
  2    the task was cancelled
  3    a usage error, an error answer from the API, or no API at the address
  130  interrupted while waiting (the task itself carries on)"""


class Context:
    """What every command needs: the API client and the output mode."""

    def __init__(self, url: str, api_key: str | None, as_json: bool) -> None:
        self.client = ApiClient(url, api_key)
        self.as_json = as_json


class TrustCardGroup(click.Group):
    """Click's group with our exit statuses: usage errors are 3 (2 means "cancelled" here),
    API and connection errors are one line on stderr and 3, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name or "trustcard", complete_var, False, **extra)
        except click.ClickException as error:
            error.show()
            sys.exit(ExitCode.ERROR)
        except (ApiError, ConnectionFailed) as error:
            click.echo(f"trustcard: {describe(error)}", err=True)
            sys.exit(ExitCode.ERROR)
        except click.Abort:
            click.echo("trustcard: interrupted", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        except OSError as error:
            if error.errno != errno.EPIPE:  # `trustcard running | head` closed the pipe: not an error
                raise
            sys.exit(ExitCode.OK)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


def describe(error: ApiError | ConnectionFailed) -> str:
    """One line that says what went wrong and, where it helps, what to change."""
    if isinstance(error, ConnectionFailed):
        return f"{error} (is the service running? set --url or TRUSTCARD_URL)"
    details = [f"HTTP {error.status}"] if error.code == "http_error" else [error.code, f"HTTP {error.status}"]
    if error.status == 401:
        details.append("set --api-key or API_KEY")
    return f"{error.message} ({', '.join(details)})"


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and isinstance(ctx.obj, Context):  # the group's callback has made it by now
        ctx.obj.as_json = True


def json_option(command: F) -> F:
    """`--json` after the command name too: `trustcard submit test.add x=1 y=2 --json`."""
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
                        help="Print only the JSON answer on stdout.")(command)


@click.group(
    "trustcard",
    cls=TrustCardGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP,
)
@click.option("--url", envvar="TRUSTCARD_URL", default=DEFAULT_URL, show_default=True, metavar="URL",
              help="The API's base URL [env TRUSTCARD_URL].")
@click.option("--api-key", envvar="API_KEY", default=None, metavar="KEY",
              help="Sent as 'Authorization: Bearer KEY' [env API_KEY].")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON answer on stdout (no progress).")
@click.version_option(package_name="trustcard-queue", prog_name="trustcard")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None, as_json: bool) -> None:
    """Drive the TrustCard queue service from a terminal, over its HTTP API.

    \b
    Examples:
      trustcard types
      trustcard submit test.add x=7 y=8 --wait
      trustcard submit test.long --wait
      trustcard status TASK_ID
      trustcard --json running
    """
    ctx.obj = Context(url, api_key, as_json)


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value`: the value as JSON when it parses (7, 2.5, true, [1, 2]), else as text."""
    name, equals, raw = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="NAME=VALUE")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def _params(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for text in values:
        name, value = parse_param(text)
        if name in params:
            raise click.BadParameter(f"{name} is given twice", param_hint="NAME=VALUE")
        params[name] = value
    return params


def _job_type(_ctx: click.Context, _param: click.Parameter, value: str) -> JobType:
    job_type = find_by_route(value.replace(".", "/"))
    if job_type is None:
        known = ", ".join(kind.name for kind in JOB_TYPES)
        raise click.BadParameter(f"unknown job type {value!r}; one of: {known}", param_hint="JOB_TYPE")
    return job_type


@cli.command(epilog=EXIT_STATUS_HELP)
@click.argument("job_type", callback=_job_type)
@click.argument("params", nargs=-1, metavar="[NAME=VALUE]...", callback=_params)
@click.option("--wait", "-w", is_flag=True,
              help="Follow the task with a progress bar until it ends, then print its result.")
@json_option
@click.pass_context
def submit(ctx: click.Context, job_type: JobType, params: dict[str, Any], wait: bool) -> None:
    """Submit a task of JOB_TYPE with its parameters.

    JOB_TYPE is a name from `trustcard types`, written test.add or test/add. Each
    VALUE is read as JSON when it parses (7, 2.5, true, "7"), else taken as text.

    \b
    Examples:
      trustcard submit test.add x=7 y=8 --wait
      trustcard submit test.sleep seconds=2
      trustcard submit analysis.process_post url=https://www.instagram.com/p/ABC123/
    """
    obj: Context = ctx.obj
    task = obj.client.submit(job_type.name, params)
    if not wait:
        emit(task if obj.as_json else {"task_id": task["task_id"], "status": task["status"]}, obj.as_json)
        return
    if not obj.as_json:
        click.echo(f"task {task['task_id']} submitted ({job_type.name})", err=True)
    ctx.exit(finish(obj, wait_for(obj, task["task_id"])))


@cli.command(epilog=EXIT_STATUS_HELP)
@click.argument("task_id")
@click.option("--wait", "-w", is_flag=True, help="Follow the task until it ends, then print its result.")
@json_option
@click.pass_context
def status(ctx: click.Context, task_id: str, wait: bool) -> None:
    """Show a task: its status, progress, result or error.

    Without --wait the exit status is 0 whatever the task's state; with it, the
    task's outcome decides (below).
    """
    obj: Context = ctx.obj
    if wait:
        ctx.exit(finish(obj, wait_for(obj, task_id)))
    emit(obj.client.task(task_id), obj.as_json)


@cli.command()
@click.argument("task_id")
@json_option
@click.pass_obj
def cancel(obj: Context, task_id: str) -> None:
    """Cancel a waiting or running task.

    A task that has already ended cannot be cancelled: the API answers 409 and the
    exit status is 3.
    """
    emit(obj.client.cancel(task_id), obj.as_json)


@cli.command()
@json_option
@click.pass_obj
def running(obj: Context) -> None:
    """List the tasks running now, with their progress and worker."""
    answer = obj.client.running()
    if obj.as_json:
        emit(answer, True)
        return
    rows = [
        (task["task_id"], task.get("name") or "-", _percent(task), _stage(task), task.get("worker") or "-",
         task.get("started_at") or "-")
        for task in answer["tasks"]
    ]
    if rows:
        _table(("TASK", "TYPE", "DONE", "STAGE", "WORKER", "STARTED"), rows)
    click.echo(f"{answer['count']} running")


@cli.command(short_help="Show Redis, database, worker count and queue depths.")
@json_option
@click.pass_context
def health(ctx: click.Context) -> None:
    """Show whether Redis and the database answer, how many workers run, how deep each queue is.

    The exit status is 3 when the service reports itself unhealthy.
    """
    obj: Context = ctx.obj
    answer = obj.client.health()
    if obj.as_json:
        emit(answer, True)
    else:
        queues = answer.get("queues")
        order = ("status", "failing", "redis", "database", "workers", "queues")
        shown = {key: answer[key] for key in order if key in answer} | answer
        shown["queues"] = " ".join(f"{name}={depth}" for name, depth in queues.items()) if queues else None
        if "failing" in shown:
            shown["failing"] = ", ".join(shown["failing"])
        emit(shown, False)
    if answer.get("status") != "healthy":
        ctx.exit(ExitCode.ERROR)


@cli.command()
@json_option
@click.pass_obj
def types(obj: Context) -> None:
    """List the job types and their parameters ([NAME=...] is optional)."""
    listing = [describe_job_type(kind) for kind in JOB_TYPES]
    if obj.as_json:
        emit(listing, True)
        return
    rows = []
    for kind in listing:
        params = " ".join(
            f"{p['name']}=<{p['type']}>" if p["required"] else f"[{p['name']}=<{p['type']}>]"
            for p in kind["parameters"]
        )
        rows.append((kind["name"], params or "-", kind["summary"]))
    _table(("TYPE", "PARAMETERS", "WHAT IT DOES"), rows)


def describe_job_type(kind: JobType) -> dict[str, Any]:
    """A job type as plain data: name, queue, summary and each parameter's type and default."""
    properties = kind.params.model_json_schema().get("properties", {})
    parameters = []
    for name, field in kind.params.model_fields.items():
        parameters.append({
            "name": name,
            "type": properties.get(name, {}).get("type", "value"),
            "required": field.is_required(),
            "default": None if field.is_required() else field.default,
            "description": field.description,
        })
    return {"name": kind.name, "queue": kind.queue, "summary": kind.summary, "parameters": parameters}


def wait_for(obj: Context, task_id: str) -> dict[str, Any]:
    """Follow the task until it ends; Ctrl-C stops following (exit 130), not the task."""
    try:
        return follow_events(
            lambda last_id: obj.client.events(task_id, last_id),
            lambda: obj.client.task(task_id),
            display_for(sys.stderr, obj.as_json),
        )
    except KeyboardInterrupt:
        click.echo(f"stopped following task {task_id}; it carries on: trustcard status {task_id} --wait",
                   err=True)
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None


def finish(obj: Context, task: dict[str, Any]) -> ExitCode:
    """Print an ended task (its result on stdout, or why it did not complete on stderr)."""
    if obj.as_json:
        emit(task, True)
    elif task["status"] == "completed":
        result = task["result"]
        click.echo(result if isinstance(result, str) else json.dumps(result, indent=2))
    else:
        click.echo(f"task {task['task_id']} {task['status']}: {task.get('error') or 'no reason given'}", err=True)
    return OUTCOMES[task["status"]]


def emit(data: Any, as_json: bool) -> None:
    """JSON for scripts, or `key: value` lines for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = max((len(key) for key in data), default=0) + 2
    for key, value in data.items():
        shown = "-" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else value
        click.echo(f"{key + ':':<{width}}{shown}")


def _percent(task: dict[str, Any]) -> str:
    progress = task.get("progress") or {}
    return f"{progress['percent']}%" if "percent" in progress else "-"


def _stage(task: dict[str, Any]) -> str:
    return str((task.get("progress") or {}).get("stage") or "-")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(f"{str(cell):<{width}}" for cell, width in zip(row, widths)).rstrip())


def main() -> None:
    """Entry point of the `trustcard` script."""
    cli()
