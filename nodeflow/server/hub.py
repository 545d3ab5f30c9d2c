"""Event fan-out: every event is written to the log, then handed to each connected listener.

Worker threads publish; websocket handlers, running on the server's event
loop, listen. The log number (``seq``) orders all events, and a listener that
reconnects asks for the events after the last number it saw. Previews are the
one exception: they are delivered live only, never logged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from nodeflow.server.store import JobStore, StoredEvent

MAX_CLIENTS_KEPT = 10_000
"""Jobs whose client id is kept in memory (the store has them all)."""
MAX_BACKLOG = 10_000
"""Events waiting for one slow listener before it is dropped (it can reconnect and resume)."""


class Listener:
    """One connection's queue of events."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()
        self.overflowed = False

    def _put(self, event: StoredEvent) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.overflowed = True
            self.queue.put_nowait(None)  # wakes the handler, which closes the connection
            return
        self.queue.put_nowait(event)

    async def get(self) -> StoredEvent | None:
        """The next event, or None when the connection ended or this listener fell too far
        behind (then `overflowed` is True)."""
        return await self.queue.get()

    def wake(self) -> None:
        """The connection ended: wake the handler waiting in `get`."""
        self.queue.put_nowait(None)

    async def watch(self, ws: Any) -> None:
        """Read (and ignore) what the client sends until it goes away, then `wake`: a handler
        that only sends would otherwise notice a gone client at its next event only."""
        try:
            while True:
                message = await ws.receive()
                if message.get("type") == "websocket.disconnect":
                    break
        except Exception:  # noqa: BLE001 - any failure to read means the connection is over
            pass
        finally:
            self.wake()

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    """Writes events to the store and delivers them, in log order, to every listener."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.lock = threading.RLock()
        """Held while an event is written and scheduled, so delivery follows log order."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: set[Listener] = set()
        self._clients: dict[str, str | None] = {}

    def remember_client(self, job_id: str, client_id: str | None) -> None:
        """Note which ComfyUI client submitted a job (its websocket gets the job's messages)."""
        with self.lock:
            if len(self._clients) >= MAX_CLIENTS_KEPT:
                self._clients.clear()  # older jobs are looked up in the store again
            self._clients[job_id] = client_id

    def client_of(self, job_id: str) -> str | None:
        """The ComfyUI client id that submitted the job (None: none did)."""
        try:
            return self._clients[job_id]
        except KeyError:
            job = self.store.get(job_id)
            client = job.client_id if job is not None else None
            self.remember_client(job_id, client)
            return client

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> Listener:
        listener = Listener(self)
        with self.lock:
            self._listeners.add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.discard(listener)

    def publish(self, job_id: str | None, type_: str, data: dict[str, Any], *,
                persist: bool = True) -> StoredEvent:
        """Log an event (unless ``persist`` is False, for previews) and deliver it."""
        with self.lock:
            if persist:
                event = self.store.add_event(job_id, type_, data)
            else:
                import time

                event = StoredEvent(None, job_id, time.time(), type_, data)
            self._deliver(event)
        return event

    def commit(self, change: Callable[[], StoredEvent | None]) -> StoredEvent | None:
        """Run a store change that logs its own event, and deliver that event in order."""
        with self.lock:
            event = change()
            if event is not None:
                self._deliver(event)
        return event

    def _deliver(self, event: StoredEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not self._listeners:
            return
        listeners = list(self._listeners)

        def hand_out() -> None:
            for listener in listeners:
                listener._put(event)

        try:
            loop.call_soon_threadsafe(hand_out)
        except RuntimeError:  # the loop closed while shutting down: nobody is listening
            pass
