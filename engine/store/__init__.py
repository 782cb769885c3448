"""Persistence for ocgate: SQLite by default, PostgreSQL in production (``OCGATE_DATABASE_URL``).

The rules core (``engine.ruleset``, ``engine.evaluate``, ...) does not import this package.
"""
