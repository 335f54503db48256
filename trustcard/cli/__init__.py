"""The `trustcard` command: a client of the HTTP API, for people at a terminal."""

from trustcard.cli import analyse as _analyse  # noqa: F401  registers `trustcard analyse` on the group
from trustcard.cli import submit_many as _submit_many  # noqa: F401  registers `trustcard submit-many`
