"""The HTTP layer: the only part of the service that imports Flask."""
