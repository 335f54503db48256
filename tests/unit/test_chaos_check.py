"""The chaos soak's judge: which ends of a cancelled task are right."""

from __future__ import annotations

import pytest

from tests.support.chaos_check import Verdict, judge
from tests.support.chaos_traffic import Accepted


def _tally(**cancel: object) -> Accepted:
    return Accepted(id="t1", kind="tally", expected=1, accepted_at=0.0, **cancel)  # type: ignore[arg-type]


@pytest.mark.parametrize("unanswered", ["no answer", "503"])
def test_a_cancel_cut_off_or_answered_503_that_took_effect_is_counted_apart_not_wrong(unanswered: str) -> None:
    verdict = Verdict()
    judge(_tally(cancel_unanswered=unanswered), {"status": "cancelled"}, verdict)
    assert (verdict.cancelled_unanswered, verdict.wrong) == (1, [])


@pytest.mark.parametrize(("task", "end"), [
    (_tally(cancelled=True), "completed"),  # a DELETE answered 200 must end cancelled
    (_tally(), "cancelled"),  # nobody asked
])
def test_a_cancel_that_did_not_hold_or_one_nobody_asked_for_is_wrong(task: Accepted, end: str) -> None:
    verdict = Verdict()
    judge(task, {"status": end, "result": 1}, verdict)
    assert len(verdict.wrong) == 1, verdict.wrong
