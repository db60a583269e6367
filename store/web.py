"""Web's process under the supervisor: uvicorn serving `store.asgi:application` on the listening socket the
supervisor binds and passes down (`python -m store.web --fd $WEB_FD`).

Not `uvicorn --fd`: uvicorn opens a passed descriptor as a UNIX socket (`socket.fromfd(fd, AF_UNIX, ...)`), so the
event loop takes its connections for Unix ones and never sets TCP_NODELAY on them. A response written in two parts
(the headers, then the body) then waits for the client's delayed acknowledgement, about 40 ms a request: catalog
reads measured 44 ms at the median and 175 requests/s for 3 ms of CPU each (`make bench-serving`). Here the socket is
opened with the family and type its descriptor has (`socket.socket(fileno=...)` reads them), so connections are TCP.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn


def server() -> uvicorn.Server:
    """uvicorn as web runs it: httptools, uvloop, no lifespan (Django has none), no access log (the store logs)."""
    return uvicorn.Server(uvicorn.Config("store.asgi:application", lifespan="off", access_log=False, http="httptools",
                                         loop="uvloop"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="a listening socket's file descriptor")
    args = parser.parse_args(argv)
    server().run(sockets=[socket.socket(fileno=args.fd)])  # the descriptor's own family: TCP


if __name__ == "__main__":
    main()
