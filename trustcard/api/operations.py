"""How a route declares its OpenAPI operation, next to the route: `@documented(Operation(...))`.

A declaration names the operation, its parameters and body (models where there are
models), its answers (with their models), and the exceptions the route may raise. The
document (`trustcard.api.openapi`) walks the app's URL map and reads each view's
declaration: a route is documented where it is defined, and the path, the methods and the
path parameters' names come from the route itself. Error answers are generated from the
exception classes (`trustcard.api.error_answers`), never written here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from trustcard.catalogue import JobType

if TYPE_CHECKING:
    from trustcard.config import Settings
    from trustcard.exceptions import TrustCardError

View = TypeVar("View", bound=Callable[..., Any])
DECLARATION = "openapi_operation"
"""The view function's attribute that holds its declaration (`functools.wraps` copies it)."""


@dataclass(frozen=True)
class Parameter:
    """A query, header or path parameter that is not a field of a model."""

    name: str
    location: Literal["query", "header", "path"]
    description: str
    schema: Mapping[str, Any]
    required: bool = False
    example: str | None = None

    def to_openapi(self) -> dict[str, Any]:
        parameter = {
            "name": self.name,
            "in": self.location,
            "required": self.required,
            "description": self.description,
            "schema": dict(self.schema),
        }
        if self.example is not None:
            parameter["example"] = self.example
        return parameter


@dataclass(frozen=True)
class Header:
    """A header of an answer."""

    description: str
    schema: Mapping[str, Any]
    required: bool = True

    def to_openapi(self) -> dict[str, Any]:
        return {"description": self.description, "required": self.required, "schema": dict(self.schema)}


@dataclass(frozen=True)
class Answer:
    """A status the route answers with on its own (errors come from `raises`): a model,
    another media type's schema, or no body."""

    description: str
    body: type[BaseModel] | Mapping[str, Any] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, Header] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    """Operation ids the answer's `task_id` may be passed to next."""


@dataclass(frozen=True)
class Raises:
    """An exception the route may raise, with this route's words for when (default: the
    class's own, its docstring's first paragraph)."""

    error: type[TrustCardError]
    reason: str | None = None


@dataclass(frozen=True)
class Guard:
    """A bearer scheme that a setting switches on (`API_KEY`, `METRICS_TOKEN`)."""

    scheme: str
    description: str
    is_on: Callable[[Settings], bool]
    refusal: str
    """Why the 401 is answered, when the guard is on."""
    optional_when_off: bool
    """Off: the scheme is listed as accepted but not needed (True), or not at all (False)."""


@dataclass(frozen=True)
class Operation:
    """One method on one path."""

    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    description: str | None = None
    query_model: type[BaseModel] | None = None
    """Each field an optional query parameter (it may come in the body instead)."""
    parameters: tuple[Parameter, ...] = ()
    body: type[BaseModel] | None = None
    body_description: str = ""
    raises: tuple[type[TrustCardError] | Raises, ...] = ()
    guard: Guard | None = None
    rate_limited: bool = False
    """Subject to the per-client submission limit: 429, and RateLimit-* on its answers."""

    def raised(self) -> list[Raises]:
        return [item if isinstance(item, Raises) else Raises(item) for item in self.raises]


PerJobType = Callable[[JobType], Operation]
"""A declaration for a rule that serves every catalogued job type (`/tasks/<path:job_route>`):
the document has one path per job type, each with that type's own operation."""


def documented(declaration: Operation | PerJobType) -> Callable[[View], View]:
    """Attach `declaration` to the view; put it right under the route decorator."""

    def mark(view: View) -> View:
        setattr(view, DECLARATION, declaration)
        return view

    return mark


def declaration_of(view: Callable[..., Any]) -> Operation | PerJobType | None:
    found: Operation | PerJobType | None = getattr(view, DECLARATION, None)
    return found
