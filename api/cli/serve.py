"""``ocgate serve``: the API."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import EXIT_OK


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the review queue API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port)
    return EXIT_OK
