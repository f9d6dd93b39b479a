"""The shutdown deadline (`--shutdown-timeout`, docs/hardening.md): after SIGTERM the server stops
accepting, lets requests in flight run until the deadline, then cuts them and exits; nothing the
request had committed is lost."""
import signal
import socket
import subprocess
import time

from client_util import BUILD, Client, wait_until_upload_busy
import stores

SHUTDOWN_TIMEOUT = 2  # seconds
MARGIN = 2.5
PIECE = 1 << 20  # api/server.cc kPiece  # the documented bound is the deadline plus about 2 s; exits come well inside it


def hold_upload_body_open(server, uid):
    """Sends a PATCH announcing 10 GiB and only its first MiB and 64 KiB, then holds the connection
    open: the request stays in flight (the server waits for the rest of the body) until the socket
    closes. The server hands the body to the upload in pieces of 1 MiB."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (f"PATCH /v1/uploads/{uid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {10 << 30}\r\n\r\n")
    sock.sendall(head.encode() + b"x" * (PIECE + 65536))
    return sock


def test_sigterm_cuts_a_request_in_flight_at_the_deadline_and_exits(make_server):
    server = make_server(["--shutdown-timeout", str(SHUTDOWN_TIMEOUT)])
    client = Client(server.url)
    uid = client.start_upload()
    sock = hold_upload_body_open(server, uid)
    try:
        wait_until_upload_busy(client, uid)  # the server is inside the held PATCH
        client.s.close()  # no idle keep-alive connection of ours stays open
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = server.proc.wait(timeout=SHUTDOWN_TIMEOUT + MARGIN + 5)
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    # The request in flight got the whole deadline (it would never finish), then was cut.
    assert SHUTDOWN_TIMEOUT - 0.1 <= elapsed <= SHUTDOWN_TIMEOUT + MARGIN, elapsed
    assert rc == 0, rc
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text()
    assert "cut 1 request(s) still in flight at the shutdown deadline" in log, log
    server.proc = None

    # Nothing is damaged: the store checks clean and the upload resumes from its committed offset.
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(server.data_dir),
                          *stores.server_args(server.data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    server.start()
    client = Client(server.url)
    state = client.upload_state(uid)
    assert state["state"] == "open"
    # The whole piece that arrived is committed; the part of the next one is not.
    assert state["offset"] == PIECE, state
    client.patch_upload(uid, b"y" * 10, state["offset"])


def test_sigterm_without_requests_in_flight_exits_at_once(make_server):
    server = make_server(["--shutdown-timeout", "30"])
    client = Client(server.url)
    assert client.get("/healthz").status_code == 200  # leaves an idle keep-alive connection open
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    rc = server.proc.wait(timeout=10)
    assert time.monotonic() - start < 2.0  # idle connections are not waited for
    assert rc == 0
    server.proc = None
