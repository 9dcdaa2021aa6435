"""Issue 20: h11 parses requests; memhp's own rules around it hold, on real loopback sockets.

h11 is stricter than memhp in some places (any byte but SP in the target, ``Host`` on HTTP/1.1,
one empty line before the request line) and laxer in others (folded lines, equal repeated
``Content-Length``, ``5, 5``, 19 and 20 digits, repeated ``Transfer-Encoding``).  Each case here
is one of them: the answer is memhp's, not h11's.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from memhp.web import Authenticator, Limits, Request, Response, Route, SecretFile, WebServer
from memhp.web.secrets import parse_bearer_token
from tests.helpers.rawhttp import body_of, exchange, read_until_closed, status_of
from tests.helpers.web import TOKEN, secret_file

AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
MAX_HEADER_BYTES = 1024


def _echo(req: Request) -> Response:
    doc = {"target": req.target, "path": req.path, "headers": req.headers, "body": req.body.decode("latin-1")}
    return Response(200, json.dumps(doc).encode())


class Server:
    def __init__(self, server: WebServer, rejected: list[str]) -> None:
        self.server, self.rejected = server, rejected

    def ask(self, raw: bytes) -> tuple[int, bytes]:
        self.rejected.clear()
        answer = exchange(self.server.port, raw)
        return status_of(answer), body_of(answer)


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    token = secret_file(tmp_path / "token", TOKEN)
    rejected: list[str] = []
    routes = {
        "/-/healthy": Route({"GET": lambda req: Response(200, b"OK\n")}, public=True),
        "/echo": Route({"GET": _echo}),
        "/post": Route({"POST": _echo}, body=True),
    }
    web = WebServer(
        "127.0.0.1:0",
        routes,
        limits=Limits(max_header_bytes=MAX_HEADER_BYTES, max_headers=8),
        auth=Authenticator(bearer=SecretFile(str(token), parse_bearer_token)),
        on_reject=rejected.append,
    ).start()
    yield Server(web, rejected)
    web.shutdown()


def test_the_target_is_handed_on_as_sent(server):
    # Control bytes, Latin-1 and "%" (h11 takes printable ASCII alone): the route sees the bytes sent.
    status, body = server.ask(b"GET /echo?q=%41\xe9\x1b\x7f HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
    assert status == 200, body
    assert json.loads(body)["target"] == "/echo?q=%41\xe9\x1b\x7f"
    # and to someone without credentials, only a 401
    assert server.ask(b"GET /\x1b[2J HTTP/1.1\r\n\r\n")[0] == 401 and server.rejected == ["auth_missing"]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /echo HTTP/1.1\r\n" + AUTH + b"\r\n",  # HTTP/1.1 without Host
        b"GET /echo HTTP/1.0\r\n" + AUTH + b"\r\n",
        b"\r\nGET /echo HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",  # one empty line first (RFC 9112 2.2)
        b"GET /echo HTTP/1.1\nHost: x\n" + AUTH.replace(b"\r\n", b"\n") + b"\n",  # bare LF
    ],
)
def test_requests_h11_alone_would_refuse_are_served(server, raw):
    status, body = server.ask(raw)
    assert status == 200, body
    assert json.loads(body)["path"] == "/echo"


POST = b"POST /post HTTP/1.1\r\n" + AUTH
AROUND_H11 = {
    "HTTP/1.2": (b"GET /echo HTTP/1.2\r\n" + AUTH + b"\r\n", 400, "bad_http"),
    "HTTP/2.0": (b"GET /echo HTTP/2.0\r\n" + AUTH + b"\r\n", 400, "bad_http"),
    "two empty lines first": (b"\r\n\r\nGET /echo HTTP/1.1\r\n" + AUTH + b"\r\n", 400, "bad_http"),
    "folded line": (b"GET /echo HTTP/1.1\r\nX-A: b\r\n c\r\n" + AUTH + b"\r\n", 400, "bad_http"),
    "Authorization twice": (b"GET /echo HTTP/1.1\r\n" + AUTH + AUTH + b"\r\n", 400, "bad_http"),
    "equal Content-Lengths": (POST + b"Content-Length: 5\r\ncontent-length: 5\r\n\r\nhello", 400, "bad_http"),
    "Content-Length folded": (POST + b"Content-Length: 5\r\n ,5\r\n\r\nhello", 400, "bad_http"),
    "Content-Length: 5, 5": (POST + b"Content-Length: 5, 5\r\n\r\nhello", 400, "bad_content_length"),
    "Content-Length of 19 digits": (
        POST + b"Content-Length: 0000000000000000005\r\n\r\nhello",
        400,
        "bad_content_length",
    ),
    "Content-Length: +5": (POST + b"Content-Length: +5\r\n\r\nhello", 400, "bad_content_length"),
    "Transfer-Encoding twice": (
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "bad_http",
    ),
    "Transfer-Encoding: gzip": (POST + b"Transfer-Encoding: gzip\r\n\r\n", 411, "length_required"),
    "chunked": (POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "length_required"),
    "9 header fields": (
        b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(8)) + AUTH + b"\r\n",
        431,
        "bad_http",
    ),
}


@pytest.mark.parametrize("case", list(AROUND_H11))
def test_memhp_rules_around_h11(server, case):
    raw, status, reason = AROUND_H11[case]
    assert server.ask(raw)[0] == status
    assert server.rejected == [reason]
    assert server.ask(b"GET /-/healthy HTTP/1.0\r\n\r\n")[0] == 200


def test_a_malformed_content_length_is_refused_before_credentials_are_asked(server):
    """RFC 9112 6.3: without a valid length the end of the message is unknown, so nothing else is judged."""
    for path in (b"/post", b"/echo", b"/nope"):
        status, body = server.ask(b"POST " + path + b" HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        assert status == 400 and server.rejected == ["bad_content_length"], body
    # A well-formed one still gets the 401 first.
    assert server.ask(b"POST /post HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")[0] == 401


def _head(size: int, first: bytes = b"POST /post HTTP/1.1\r\n") -> bytes:
    """A head of exactly ``size`` bytes (request line to the empty line), announcing a 5-byte body."""
    fixed = first + AUTH + b"Content-Length: 5\r\nX-Pad: \r\n\r\n"
    return first + AUTH + b"Content-Length: 5\r\nX-Pad: " + b"a" * (size - len(fixed)) + b"\r\n\r\n"


@pytest.mark.parametrize("first", [b"POST /post HTTP/1.1\r\n", b"\r\nPOST /post HTTP/1.1\r\n"])
def test_the_header_bound_counts_the_bytes_sent_whole_or_trickled(server, first):
    assert len(_head(MAX_HEADER_BYTES, first)) == MAX_HEADER_BYTES
    status, body = server.ask(_head(MAX_HEADER_BYTES, first) + b"hello")  # one segment, body and all
    assert status == 200 and json.loads(body)["body"] == "hello", body
    assert server.ask(_head(MAX_HEADER_BYTES + 1, first) + b"hello")[0] == 431
    # The same heads a few bytes at a time.
    for size, expected in ((MAX_HEADER_BYTES, 200), (MAX_HEADER_BYTES + 1, 431)):
        data = _head(size, first) + b"hello"
        with socket.create_connection(("127.0.0.1", server.server.port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(data), 97):
                try:
                    s.sendall(data[i : i + 97])
                except OSError:
                    break  # refused and closed as soon as the bound was passed
            assert status_of(read_until_closed(s, 5)) == expected
