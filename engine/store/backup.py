"""Backing up and restoring the store.

SQLite: SQLite's online backup copies the database page by page in one step, as one read transaction, so the copy
is the database as of one commit even while other processes write (WAL mode lets them go on meanwhile). The copy is
written beside the target, checked (``PRAGMA integrity_check``), flushed to disk and only then renamed into place, so
a backup killed half-way leaves no file that looks whole.

PostgreSQL: ``pg_dump --format=custom`` (one snapshot of a repeatable-read transaction) and ``pg_restore``, run with
the password in ``PGPASSWORD`` rather than on the command line. Both must be installed, of the server's major
version or newer.

A restore goes into an empty database only (a fresh SQLite file, or a database just made with ``createdb``): it
never mixes a backup with rows already there.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from engine.errors import OcgateError
from engine.store.db import database_url

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"


class BackupError(OcgateError):
    code = "backup_failed"


@dataclass(frozen=True)
class Done:
    path: Path
    size: int
    kind: str  # "sqlite" or "postgresql"


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError(f"{url.render_as_string(hide_password=True)} is not a database file")
    return Path(url.database)


def _pg_command(url: URL) -> tuple[list[str], dict[str, str]]:
    """The libpq connection options of a URL, and an environment holding its password (never on a command line)."""
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    options = [f"--dbname={uri}"]  # a libpq URI keeps options such as ?sslmode=require
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return options, env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (it comes with the PostgreSQL client tools, of the server's "
                          "version or newer)")
    return found


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise BackupError(f"{what} failed (exit {done.returncode}): {lines[0] if lines else 'no message'}", lines[1:20])


def backup(target: Path, url: str | None = None, *, overwrite: bool = False) -> Done:
    """Write a backup of the database at ``url`` (``OCGATE_DATABASE_URL`` by default) to ``target``."""
    parsed = make_url(database_url(url))
    target = Path(target)
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; choose another name (or --force to replace it)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a folder")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            kind = "sqlite"
            source_path = _sqlite_path(parsed)
            if not source_path.is_file():
                raise BackupError(f"{source_path} does not exist")
            _sqlite_copy(source_path, partial)
        elif parsed.get_backend_name() == "postgresql":
            kind = "postgresql"
            options, env = _pg_command(parsed)
            _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(partial),
                  *options], env, "pg_dump")
        else:
            raise BackupError(f"cannot back up a {parsed.get_backend_name()} database")
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Done(target, target.stat().st_size, kind)


def _sqlite_copy(source: Path, destination: Path) -> None:
    """Copy one SQLite database into a new file with the online backup API, and check the copy."""
    try:
        origin = sqlite3.connect(source, timeout=30)  # waits for a writer's lock, as the store's own connections do
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: cannot open it ({exc})") from None
    copy = sqlite3.connect(destination)
    try:
        origin.backup(copy)  # pages=-1: all in one step, so one consistent snapshot
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        [[verdict]] = copy.execute("PRAGMA integrity_check").fetchall()
        if verdict != "ok":
            raise BackupError(f"the copy of {source} is damaged: {verdict}")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source}: {exc}") from None
    finally:
        copy.close()
        origin.close()


def backup_kind(path: Path) -> str:
    """``sqlite`` or ``postgresql``: what a backup file holds, from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"{path}: {exc.strerror or exc}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PGDUMP_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} is not a backup made by `ocgate db backup` (neither SQLite nor pg_dump's format)")


def restore(source: Path, url: str | None = None) -> Done:
    """Restore a backup into the empty database at ``url`` (``OCGATE_DATABASE_URL`` by default)."""
    source = Path(source)
    kind = backup_kind(source)
    parsed = make_url(database_url(url))
    backend = parsed.get_backend_name()
    if kind != backend:
        raise BackupError(f"{source} is a {kind} backup; it cannot be restored into a {backend} database "
                          "(restore it into the same kind, then move the data over if needed)")
    if kind == "sqlite":
        target = _sqlite_path(parsed)
        if target.exists() and target.stat().st_size > 0:
            raise BackupError(f"{target} exists; restore into a new file (or move the old one away first)")
        if not target.parent.is_dir():
            raise BackupError(f"{target.parent} is not a folder")
        partial = target.with_name(f".{target.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            _sqlite_copy(source, partial)
            with sqlite3.connect(partial) as check:
                check.execute("PRAGMA journal_mode=WAL")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return Done(target, target.stat().st_size, kind)
    options, env = _pg_command(parsed)
    _require_empty_postgres(parsed)
    _run([_tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
          *options, str(source)], env, "pg_restore")
    return Done(source, source.stat().st_size, kind)


def _require_empty_postgres(url: URL) -> None:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
    except Exception as exc:  # the server is down, the database does not exist, ...
        raise BackupError(f"cannot open {url.render_as_string(hide_password=True)}: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    if tables:
        raise BackupError(f"{url.render_as_string(hide_password=True)} already holds tables "
                          f"({', '.join(sorted(tables)[:5])}, ...); restore into a new database (createdb)")
