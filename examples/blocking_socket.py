"""rendr from blocking code: ``rendr.sync`` gives a socket-like object (``recv``,
``sendall``, ``makefile``, timeouts...) that libraries written for sockets accept.

A line-based server runs in a thread and reads through ``makefile()``; the client, in
the main thread, sends requests, moves the flow to its other path between two of them
(``sock.call(sock.conn.migrate(...))``), and reads the answers with ``recv``.  No
asyncio in sight: rendr's event loop runs in a background thread.

    python examples/blocking_socket.py
"""

from __future__ import annotations

import socket
import threading

import rendr
import rendr.sync

PSK = b"example-psk-0123456789abcdef"


def serve(sock: rendr.sync.Socket) -> None:
    """Answer every line with the line reversed, until the client half-closes."""
    with sock, sock.makefile("rb") as lines:
        for line in lines:
            sock.sendall(line.rstrip(b"\n")[::-1] + b"\n")


def recv_line(sock: rendr.sync.Socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("server closed early")
        line += chunk
    return line


def main() -> None:
    with rendr.sync.listen(rendr.ListenSpec("tcp", "127.0.0.1:0"),
                           rendr.ListenSpec("tcp", "127.0.0.1:0"), psk=PSK) as listener:
        paths = [rendr.PathSpec("tcp", f"{host}:{port}") for host, port in listener.addrs]
        client = rendr.sync.dial(paths, psk=PSK)
        server, peer = listener.accept(timeout=10)
        print(f"accepted a flow from {peer}")
        threading.Thread(target=serve, args=(server,), daemon=True).start()

        client.settimeout(10)  # a recv() waiting longer raises TimeoutError
        answers = []
        for word in (b"hello", b"rendr", b"migrating", b"socket"):
            if word == b"migrating":
                other = next(p.id for p in client.conn.stats().paths
                             if p.id != client.conn.active_path)
                client.call(client.conn.migrate(other))
                print(f"moved the flow to path {other}: peer is now {client.getpeername()}")
            client.sendall(word + b"\n")
            answers.append(recv_line(client).rstrip(b"\n"))
        print("answers:", answers)
        client.shutdown(socket.SHUT_WR)  # half-close: the server's makefile() loop ends
        client.close()
    expected = [b"olleh", b"rdner", b"gnitargim", b"tekcos"]
    if answers != expected:
        raise SystemExit("FAILED")
    print("OK")


if __name__ == "__main__":
    main()
