"""The durable Responses store: rows survive a reopen, chains, deletion, retention and the size limit."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from cortex.server.errors import ResponseNotFoundError
from cortex.server.responses_store import ResponsesStore


def _response(response_id: str, created_at: float, text: str = "hi") -> dict:
    return {"id": response_id, "object": "response", "created_at": created_at, "output_text": text}


def _item(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_conversation_survives_reopening_the_file(tmp_path: Path):
    path = tmp_path / "state" / "responses.sqlite3"
    store = ResponsesStore(path)
    assert not path.exists()  # opened on first use
    await store.put(_response("resp_1", 100), [_item("one")], previous_response_id=None)
    await store.put(_response("resp_2", 101), [_item("two")], previous_response_id="resp_1")
    await store.close()

    reopened = ResponsesStore(path)
    chain = await reopened.conversation("resp_2")
    assert [r.id for r in chain] == ["resp_1", "resp_2"]
    assert chain[1].input_items == [_item("two")]
    assert chain[1].previous_response_id == "resp_1"
    stored = await reopened.get("resp_1")
    assert stored is not None
    assert stored.response == _response("resp_1", 100)
    assert await reopened.get("resp_9") is None
    await reopened.close()


async def test_deleted_responses_are_gone_from_every_conversation(tmp_path: Path):
    store = ResponsesStore(tmp_path / "r.sqlite3")
    await store.put(_response("resp_1", 100), [_item("one")], previous_response_id=None)
    await store.put(_response("resp_2", 101), [_item("two")], previous_response_id="resp_1")
    assert await store.delete("resp_1")
    assert not await store.delete("resp_1")
    assert await store.get("resp_1") is None
    with pytest.raises(ResponseNotFoundError) as missing:
        await store.conversation("resp_2")
    assert missing.value.response_id == "resp_1"
    with pytest.raises(ResponseNotFoundError) as unknown:
        await store.conversation("resp_x")
    assert unknown.value.response_id == "resp_x"
    await store.close()


async def test_retention_hides_and_prunes_old_rows(tmp_path: Path):
    clock = Clock(1000.0)
    store = ResponsesStore(tmp_path / "r.sqlite3", retention_s=100, clock=clock)
    await store.put(_response("resp_old", 950), [], previous_response_id=None)
    await store.put(_response("resp_new", 990), [], previous_response_id="resp_old")
    clock.now = 1060.0  # resp_old is now 110 s old
    assert await store.get("resp_old") is None
    assert not await store.delete("resp_old")
    with pytest.raises(ResponseNotFoundError):
        await store.conversation("resp_new")
    await store.put(_response("resp_3", 1060), [], previous_response_id=None)  # a write prunes
    await store.close()
    with sqlite3.connect(tmp_path / "r.sqlite3") as db:
        ids = sorted(row[0] for row in db.execute("SELECT id FROM responses"))
    assert ids == ["resp_3", "resp_new"]


async def test_the_size_limit_drops_the_oldest_first(tmp_path: Path):
    store = ResponsesStore(tmp_path / "r.sqlite3")
    await store.put(_response("resp_0", 100, "x" * 400), [], previous_response_id=None)
    one_row = await store.total_bytes()
    await store.close()
    limited = ResponsesStore(tmp_path / "r.sqlite3", max_bytes=3 * one_row)
    for i in range(1, 6):
        await limited.put(_response(f"resp_{i}", 100 + i, "x" * 400), [], previous_response_id=None)
        assert await limited.total_bytes() <= 3 * one_row
    kept = [i for i in range(6) if await limited.get(f"resp_{i}") is not None]
    assert kept == [3, 4, 5]
    await limited.close()


async def test_sqlite_runs_on_the_store_thread_not_the_event_loop(tmp_path: Path):
    store = ResponsesStore(tmp_path / "r.sqlite3")
    seen: list[str] = []
    await store._run(lambda _: seen.append(threading.current_thread().name))
    assert seen[0].startswith("responses-store")
    assert seen[0] != threading.current_thread().name
    await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "r.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    store = ResponsesStore(path)
    with pytest.raises(RuntimeError, match="newer cortex"):
        await store.get("resp_1")
    await store.close()
