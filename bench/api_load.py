"""The load process of bench.api_bench: requests at a fixed rate on loopback, latencies as JSON on stdout.

Open loop: request n is sent at start + n / rate whatever happened to the earlier ones, from one asyncio
event loop over keep-alive connections (threads would add their own GIL waits to the figures). Bounded by
--seconds (and so by count); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import httpx

CLIENTS = [f"CLIENT{i:03d}" for i in range(40)]
RULES = ["ACME-RATE-001", "ACME-NARR-002", "ACME-DAY-001", "ACME-EXP-001", "ACME-INCR-001"]


def request_for(rng: random.Random, cursors: list[str]) -> tuple[str, dict[str, str]]:
    """One request of a reviewer's screen: each kind of filter and sort the queue offers, and next pages."""
    client = rng.choice(CLIENTS)
    kinds: list[tuple[str, dict[str, str]]] = [
        ("first page", {}),
        ("newest first", {"sort": "-work_date"}),
        ("recently changed", {"sort": "-updated_at"}),
        ("client filter", {"client": client}),
        ("client by source id", {"client": f"cs-{client}", "sort": "-work_date"}),
        ("matter filter", {"matter": f"{client}-M{rng.randrange(25):02d}"}),
        ("matter by source id", {"matter": f"cm-{client}-M{rng.randrange(25):02d}"}),
        ("timekeeper filter", {"timekeeper": f"tk{rng.randrange(800)}"}),
        ("rule and severity", {"rule_id": rng.choice(RULES), "severity": "error"}),
        ("rule filter", {"rule_id": rng.choice(RULES)}),
        ("client and rule", {"client": client, "rule_id": rng.choice(RULES)}),
        ("state filter", {"state": rng.choice(["held", "conflict"])}),
        ("source filter", {"source": rng.choice(["bench", "efimis"])}),
        ("date range", {"date_from": "2026-03-01", "date_to": "2026-03-31"}),
        ("data-quality flags", {"data_quality": rng.choice(["true", "false"])}),
    ]
    if cursors and rng.random() < 0.2:
        return "next page", {"limit": "50", "cursor": rng.choice(cursors)}
    kind, params = rng.choice(kinds)
    return kind, {"limit": "50", **params}


async def run(args: argparse.Namespace) -> dict[str, object]:
    total = int(args.rate * args.seconds)
    warm = int(args.rate * args.warmup)  # sent first and not counted: caches fill, as in a running server
    rng = random.Random(7)
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    cursors: list[str] = []
    errors = 0
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=args.base, headers={"Authorization": f"Bearer {args.key}"},
                                 timeout=10, limits=limits) as client:

        async def one(kind: str, params: dict[str, str], counted: bool) -> None:
            nonlocal errors
            sent = time.perf_counter()
            try:
                response = await client.get("/v1/review-items", params=params)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = (time.perf_counter() - sent) * 1000
            if not counted:
                return
            if not ok:
                errors += 1
                return
            latencies.append(elapsed)
            by_kind.setdefault(kind, []).append(elapsed)
            cursor = response.json().get("next_cursor")
            if cursor and kind == "first page" and len(cursors) < 200:
                cursors.append(cursor)

        start = time.perf_counter() + 0.2
        tasks = []
        for n in range(warm + total):
            delay = start + n / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(*request_for(rng, cursors), counted=n >= warm)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start - warm / args.rate
    return {"latencies_ms": latencies, "by_kind": by_kind, "errors": errors,
            "achieved_rate": (len(latencies) + errors) / duration}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of requests sent first and not counted")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not args.base.startswith(("http://127.", "http://localhost")):
        raise SystemExit("the load goes to loopback only")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
