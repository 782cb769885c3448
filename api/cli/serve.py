"""``ocgate serve [--with-worker]``: the API (and, for a single-machine install, one job worker beside it)."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import EXIT_OK


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the review queue API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--with-worker", action="store_true", help="also run the background jobs in this process "
                                                                  "(one machine; see `ocgate worker`)")
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.worker import Worker

    worker = Worker()
    consumer = worker.consumer(workers=1) if args.with_worker else None
    if consumer is not None:
        consumer.start()  # threads; uvicorn then takes the signals, and the consumer is stopped below
    try:
        uvicorn.run(create_app(worker=worker), host=args.host, port=args.port)
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
    return EXIT_OK
