"""Pulling a source's pages in a second process, while this one ingests.

A sync spends its time in two places: reading the source (HTTP, JSON, mapping each record to the canonical
model) and ingesting (judging, writing). In one process both compete for one interpreter lock; in two, each
gets a core. The fetcher is a forked child that runs ``source.pull`` and hands each page over a bounded queue
(a few pages ahead, no more); the parent ingests them as before, in order, and commits each batch with its
cursor, so resuming after a crash works exactly as without it.

The child dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and it checks on every handover), so a sync
killed with SIGKILL leaves no fetcher behind. An error in the child (the source unreachable, a token refused)
reaches the parent as the same kind of :class:`SourceError`. Where ``fork`` is not available the pages are
pulled in this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from connectors.sources.base import NotConnected, Page, Source, SourceError, SourceUnavailable

F_SETPIPE_SZ = 1031  # fcntl's F_SETPIPE_SZ on Linux
PIPE_SIZE = 1 << 20
AHEAD = 32  # pages the fetcher may run ahead: more than a batch, so it keeps reading while a batch is committed
_ERRORS: dict[str, type[SourceError]] = {"SourceUnavailable": SourceUnavailable, "NotConnected": NotConnected}


def available() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def pages(source: Source, cursor: str | None, *, full: bool, before_fork: Callable[[], None] = lambda: None,
          in_child: Callable[[], None] = lambda: None) -> Iterator[Page]:
    """``source.pull(cursor, full=full)``, read in a child process. ``before_fork`` runs in this process first,
    ``in_child`` in the child before it reads (to drop database connections it must not share)."""
    context = multiprocessing.get_context("fork")
    handover: Any = context.Queue(maxsize=AHEAD)
    _widen(handover)
    before_fork()
    child = context.Process(target=_fetch, args=(source, cursor, full, handover, os.getpid(), in_child),
                            name="ocgate-fetcher", daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, value = handover.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise SourceError(f"the fetcher process ended unexpectedly (exit {child.exitcode})",
                                      retryable=True) from None
                continue
            if kind == "page":
                yield value
            elif kind == "error":
                name, message, retryable = value
                raise _ERRORS[name](message) if name in _ERRORS else SourceError(message, retryable=retryable)
            else:
                return
    finally:
        if child.is_alive():
            child.terminate()
        child.join(timeout=5)
        handover.close()


def _fetch(source: Source, cursor: str | None, full: bool, handover: Any, parent: int,
           in_child: Callable[[], None]) -> None:
    _die_with(parent)
    in_child()

    def hand(item: tuple[str, Any]) -> None:
        while True:
            try:
                handover.put(item, timeout=1.0)
                return
            except queue.Full:
                if os.getppid() != parent:  # the parent died: nobody will read this
                    os._exit(1)

    try:
        for page in source.pull(cursor, full=full):
            hand(("page", page))
    except SourceError as exc:
        hand(("error", (type(exc).__name__, exc.message, exc.retryable)))
    except Exception as exc:  # a bug, not the source: the parent reports it rather than a silent stop
        hand(("error", ("SourceError", f"the fetcher failed: {type(exc).__name__}: {exc}", False)))
    else:
        hand(("done", None))
    handover.close()
    handover.join_thread()


def _widen(handover: Any) -> None:
    """A pipe holds 64 KiB by default, less than one page of entries: the child would wait for this process to
    read each page to the end. Let it hold a megabyte (Linux's default ceiling for unprivileged processes)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(handover._writer.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (the parent may be killed with SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
