"""What runs inside worker processes: job functions, the worker class, its settings.

Nothing here imports Flask; job code gets its settings and connections on its own.
"""
