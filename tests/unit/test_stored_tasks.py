"""The scale fill stores tasks as the service does: the API reads each as completed or failed."""

from __future__ import annotations

import fakeredis

from tests.support import stored_tasks
from tests.support.stored_tasks import fill
from trustcard.config import load_settings
from trustcard.task_service import TaskService


def test_filled_tasks_read_back_through_the_api_as_completed_or_failed(fake_redis: fakeredis.FakeRedis,
                                                                        monkeypatch) -> None:
    monkeypatch.setattr(stored_tasks, "TEMPLATE_EVERY", 7)  # several templates, chunks cut across them
    monkeypatch.setattr(stored_tasks, "CHUNK_TASKS", 5)
    settings = load_settings({"SECRET_KEY": "unit"})
    filled = fill(fake_redis, settings, 30, 12)
    assert fake_redis.zcard("rq:finished:analysis") == 30 and fake_redis.zcard("rq:failed:analysis") == 12
    assert fake_redis.llen("rq:queue:analysis") == 0 and fake_redis.zcard("rq:wip:analysis") == 0
    assert not fake_redis.keys("rq:worker:*") and not fake_redis.keys("rq:execution:*")
    service = TaskService(fake_redis, settings)
    for task_id in filled.finished:
        view = service.get(task_id)
        assert (view.status, view.result, view.name) == ("completed", 15, "test.add")
    for task_id in filled.failed:
        view = service.get(task_id)
        assert view.status == "failed" and stored_tasks.FAILURE_MESSAGE in view.error
    assert len(set(filled.finished + filled.failed)) == 8  # the first two and last two of each kind
