"""`.env.example` and the README's settings tables, written from the declarations.

Neither file is edited by hand: `python -m trustcard.config --write` rewrites both from
`trustcard/config/declarations.py`, and a unit test fails when a committed one differs.
"""

from __future__ import annotations

import re
import textwrap

from trustcard.config.declarations import (
    COMMAND_LINE,
    PROCESS_VARIABLES,
    RUN_SCRIPT,
    SECTIONS,
    SERVICE,
    SETTINGS,
    WEB_SERVER,
    Variable,
)

README_BEGIN = (
    "<!-- settings tables: written by `python -m trustcard.config --write`; edit trustcard/config/declarations.py -->"
)
README_END = "<!-- end of the settings tables -->"
WIDTH = 100
ENV_EXAMPLE_HEADER = """\
# Every setting of the TrustCard queue service, with its default. Copy to .env for local
# runs (scripts/run, the web and the worker read it; the real environment wins over it).
# Variables the service does not know are ignored; a malformed value stops start-up with
# one sentence that names it. An empty value means "use the default".
# Written by `python -m trustcard.config --write` from trustcard/config/declarations.py:
# edit the declarations there, not this file.
"""
CAPTIONS = {
    SERVICE: "Read by the service (`trustcard/config`), the web and the workers alike:",
    WEB_SERVER: "Read by the web server's `gunicorn.conf.py` (a bad value stops it the same way):",
    RUN_SCRIPT: "Read by `scripts/run` only:",
    COMMAND_LINE: "Read by the `trustcard` command line only:",
}


def variables_of(section: str) -> list[Variable]:
    """The variables one program reads, settings first, in their declared order."""
    return [variable for variable in (*SETTINGS, *PROCESS_VARIABLES) if variable.section == section]


def plain(markdown: str) -> str:
    """Markdown's code and bold marks taken out, for a comment line."""
    return re.sub(r"\*\*|`", "", markdown)


def env_example() -> str:
    """The whole `.env.example`: each variable's meaning as a comment, then its default."""
    parts = [ENV_EXAMPLE_HEADER]
    for section in SECTIONS:
        parts.append(f"\n# --- {section} ".ljust(89, "-") + "\n")
        for variable in variables_of(section):
            lines = textwrap.wrap(_comment(variable), WIDTH, initial_indent="# ", subsequent_indent="# ")
            parts.extend(f"{line}\n" for line in lines)
            value = variable.kind.example if variable.example is None else variable.example
            parts.append(f"{variable.name}={value}\n")
    return "".join(parts)


def _sentence(markdown: str) -> str:
    text = plain(markdown)
    return f"{text[0].upper()}{text[1:]}."


def _comment(variable: Variable) -> str:
    """The meaning, then what the variable accepts, then its default when words say it."""
    sentences = [_sentence(variable.meaning)]
    if variable.kind.accepts != "text":
        sentences.append(_sentence(variable.kind.accepts))
    if variable.default_words is not None:
        sentences.append(_sentence(f"default: {variable.default_words}"))
    return " ".join(sentences)


def _default(variable: Variable) -> str:
    if variable.default_words is not None:
        return variable.default_words
    example = variable.kind.example
    return f"`{example}`" if example else "unset"


def markdown_tables() -> str:
    """One Markdown table per program that reads variables: name, default, accepted values, meaning."""
    parts: list[str] = []
    for section in SECTIONS:
        parts += ["", CAPTIONS[section], "", "| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
        parts += [
            f"| `{variable.name}` | {_default(variable)} | {variable.kind.accepts} | {variable.meaning} |"
            for variable in variables_of(section)
        ]
    return "\n".join(parts[1:]) + "\n"


def readme_with_tables(readme: str) -> str:
    """`readme` with the text between its settings markers replaced by the generated tables."""
    before, begin, rest = readme.partition(README_BEGIN)
    _, end, after = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"README.md has no {README_BEGIN!r} ... {README_END!r} block")
    return f"{before}{README_BEGIN}\n{markdown_tables()}{README_END}{after}"


def readme_tables(readme: str) -> str:
    """The text the README holds between its settings markers, as `markdown_tables` writes it."""
    _, begin, rest = readme.partition(README_BEGIN)
    tables, end, _ = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"README.md has no {README_BEGIN!r} ... {README_END!r} block")
    return tables.removeprefix("\n")
