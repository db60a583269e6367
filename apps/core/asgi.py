"""The web's ASGI handler: Django's request handling as WSGI runs it (one thread, the whole middleware chain and the
view), inside the ASGI server that streams.

Django's own ASGIHandler runs a chain of sync middleware and sync views with three thread hops per request (the
chain in a thread, back to the event loop for the async base handler, the view in a thread again) and gives every
request a thread of its own (ThreadSensitiveContext), so every request also opens a new database connection. The
store's views are sync (a streamed answer is a sync view returning an async iterator: apps/core/streaming.py), so
here a request's whole sync part runs in ONE call on a pool of long-lived threads, each keeping its database
connection the way a WSGI worker's thread does (opened and checked by `close_old_connections` at the start and end
of each request, as WSGI's request signals do); its streamed body is then sent on the event loop as before.

What the pool's size means: sync work that waits (a non-streamed completion waits for the model server) holds a
thread; reads need one for a few milliseconds. WEB_THREADS (default 32) is how many such requests one web process
runs at once; more wait for a thread, not for each other's CPU.

A client that leaves while its view still runs: Django cancels the request at once, but a thread cannot be
stopped, so the view runs on (shielded: nothing it awaits on the loop, such as the opening of a stream, is cut in
half). The request's `client_gone()` event is set, so a run that has not opened its streams yet does not open them
and one that has closes them at once (apps/chat/services.py); the view's response, which nobody will read, is
closed when it returns; and the request's body stays readable until then (Django closes it when the request ends).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections

logger = logging.getLogger(__name__)
_serving = threading.local()  # the request the current thread's view serves


def client_gone() -> asyncio.Event | None:
    """Set (on the event loop) once the client of the request this thread serves has gone; None outside a view run
    by the ASGI handler (WSGI, the test client, a worker)."""
    return getattr(_serving, "gone", None)


class StoreASGIHandler(ASGIHandler):
    def __init__(self):
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the chain as WSGI builds it: sync, no adapters between middleware
        self._pool = ThreadPoolExecutor(max_workers=settings.WEB_THREADS, thread_name_prefix="web")
        self._run = sync_to_async(self._response_in_thread, thread_sensitive=False, executor=self._pool)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # No ThreadSensitiveContext: nothing of a request runs in a thread made for it (see the module's text).
        await self.handle(scope, receive, send)

    async def read_body(self, receive):
        return _Body(await super().read_body(receive))

    async def get_response_async(self, request):
        request.client_gone = asyncio.Event()
        if isinstance(request._stream, _Body):
            request._stream.hold()  # the view's: given back when it returns
        work = asyncio.ensure_future(self._run(request))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:  # the client left: the view runs on in its thread, told so
            request.client_gone.set()
            work.add_done_callback(self._dropped)
            raise

    def _dropped(self, work: asyncio.Future) -> None:
        """The response of a view whose client had left: nobody sends it, so it is closed here (its closers, such as
        the request's, and `request_finished`), in a thread as Django closes responses."""
        if not work.cancelled() and work.exception() is None:
            self._pool.submit(_close_dropped, work.result())

    def _response_in_thread(self, request):
        # The request signals' connection check, in the thread that holds the connection (Django sends its
        # signals from another thread under ASGI, where they reach no connection of ours).
        close_old_connections()
        _serving.gone = getattr(request, "client_gone", None)
        try:
            return self.get_response(request)
        finally:
            _serving.gone = None
            if isinstance(request._stream, _Body):
                request._stream.let_go()
            close_old_connections()


def _close_dropped(response) -> None:
    try:
        response.close()
    except Exception:
        logger.exception("closing a dropped response failed")


class _Body:
    """A request's body file as the handler and the view's thread share it: Django closes it when the request ends,
    which is at once when the client leaves, while the view may still be about to read it. Closed when both have
    let go (`close`, as often as Django calls it, is the handler's)."""

    def __init__(self, file):
        self._file, self._holders, self._lock = file, {"handler"}, threading.Lock()

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def hold(self) -> None:
        with self._lock:
            self._holders.add("view")

    def let_go(self, holder: str = "view") -> None:
        with self._lock:
            self._holders.discard(holder)
            last = not self._holders
        if last:
            self._file.close()

    def close(self) -> None:
        self.let_go("handler")
