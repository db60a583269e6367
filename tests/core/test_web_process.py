"""Web's process (store/web.py) serves on the supervisor's socket as a TCP server: its connections get TCP_NODELAY.

With uvicorn's own `--fd`, the socket is opened as a UNIX one and connections never get TCP_NODELAY, so each
response waited about 40 ms for the client's delayed acknowledgement (README, Performance > Serving)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from store import web

pytestmark = pytest.mark.django_db(transaction=True)


def test_web_serves_the_passed_socket_with_tcp_nodelay_on_its_connections():
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    passed = socket.socket(fileno=listening.detach())  # what store.web.main makes of the descriptor it is given
    server = web.server()
    server.install_signal_handlers = lambda: None  # not in the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [passed]}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            client.sendall(b"GET /no-such-page/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = client.recv(65536)
            assert head.startswith(b"HTTP/1.1 ")
            connections = list(server.server_state.connections)
            assert len(connections) == 1
            accepted = connections[0].transport.get_extra_info("socket")
            assert accepted.family == socket.AF_INET
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
