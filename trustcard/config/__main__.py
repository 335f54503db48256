"""`python -m trustcard.config`: print or write the documents made from the declarations.

    python -m trustcard.config --env-example   # prints .env.example
    python -m trustcard.config --markdown      # prints the README's settings tables
    python -m trustcard.config --write         # rewrites .env.example and the README's tables

`--write` works on the files of the current directory: run it from the project root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trustcard.config.documents import env_example, markdown_tables, readme_with_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustcard.config", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--env-example", action="store_true", help="print .env.example")
    what.add_argument("--markdown", action="store_true", help="print the README's settings tables")
    what.add_argument("--write", action="store_true", help="rewrite ./.env.example and the tables in ./README.md")
    options = parser.parse_args(argv)
    if options.env_example:
        sys.stdout.write(env_example())
    elif options.markdown:
        sys.stdout.write(markdown_tables())
    else:
        readme = Path("README.md")
        if not readme.is_file():
            parser.error("no README.md here: run --write from the project root")
        Path(".env.example").write_text(env_example())
        readme.write_text(readme_with_tables(readme.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
