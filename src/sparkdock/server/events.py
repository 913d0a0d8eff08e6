"""In-process publish/subscribe of job changes.

The manager publishes every change of a job (state, phase, runtime status, endpoints) as a message
``{"type": "job", "job": {...}}``. Subscribers are asyncio queues (the WebSocket handler) or callables
(notifiers). Publishing never blocks and never buffers without limit: each queue holds at most ``maxsize``
messages. A subscriber that falls that far behind is dropped (and its ``on_overflow`` is called): the WebSocket
handler then closes the connection with :data:`~sparkdock.model.protocol.SLOW_CONSUMER_CLOSE_CODE`, and the
client reconnects and reloads what it shows (a snapshot over REST) rather than carrying on with a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Message = dict[str, Any]


def call_on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` on ``loop``: at once when already there (or when there is no loop yet), else handed to
    it from this thread (``call_soon_threadsafe``); dropped when the loop is closed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop:
        fn(*args)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn, *args)


class Subscription:
    """A queue of messages for one subscriber; close it when done."""

    def __init__(
        self,
        bus: EventBus,
        maxsize: int,
        accept: Callable[[Message], bool] | None = None,
        on_overflow: Callable[[], Any] | None = None,
    ) -> None:
        self._bus = bus
        self.accept = accept
        self.on_overflow = on_overflow
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=maxsize)
        self.closed = False

    async def get(self) -> Message:
        """The next message."""
        return await self.queue.get()

    def put(self, msg: Message) -> None:
        """Enqueue; a message the subscriber may not see is skipped. When the queue is full the subscriber is
        too far behind: it is dropped (closed, its queue emptied) and ``on_overflow()`` is called once."""
        if self.closed or (self.accept is not None and not self.accept(msg)):
            return
        if self.queue.full():
            self.close()
            while not self.queue.empty():  # nothing of it is kept
                self.queue.get_nowait()
            if self.on_overflow is not None:
                try:
                    self.on_overflow()
                except Exception:
                    log.exception("overflow callback failed")
            return
        self.queue.put_nowait(msg)

    def close(self) -> None:
        """Stop receiving messages."""
        self.closed = True
        self._bus.unsubscribe(self)


class EventBus:
    """Fan-out of messages to subscribers, safe to publish from other threads."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: set[Subscription] = set()
        self._callbacks: list[Callable[[Message], Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the subscriptions (publishing from other threads is marshalled to it)."""
        self._loop = loop

    @property
    def subscriber_count(self) -> int:
        """How many queue subscribers are attached."""
        return len(self._subs)

    def subscribe(
        self, accept: Callable[[Message], bool] | None = None, on_overflow: Callable[[], Any] | None = None
    ) -> Subscription:
        """A new queue subscription; ``accept(message)`` says which messages it receives (default: all), and
        ``on_overflow()`` is called if it is dropped for falling ``maxsize`` messages behind."""
        sub = Subscription(self, self.maxsize, accept, on_overflow)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Detach a subscription (idempotent)."""
        self._subs.discard(sub)

    def add_callback(self, cb: Callable[[Message], Any]) -> None:
        """Call ``cb(message)`` for every message (exceptions are logged, never raised)."""
        self._callbacks.append(cb)

    def publish(self, msg: Message) -> None:
        """Deliver ``msg`` to every subscriber."""
        call_on_loop(self._loop, self._deliver, msg)

    def _deliver(self, msg: Message) -> None:
        for sub in list(self._subs):
            sub.put(msg)
        for cb in list(self._callbacks):
            try:
                cb(msg)
            except Exception:  # a notifier must never break the manager
                log.exception("event callback failed")
