"""Instagram post URLs: validated, and normalised to one canonical form per post.

A post's shortcode names its media whatever the path calls it (`/p/X/`, `/reel/X/` and
`/tv/X/` open the same post), so the canonical form is `https://www.instagram.com/p/<X>/`:
the same post submitted twice, in any spelling, is the same analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
HOSTS = frozenset({"instagram.com", "www.instagram.com", "m.instagram.com"})
KINDS = frozenset({"p", "reel", "tv"})
SHORTCODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class PostURLRefused(ValueError):
    """The URL is not an Instagram post; the message says what is wrong with it."""


@dataclass(frozen=True)
class PostURL:
    url: str
    """The canonical form."""
    shortcode: str


def parse_post_url(value: object) -> PostURL:
    """The canonical form of an Instagram post, reel or tv URL, or `PostURLRefused`."""
    if not isinstance(value, str):
        raise PostURLRefused("must be a string")
    text = value.strip()
    if not text:
        raise PostURLRefused("is empty")
    if len(text) > MAX_URL_LENGTH:
        raise PostURLRefused(f"is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL.search(text):
        raise PostURLRefused("contains spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise PostURLRefused(f"cannot be read as a URL ({error})") from None
    if not parts.scheme:
        raise PostURLRefused("has no scheme: it must start with https://")
    if parts.scheme.lower() not in ("http", "https"):
        raise PostURLRefused(f"has the scheme {parts.scheme!r}: only https and http are accepted")
    if parts.username is not None or parts.password is not None:
        raise PostURLRefused("carries credentials (user@host): Instagram URLs have none")
    host = (parts.hostname or "").lower()
    if not host:
        raise PostURLRefused("has no host")
    if host not in HOSTS:
        raise PostURLRefused(f"is on {host!r}, not Instagram (instagram.com, www.instagram.com or m.instagram.com)")
    if port is not None and port != {"http": 80, "https": 443}[parts.scheme.lower()]:
        raise PostURLRefused(f"names the port {port}: Instagram is served on the default port")
    segments = parts.path.split("/")[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash
    if not segments or segments[0].lower() not in KINDS:
        raise PostURLRefused("is not a post: the path must be /p/<shortcode>/, /reel/<shortcode>/ or /tv/<shortcode>/")
    if len(segments) < 2 or not segments[1]:
        raise PostURLRefused(f"has no shortcode after /{segments[0]}/")
    if len(segments) > 2:
        raise PostURLRefused(f"has more path after the shortcode ({'/'.join(segments[2:])!r})")
    shortcode = segments[1]
    if not SHORTCODE.match(shortcode):
        raise PostURLRefused("has a shortcode that is not 1 to 64 letters, digits, '_' or '-'")
    return PostURL(f"https://www.instagram.com/p/{shortcode}/", shortcode)
