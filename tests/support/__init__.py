"""The plumbing that the integration tests and the scripts in scripts/ share.

One module per job: `paths` (the project root and the virtualenv's executables),
`ports` (spare ports, whether one answers), `waiting` (polling a condition),
`procfile` (the Procfile's command lines and the worker class in them), `processes`
(process groups started and stopped, the process table), `redis_server` (a private
redis-server), `stack` (the app, its workers and web processes for a test),
`procfile_stack` (the whole service as a deploy runs it, for the scripts),
`platform_stack` (TLS Redis, a router, honcho), `browser`, `fuzzing`, `migrations`.

Nothing here imports pytest, so the scripts can use it too; they put the project root on
`sys.path` once (they run as `.venv/bin/python scripts/x.py`, where only scripts/ is).
Fixtures live in the conftest.py files, never here.
"""
