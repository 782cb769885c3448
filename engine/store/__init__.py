"""Persistence for ocgate: SQLite by default, PostgreSQL in production (``OCGATE_DATABASE_URL``).

The rules core (``engine.rules.ruleset``, ``engine.rules.evaluate``, ...) does not import this package.
"""
