"""``ocgate sources add|list|show|connect|webhooks|keygen``: the practice-management systems entries come from."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from api.cli.common import EXIT_OK, CliError, sessions, setting
from connectors.sources import registry, webhooks
from connectors.sources.clio import code_from
from engine.store.db import transaction
from engine.workflows import sources


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("sources", help="where entries come from: Clio and other practice-management systems")
    sources_sub = parser.add_subparsers(dest="sources_command", required=True)
    add = sources_sub.add_parser("add", help="configure a source (or change the settings of one of that name)")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=sorted(registry.KINDS))
    add.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                     help="a setting, e.g. region=us, client_id=..., client_secret_env=CLIO_SECRET, "
                          "sync_interval_minutes=15 (never a secret itself)")
    sources_sub.add_parser("list", help="list sources, their tenant and last sync")
    show = sources_sub.add_parser("show", help="a source's settings, webhooks and recent sync runs")
    show.add_argument("name")
    connect = sources_sub.add_parser("connect", help="connect a source (OAuth 2.0): prints the URL to approve, then "
                                                     "takes the code or the redirect URL pasted on standard input")
    connect.add_argument("name")
    how = connect.add_mutually_exclusive_group()
    how.add_argument("--code", help="the authorization code Clio gave (instead of pasting the redirect URL)")
    how.add_argument("--refresh-token-env", metavar="VAR", help="take an existing refresh token from this variable")
    hooks = sources_sub.add_parser("webhooks", help="create the source's webhook subscriptions (the worker renews "
                                                    "them before they expire)")
    hooks.add_argument("name")
    hooks.add_argument("--public-url", required=True, help="where the source can reach ocgate's "
                                                           "POST /v1/webhooks/NAME (https)")
    sources_sub.add_parser("keygen", help="print a new key for OCGATE_SECRET_KEY (which encrypts source credentials)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = args.sources_command
    if command == "keygen":
        print(sources.new_secret_key())
        return EXIT_OK
    factory = sessions()
    if command == "add":
        with transaction(factory) as session:
            row = registry.configure(session, args.name, kind=args.kind, settings=dict(args.set))
            print(f"source {row.name} ({row.source_system}) saved"
                  + ("" if row.credentials else f"; connect it with `ocgate sources connect {row.name}`"))
        return EXIT_OK
    if command == "list":
        with factory() as session:
            for row in sources.connections(session):
                last = f"{row.last_sync_at:%Y-%m-%d %H:%M}" if row.last_sync_at else "never"
                state = "connected" if row.credentials else "not connected"
                print(f"{row.name:<20} {row.source_system:<10} {row.source_tenant or '-':<24} {state:<14} "
                      f"last sync {last}")
        return EXIT_OK
    if command == "show":
        with factory() as session:
            row = sources.get(session, args.name)
            print(f"{row.name} ({row.source_system}), tenant {row.source_tenant or '-'}, "
                  f"{'connected' if row.credentials else 'not connected'}")
            print(f"settings: {json.dumps(row.settings, sort_keys=True)}")
            for sub in sources.subscriptions(session, row.id):
                print(f"webhook {sub.remote_id}: {sub.model} {sub.status}, expires {sub.expires_at:%Y-%m-%d %H:%M}"
                      if sub.expires_at else f"webhook {sub.remote_id}: {sub.model} {sub.status}")
            for sync_run in sources.runs(session, row.id, limit=10):
                print(f"run {sync_run.id}: {sync_run.started_at:%Y-%m-%d %H:%M:%S} {sync_run.status:<9} "
                      f"{'full ' if sync_run.full else ''}{json.dumps(sync_run.counts, sort_keys=True)}"
                      + (f" error: {sync_run.error}" if sync_run.error else ""))
        return EXIT_OK
    if command == "connect":
        return _connect(factory, args)
    created = webhooks.register(factory, args.name, args.public_url)
    for sub in created:
        print(f"webhook {sub.remote_id} for {sub.model} ({', '.join(sub.events)}) -> {sub.url}: {sub.status}"
              + (f", expires {sub.expires_at:%Y-%m-%d}" if sub.expires_at else ""))
    return EXIT_OK


def _connect(factory: Any, args: argparse.Namespace) -> int:
    if args.refresh_token_env:
        token = os.environ.get(args.refresh_token_env)
        if not token:
            raise CliError(f"{args.refresh_token_env} is not set")
        tenant = registry.connect(factory, args.name, refresh_token=token)
    elif args.code is None and not registry.approved_in_browser(factory, args.name):
        tenant = registry.connect(factory, args.name)  # client credentials or an API key: nothing to approve
    else:
        code = args.code
        if code is None:
            url, state = registry.authorize_url(factory, args.name)
            print("Open this URL, sign in as the source's administrator and approve ocgate:", file=sys.stderr)
            print(url)
            print("Then paste the code, or the whole URL Clio redirected to:", file=sys.stderr)
            pasted = sys.stdin.readline()
            if not pasted.strip():
                raise CliError("nothing was pasted")
            code = code_from(pasted, state)
        tenant = registry.connect(factory, args.name, code=code)
    print(f"source {args.name} connected to {tenant}")
    return EXIT_OK
