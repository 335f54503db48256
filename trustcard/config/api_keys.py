"""Clients allowed in with a key of their own: `API_KEYS` and the single `API_KEY`.

Only each key's SHA-256 is kept, so that a platform's config may hold the hash instead of
the key itself (`name:sha256:<hex>`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from trustcard.config.errors import ConfigError

SINGLE_API_KEY_NAME = "api-key"
"""The client name under which the single `API_KEY` is known."""
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_KEY = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ApiClient:
    """One client allowed in with its own key, known by the key's SHA-256 only."""

    name: str
    key_sha256: str


@dataclass(frozen=True)
class ApiKeyList:
    """The kind of `API_KEYS`: `name:key,name:sha256:<hex>,...`, read as clients."""

    default: tuple[ApiClient, ...] = ()

    def read(self, name: str, raw: str) -> tuple[ApiClient, ...]:
        entries = filter(None, (part.strip() for part in raw.split(",")))
        return tuple(_client(name, position, entry) for position, entry in enumerate(entries, start=1))

    @property
    def accepts(self) -> str:
        return "`name:key,name:sha256:<hex>,...`"

    @property
    def example(self) -> str:
        return ""


def _client(variable: str, position: int, entry: str) -> ApiClient:
    name, separator, key = entry.partition(":")
    name, key = name.strip(), key.strip()
    if not separator or not key:
        raise ConfigError(f"{variable} entry {position} must look like name:key, got {name!r} with no key.")
    if not _CLIENT_NAME.match(name):
        raise ConfigError(
            f"{variable} entry {position}: the client name must be 1 to 64 of A-Z a-z 0-9 . _ -, got {name!r}."
        )
    hashed = _SHA256_KEY.match(key)
    if hashed:
        return ApiClient(name, hashed.group(1).lower())
    if key.lower().startswith("sha256:"):
        raise ConfigError(f"{variable} entry {position} ({name}): a sha256: key must be 64 hex digits.")
    if len(key) < 16:
        raise ConfigError(f"{variable} entry {position} ({name}): a key must be at least 16 characters.")
    return ApiClient(name, hashlib.sha256(key.encode()).hexdigest())


def with_single_key(named: tuple[ApiClient, ...], single: str | None) -> tuple[ApiClient, ...]:
    """The named clients plus the single `API_KEY`'s, each name and each key given once."""
    clients = list(named)
    if single:
        clients.append(ApiClient(SINGLE_API_KEY_NAME, hashlib.sha256(single.encode()).hexdigest()))
    names = [client.name for client in clients]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"API_KEYS names a client more than once: {', '.join(repeated)}.")
    digests = [client.key_sha256 for client in clients]
    if len(set(digests)) != len(digests):
        raise ConfigError("API_KEYS (with API_KEY) gives the same key to two clients; each client needs its own.")
    return tuple(clients)
