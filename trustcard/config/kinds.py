"""How one environment variable's text becomes a value, and how that rule reads in the docs.

A kind holds a variable's default, reads its text (already stripped, never empty: an empty
value means the default), and says in a few words what it accepts, for the README's table.
A value it refuses raises `ConfigError` with one sentence that starts with the variable's
name, so that start-up can print it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from trustcard.config.errors import ConfigError
from trustcard.sentinel_url import is_sentinel_url, parse_sentinel_url

T_co = TypeVar("T_co", covariant=True)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Kind(Protocol[T_co]):
    """What every kind offers: its default, its reading, and its rule in words."""

    @property
    def default(self) -> T_co: ...

    def read(self, name: str, raw: str) -> T_co:
        """The value of `raw` (stripped, not empty), or `ConfigError` naming `name`."""
        ...

    @property
    def accepts(self) -> str:
        """What the variable accepts, in Markdown, for the README's table."""
        ...

    @property
    def example(self) -> str:
        """The default as written in `.env.example` (empty: no value)."""
        ...


def _quoted(words: tuple[str, ...], last: str = "or") -> str:
    shown = [f"`{word}`" for word in words]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {last} {shown[-1]}"


@dataclass(frozen=True)
class Text:
    """Free text; with `prefixes`, it must start with one of them (`problem` says so)."""

    default: str
    prefixes: tuple[str, ...] = ()
    problem: str = ""

    def read(self, name: str, raw: str) -> str:
        if self.prefixes and not raw.startswith(self.prefixes):
            raise ConfigError(f"{name} {self.problem}, got {raw!r}.")
        return raw

    @property
    def accepts(self) -> str:
        return f"starts with {_quoted(self.prefixes)}" if self.prefixes else "text"

    @property
    def example(self) -> str:
        return self.default


@dataclass(frozen=True)
class RedisURL(Text):
    """A Redis URL: `prefixes` as for `Text`, and a sentinel URL must also parse, so that a
    malformed one stops start-up with one sentence rather than a traceback at first use."""

    def read(self, name: str, raw: str) -> str:
        value = super().read(name, raw)
        if is_sentinel_url(value):
            try:
                parse_sentinel_url(value)
            except ValueError as problem:
                raise ConfigError(f"{name} {problem}.") from None
        return value


@dataclass(frozen=True)
class OptionalText:
    """Text that may be left out: unset (or empty) reads as None."""

    default: None = None

    def read(self, name: str, raw: str) -> str:
        return raw

    @property
    def accepts(self) -> str:
        return "text"

    @property
    def example(self) -> str:
        return ""


@dataclass(frozen=True)
class Number:
    """A whole number between `minimum` and `maximum` (None: no upper bound), both included."""

    default: int
    minimum: int
    maximum: int | None

    def read(self, name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None
        if self.maximum is None and value < self.minimum:
            raise ConfigError(f"{name} must be at least {self.minimum}, got {value}.")
        if self.maximum is not None and not self.minimum <= value <= self.maximum:
            raise ConfigError(f"{name} must be between {self.minimum} and {self.maximum}, got {value}.")
        return value

    @property
    def accepts(self) -> str:
        if self.maximum is None:
            return f"whole number, at least {self.minimum}"
        return f"whole number, {self.minimum} to {self.maximum}"

    @property
    def example(self) -> str:
        return str(self.default)


@dataclass(frozen=True)
class Choice:
    """One word of `choices`, in any case (read in lower case)."""

    default: str
    choices: tuple[str, ...]

    def read(self, name: str, raw: str) -> str:
        value = raw.lower()
        if value not in self.choices:
            raise ConfigError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}.")
        return value

    @property
    def accepts(self) -> str:
        return _quoted(self.choices)

    @property
    def example(self) -> str:
        return self.default


@dataclass(frozen=True)
class Flag:
    """On or off: 1/true/yes/on or 0/false/no/off, in any case."""

    default: bool

    def read(self, name: str, raw: str) -> bool:
        value = raw.lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{name} must be 1 or 0 (true or false), got {value!r}.")

    @property
    def accepts(self) -> str:
        return "`1` or `0` (also true/false, yes/no, on/off)"

    @property
    def example(self) -> str:
        return "1" if self.default else "0"


def is_off(raw: str) -> bool:
    """Whether `raw` leaves a switch off (empty does). Unlike `Flag`, any other word counts
    as on: used where a stray value must err on the side of refusing (FLASK_DEBUG in
    production)."""
    return raw.strip().lower() in ("", *_FALSE)
