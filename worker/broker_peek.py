"""Read what waits in the broker's queues without Celery: for the supervisor (which study's message is gone?) and
for ``mccad status`` (queue depths in a fraction of a second, and an answer within ``timeout_s`` when the broker is
down). Knows the two transports we use: Redis lists (one per queue and priority step) and kombu's SQLAlchemy tables.
"""
from __future__ import annotations

import base64
import json
from typing import Any

#: The queues of ``worker.app`` (``worker.ledger.INTERACTIVE``, ``BATCH``); repeated here to keep Celery unimported.
QUEUES = ("interactive", "batch")
#: kombu's Redis transport: a queue with priority steps lives in ``name``, ``name\x06\x163`` ... (its defaults).
_REDIS_PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def study_of(payload: str | bytes) -> str | None:
    """The study UID an ``analyze_study`` message (kombu's JSON envelope, Celery protocol 2) carries."""
    try:
        message = json.loads(payload)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def waiting_messages(settings: Any, timeout_s: float = 2.0) -> dict[str, list[str]] | None:
    """Study UIDs waiting in each queue (a message a worker holds is not waiting); None when the broker cannot be
    read now (the caller must then conclude nothing about lost messages)."""
    url = settings.effective_broker_url
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            try:
                return {name: [uid for key in _REDIS_PRIORITY_KEYS
                               for uid in map(study_of, client.lrange(name + key, 0, -1)) if uid]
                        for name in QUEUES}
            finally:
                client.close()
        if url.startswith("sqla+"):
            import sqlalchemy as sa

            engine = sa.create_engine(url[len("sqla+"):], connect_args={"timeout": timeout_s}
                                      if url.startswith("sqla+sqlite") else {})
            try:
                with engine.connect() as conn:
                    if not {"kombu_message", "kombu_queue"} <= set(sa.inspect(conn).get_table_names()):
                        return {name: [] for name in QUEUES}
                    rows = conn.execute(sa.text(
                        "SELECT q.name, m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                        "WHERE m.visible = 1"))
                    found: dict[str, list[str]] = {name: [] for name in QUEUES}
                    for name, payload in rows:
                        uid = study_of(payload)
                        if uid and name in found:
                            found[name].append(uid)
                    return found
            finally:
                engine.dispose()
    except Exception:  # broker down or unreadable
        return None
    return None
