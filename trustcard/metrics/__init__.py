"""The figures behind `GET /metrics`, kept in Redis so that every process agrees on them.

Web processes on any number of machines answer scrapes, and workers on any number of
machines end tasks, so no figure may live in one process's memory: each end of a task and
each answer to a submission is a `HINCRBY` on a few Redis hashes, sent with the Redis call
that records it where there is one, and read back at scrape time.

- `outcomes`: what is counted, and under which label values;
- `store`: how the counts are kept in Redis (the writes, best effort: counting never fails
  a task or a request);
- `ends`: the ends of a task that happen outside a worker's success and failure handling
  (a waiting task cancelled, an abandoned task settled), counted once each;
- `collector`: how they are read, as a prometheus_client collector.

Only `collector` imports prometheus_client; workers import the rest.
"""
