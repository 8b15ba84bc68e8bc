"""The gateway's durable Responses store: an embedded SQLite database (stdlib ``sqlite3``).

It is the only state a gateway keeps beyond what neurons re-report (DESIGN.md). Each stored response
is one row: the response object as the caller got it, the input items it was given (its own, not
those it inherited through ``previous_response_id``), and the id of the response it continued. A
conversation is the chain of rows from a response back through its ``previous_response_id`` links, so
deleting a response removes its content from every conversation: continuing from it, or from a
response that continued it, fails with "previous response not found" rather than resurrecting it.

Every call runs on one worker thread that owns the connection (opened on first use, so a gateway
that never serves ``/v1/responses`` creates no file), never on the event loop. The database is in
WAL mode and every write commits before the call returns, so whatever a caller was told was stored
survives a crash or restart of the gateway.

Limits: rows older than ``retention_s`` are neither returned nor kept (pruned at open and on each
write); when the rows' total size passes ``max_bytes`` the oldest are deleted until it fits. The
total is kept by triggers in ``store_meta``, so checking it costs one row read.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cortex.server.errors import ResponseNotFoundError

T = TypeVar("T")

SCHEMA_VERSION = 1
MAX_CHAIN_LENGTH = 100_000  # a guard: ids are unique and links point back in time, so chains never cycle
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    previous_response_id TEXT,
    created_at REAL NOT NULL,
    size_bytes INTEGER NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO store_meta VALUES ('total_bytes', 0);
CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses BEGIN
    UPDATE store_meta SET value = value + NEW.size_bytes WHERE key = 'total_bytes';
END;
CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses BEGIN
    UPDATE store_meta SET value = value - OLD.size_bytes WHERE key = 'total_bytes';
END;
"""
_CHAIN = """
WITH RECURSIVE chain(id, previous_response_id, depth, response, input_items) AS (
    SELECT id, previous_response_id, 0, response, input_items FROM responses
    WHERE id = ? AND created_at >= ?
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1, r.response, r.input_items
    FROM responses r JOIN chain c ON r.id = c.previous_response_id
    WHERE r.created_at >= ? AND c.depth < ?
)
SELECT id, previous_response_id, response, input_items FROM chain ORDER BY depth DESC
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response: the response object and the input items it was given."""

    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    previous_response_id: str | None


class ResponsesStore:
    """A SQLite file of stored responses; every method is a coroutine that runs off the event loop."""

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float | None = None,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = self._open()
        return fn(self._db)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; writes use explicit BEGIN
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise RuntimeError(
                f"{self.path} was written by a newer cortex "
                f"(schema {version}; this one reads {SCHEMA_VERSION})"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._prune(db)
        return db

    def _oldest_kept(self) -> float:
        return float("-inf") if self.retention_s is None else self._clock() - self.retention_s

    def _prune(self, db: sqlite3.Connection) -> None:
        if self.retention_s is not None:
            db.execute("DELETE FROM responses WHERE created_at < ?", (self._oldest_kept(),))
        if self.max_bytes is None:
            return
        (total,) = db.execute("SELECT value FROM store_meta WHERE key = 'total_bytes'").fetchone()
        if total <= self.max_bytes:
            return
        # the newest rows whose running total fits stay; everything older goes
        db.execute(
            """DELETE FROM responses WHERE id IN (
                SELECT id FROM (
                    SELECT id, SUM(size_bytes) OVER (ORDER BY created_at DESC, rowid DESC) AS running
                    FROM responses
                ) WHERE running > ?
            )""",
            (self.max_bytes,),
        )

    async def put(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        *,
        previous_response_id: str | None,
    ) -> None:
        """Store ``response`` (its ``id`` and ``created_at`` are read from it), committed on return."""
        response_json = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        items_json = json.dumps(input_items, ensure_ascii=False, separators=(",", ":"))
        size = len(response_json.encode()) + len(items_json.encode())
        created_at = float(response.get("created_at") or self._clock())

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                    (response["id"], previous_response_id, created_at, size, response_json, items_json),
                )
                self._prune(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(write)

    async def get(self, response_id: str) -> StoredResponse | None:
        def read(db: sqlite3.Connection) -> StoredResponse | None:
            row = db.execute(
                "SELECT id, previous_response_id, response, input_items FROM responses "
                "WHERE id = ? AND created_at >= ?",
                (response_id, self._oldest_kept()),
            ).fetchone()
            return None if row is None else _stored(row)

        return await self._run(read)

    async def conversation(self, response_id: str) -> list[StoredResponse]:
        """The chain that ends at ``response_id``, oldest first. Raises :class:`ResponseNotFoundError`
        naming the first response of the chain that is not stored."""

        def read(db: sqlite3.Connection) -> list[StoredResponse]:
            oldest = self._oldest_kept()
            rows = db.execute(_CHAIN, (response_id, oldest, oldest, MAX_CHAIN_LENGTH)).fetchall()
            if not rows:
                raise ResponseNotFoundError(response_id)
            chain = [_stored(row) for row in rows]
            if chain[0].previous_response_id is not None:
                raise ResponseNotFoundError(chain[0].previous_response_id)
            return chain

        return await self._run(read)

    async def delete(self, response_id: str) -> bool:
        """Delete one response; False when it was not stored."""

        def write(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "DELETE FROM responses WHERE id = ? AND created_at >= ?", (response_id, self._oldest_kept())
            )
            return cursor.rowcount > 0

        return await self._run(write)

    async def total_bytes(self) -> int:
        def read(db: sqlite3.Connection) -> int:
            (total,) = db.execute("SELECT value FROM store_meta WHERE key = 'total_bytes'").fetchone()
            return int(total)

        return await self._run(read)

    async def close(self) -> None:
        """Close the connection and stop the worker thread (the file stays)."""

        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _stored(row: tuple[str, str | None, str, str]) -> StoredResponse:
    response_id, previous, response, input_items = row
    return StoredResponse(response_id, json.loads(response), json.loads(input_items), previous)
