"""`python -m trustcard`: the command-line client, for when the `trustcard` script is not
on PATH (a virtualenv that is not activated, a container without the entry point)."""

from __future__ import annotations

from trustcard.cli.main import main

if __name__ == "__main__":
    main()
