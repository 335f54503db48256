"""Gunicorn's HTTP/1 response, closing a keep-alive connection after a number of requests.

Gunicorn hands a new connection to whichever worker process takes it first, and a
keep-alive connection stays with that process for as long as the client keeps it. A
client with a few long-lived connections (a partner's bot with a pool of eight, a proxy's
upstream pool) gets them dealt out at random: were each to go to either of two web
processes by a coin toss, eight would split 4-4 27% of the time and 6-2 or worse 29% (seen
here: 1-7, 2-6, 2-6, 4-4, 2-6, 3-5, 3-5, 3-5 in eight tries). Each process is one event loop
on one core, so the busier one caps the rate while the other core waits.

So, like nginx's `keepalive_requests`, a connection's Nth answer (`WEB_KEEPALIVE_REQUESTS`,
default 100) says `Connection: close` and the connection ends after it. The client opens
a new one, which usually lands on the less busy process: the one waiting for work when
the connection arrives takes it first. Measured with eight keep-alive clients against the
Procfile's web (two processes, two cores), six alternated runs each: 862 submissions/s
(825-897) with the cap, 760 (595-955) without. The cost is one TCP connect per 100
requests.

No answer is cut short: the header is on the last answer, and gunicorn closes the
connection only once that answer is written, as for any `Connection: close`.
"""

from __future__ import annotations

from gunicorn.http import wsgi


class KeepAliveCappedResponse(wsgi.Response):
    """A response that closes its connection once the connection has served
    `requests_per_connection` requests (0: no cap)."""

    requests_per_connection = 0

    def should_close(self) -> bool:
        cap = self.requests_per_connection
        return super().should_close() or (cap > 0 and self.req.req_number >= cap)


def install(requests_per_connection: int) -> None:
    """Make gunicorn answer HTTP/1 requests in this process with `KeepAliveCappedResponse`.

    Gunicorn's workers call `wsgi.create` without a response class (only HTTP/2 passes its
    own), which then builds the module's `Response`: that one name is what changes. Called
    by this service's worker classes as each worker process starts
    (`trustcard.gunicorn_worker`); a test checks that `wsgi.create` still picks it up."""
    KeepAliveCappedResponse.requests_per_connection = requests_per_connection
    wsgi.Response = KeepAliveCappedResponse  # type: ignore[misc]
