"""The `trustcard` command: a client of the HTTP API, for people at a terminal."""
