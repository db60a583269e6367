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
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections


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

    async def get_response_async(self, request):
        return await self._run(request)

    def _response_in_thread(self, request):
        # The request signals' connection check, in the thread that holds the connection (Django sends its
        # signals from another thread under ASGI, where they reach no connection of ours).
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()
