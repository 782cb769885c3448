"""``ocgate serve [--workers N] [--with-worker]``: the API, in one process or in N processes sharing one socket (each
with its own database pool; use PostgreSQL for more than one), and, for a single-machine install, one job worker
beside it."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from api import logs
from api.cli.common import EXIT_OK, CliError

if TYPE_CHECKING:
    from fastapi import FastAPI

HEALTHCHECK_SECONDS = 30  # how long an API process may take to answer the supervisor before it is restarted
ACCESS_ENV = "OCGATE_ACCESS_LOG"  # "off" for no access log (set by serve for its API processes)


def _server_loggers(access: bool) -> None:
    """The access log and the server's own lines are worth seeing whatever -v says; the engine's stay at the level."""
    logging.getLogger(logs.ACCESS_LOGGER).setLevel(logging.INFO if access else logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the review queue API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="API processes sharing the port (default 1); more than one needs PostgreSQL in practice")
    serve.add_argument("--with-worker", action="store_true", help="also run the background jobs (one consumer, in "
                                                                  "the serving process; see `ocgate worker`)")
    serve.add_argument("--proxy-headers", action="store_true",
                       help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a reverse proxy)")
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                       help="the proxies whose X-Forwarded-* headers are believed (default 127.0.0.1)")
    serve.add_argument("--no-access-log", action="store_true", help="no line per request")
    serve.set_defaults(handler=run)


def serving_app() -> FastAPI:
    """The app of one API process started by ``serve --workers N`` (uvicorn imports this by name in each process):
    its logging as the parent's, and its database from ``OCGATE_DATABASE_URL``, as the parent's."""
    from api.app import create_app

    logs.configure()
    _server_loggers(os.environ.get(ACCESS_ENV, "on") != "off")
    return create_app()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.worker import Worker

    if args.workers < 1:
        raise CliError(f"--workers {args.workers}: give at least 1")
    root = logging.getLogger()
    _server_loggers(not args.no_access_log)
    common: dict[str, Any] = dict(host=args.host, port=args.port, log_config=None, access_log=False,
                                  proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips,
                                  server_header=False)
    worker = Worker()
    consumer = worker.consumer(workers=1) if args.with_worker else None
    if consumer is not None:
        # Threads of this process; uvicorn then takes the signals, and the consumer is stopped below. With several
        # API processes this one only supervises them, and the consumer runs here: one, whatever --workers says.
        consumer.start()
    try:
        if args.workers == 1:
            uvicorn.run(create_app(worker=worker), **common)
        else:
            # Each API process is a fresh interpreter: it reads its logging set-up from the environment.
            os.environ[logs.FORMAT_ENV] = logs.chosen_format(args.log_format)
            os.environ[logs.LEVEL_ENV] = logging.getLevelName(root.level)
            os.environ[ACCESS_ENV] = "off" if args.no_access_log else "on"
            # A new process imports all of ocgate before it can answer uvicorn's health ping (about 2 s, much more
            # on a busy machine); uvicorn's default of 5 s would kill and restart processes that are only starting.
            uvicorn.run("api.cli.serve:serving_app", factory=True, workers=args.workers,
                        timeout_worker_healthcheck=HEALTHCHECK_SECONDS, **common)
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
    return EXIT_OK
