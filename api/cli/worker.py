"""``ocgate worker``: the background jobs (webhook events, scheduled syncs, invoice polling, webhook renewal)."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import EXIT_OK


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("worker", help="run the background jobs (queue: OCGATE_QUEUE_URL, default a SQLite file "
                                           "beside the database; redis://... to share it between machines)")
    parser.add_argument("--threads", type=int, default=2, help="jobs run at once (default 2)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.worker import Worker, run_consumer

    run_consumer(Worker(), workers=max(1, args.threads))
    return EXIT_OK
