"""`redis+sentinel://` URLs: where the sentinels are and which master they watch.

The form is the one rq-dashboard's `redis-sentinel-url` reads,
`redis+sentinel://[user:password@]host:port[,host:port...]/<service name>[/<db>]`, plus
`rediss+sentinel://` for TLS to the master (that package knows no TLS, so this parser is
our own). The credentials are the master's; sentinels that want a password of their own
take `?sentinel_password=`. No Redis import: the settings validate URLs with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT = 26379
QUERY_OPTIONS = ("sentinel_password", "ssl_cert_reqs", "ssl_ca_certs")
"""What the query may set; anything else is refused rather than silently ignored."""
FORM = "redis+sentinel://host:port[,host:port...]/<service name>[/<db>]"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed sentinel URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: tuple[tuple[str, str], ...] = ()
    """The query's options, in `QUERY_OPTIONS`."""

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of `url`, or ValueError with one sentence saying what is wrong (it names
    no password: start-up prints it)."""
    if not is_sentinel_url(url):
        raise ValueError(f"a sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}")
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    sentinels = tuple(_sentinel(entry) for entry in hosts.split(","))
    path = [part for part in parts.path.split("/")]
    if len(path) < 2 or not path[1]:
        raise ValueError(f"names no service: the form is {FORM}")
    if len(path) > 3:
        raise ValueError(f"has more path than /<service name>/<db>: the form is {FORM}")
    db = 0
    if len(path) == 3 and path[2]:
        if not path[2].isdigit():
            raise ValueError(f"has the database {path[2]!r}: it must be a whole number (the form is {FORM})")
        db = int(path[2])
    options = tuple(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted({name for name, _ in options} - set(QUERY_OPTIONS))
    if unknown:
        raise ValueError(f"has the unknown option {unknown[0]!r} (known: {', '.join(QUERY_OPTIONS)})")
    return SentinelURL(sentinels, unquote(path[1]), db, username, password,
                       tls=url.startswith("rediss+"), options=options)


def _sentinel(entry: str) -> tuple[str, int]:
    host, colon, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host:
        raise ValueError(f"lists a sentinel without a host ({entry!r}): the form is {FORM}")
    if not colon:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"gives the sentinel {entry!r} a port that is not a number from 1 to 65535")
    return host, int(port)
