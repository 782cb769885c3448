"""The workflows: what the API, the command line, the worker and the connectors call. Each function takes a
session (or a session factory, where it must commit around a remote call) and keyword arguments; none
commits unless committing is its job. Errors are :class:`engine.errors.OcgateError` subclasses.

- ``intake``: entries in, judged, queued;
- ``review``: the queue, and a reviewer's approve, reject and adjust;
- ``billing``: invoices, destinations, submission, the portal's rejections, rule proposals;
- ``rulesets``: rule set versions, activation, shadowing; ``backtest``: a draft against the active version;
- ``reports``: what the findings add up to;
- ``keys``: API keys and their roles.
"""
