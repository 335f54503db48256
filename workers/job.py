"""`CatalogueJob`: an RQ job that runs only functions the job catalogue names.

The check happens before the function's module is imported, so a job pushed
straight into Redis with some other dotted path fails without running any of it,
and its error says why.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from trustcard.catalogue import BY_FUNCTION


class JobNotCatalogued(Exception):
    """The job names a function that is not in the catalogue."""


class CatalogueJob(Job):
    def _execute(self) -> Any:
        if self.func_name not in BY_FUNCTION:
            raise JobNotCatalogued(
                f"Refused to run {self.func_name!r}: workers run only the functions in the job catalogue."
            )
        return super()._execute()
