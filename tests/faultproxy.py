"""A fault-injecting HTTP proxy, run as its own process in front of a real `mlflow server`.

It forwards every request to ``--upstream`` and, for the requests it selects, injects
one fault instead:

- ``refuse``  accept the connection, then abort it (TCP RST) before reading anything;
- ``reset``   forward the headers and half of the request body upstream, then abort
  both connections (TCP RST) in the middle of the body;
- ``503``     read the whole request, answer ``503 Service Unavailable`` (not forwarded);
- ``429``     read the whole request, answer ``429 Too Many Requests`` (not forwarded);
  both carry ``Retry-After: <--retry-after>`` when that is set (no header by default);
- ``403``     read the whole request, answer ``403 Forbidden``: a permanent refusal;
- ``stall``   forward the whole request upstream (so the server does the work), then
  hold the client's connection silent for ``--stall-seconds`` and close it unanswered;
- ``slow``    wait ``--slow-seconds``, then forward the request and relay the answer.

Selection: requests whose ``METHOD path`` matches ``--match`` (a regex) are candidates
(counted even with ``--fault none``, so tests can count requests of a kind);
the first ``--after`` candidates pass untouched, the next ``--first`` are faulted, then each later one with probability
``--fraction`` (seeded by ``--seed``). The control endpoint ``/__faultproxy__`` (never
forwarded) answers GET with counters as JSON and takes a POST of a JSON object with any
of ``fault``, ``after``, ``first``, ``fraction``, ``match``, ``seed``, ``stall_seconds``,
``slow_seconds``, ``retry_after`` to reconfigure (counters reset), and ``cut_tunnels: true`` to abort every open tunnel.

A request asking for a protocol upgrade (a websocket, as Prefect's events client opens)
that is not faulted becomes a tunnel: the request goes upstream as it came, and the
bytes are relayed both ways until either side closes (counted in ``tunnels``). It also
serves as a forward proxy (``HTTP_PROXY``):
a request line with an absolute URL goes upstream in origin form, counted in
``as_forward_proxy``.

``redirect_from`` / ``redirect_to`` (control options, or ``--redirect-from`` /
``--redirect-to``) answer every request whose path starts with ``redirect_from`` with
``redirect_status`` (307 by default, which keeps the method and body) to the same path
under ``redirect_to`` instead, with the request's query and ``redirect_query`` appended
(counted in ``redirected``; never forwarded): a server that moved a team's prefix, or
hands out a signed URL.

With ``--tls-cert``/``--tls-key`` it serves HTTPS (the upstream stays plain HTTP), and
``--strip-path REGEX`` removes the first match from each request's path before it is
forwarded: together they stand in for a service that serves MLflow's API under a prefix
(an Azure ML workspace's ``/mlflow/v2.0/subscriptions/.../workspaces/<ws>``).

Every request's ``Authorization`` header is recorded, as the sha256 of its value (never
the value: the control endpoint's answers and a test's failure output stay secret-free),
counted under ``authorization`` (``"none"`` for requests without one), and per first
path segment under ``authorization_by_prefix`` (``{"/team-a": {digest: count}}``). The
body length (``Content-Length``) of every candidate request is kept in
``candidate_bodies`` (the first 10,000).

With ``--token-key-env VAR`` (the key read from ``$VAR``, never from the command line) it
is also a bearer-token gate: a request is forwarded only
with ``Authorization: Bearer <expires>.<hmac>``, where ``<expires>`` is a Unix time still
in the future and ``<hmac>`` is HMAC-SHA256(key, ``<expires>``) in hex (see
:func:`mint_token`); any other request is answered 401 and counted in ``refused_tokens``.

Usage::

    python tests/faultproxy.py --upstream http://127.0.0.1:5000 --port 0 \\
        --fault reset --first 3 --match 'PUT /api/2.0/mlflow-artifacts/'

The port it listens on is printed on the first line of stdout (``listening PORT``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CONTROL_PATH = "/__faultproxy__"
FAULTS = ("none", "refuse", "reset", "503", "429", "403", "stall", "slow")
_CHUNK = 256 * 1024
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class Policy:
    """Which requests get which fault; thread-safe counters."""

    def __init__(
        self,
        fault: str = "none",
        first: int = 0,
        fraction: float = 0.0,
        match: str = ".*",
        seed: int = 0,
        stall_seconds: float = 5.0,
        slow_seconds: float = 2.0,
        retry_after: str | None = None,
        redirect_from: str | None = None,
        redirect_to: str | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.configure(
            fault=fault,
            first=first,
            fraction=fraction,
            match=match,
            seed=seed,
            stall_seconds=stall_seconds,
            slow_seconds=slow_seconds,
            retry_after=retry_after,
            redirect_from=redirect_from,
            redirect_to=redirect_to,
        )

    def configure(self, **options: Any) -> None:
        with self.lock:
            fault = str(options.get("fault", getattr(self, "fault", "none")))
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
            self.fault = fault
            self.first = int(options.get("first", getattr(self, "first", 0)))
            self.after = int(options.get("after", getattr(self, "after", 0)))
            self.fraction = float(options.get("fraction", getattr(self, "fraction", 0.0)))
            self.match = re.compile(str(options.get("match", getattr(self, "match_text", ".*"))))
            self.match_text = self.match.pattern
            self.random = random.Random(int(options.get("seed", 0)))
            self.stall_seconds = float(
                options.get("stall_seconds", getattr(self, "stall_seconds", 5.0))
            )
            self.slow_seconds = float(
                options.get("slow_seconds", getattr(self, "slow_seconds", 2.0))
            )
            retry_after = options.get("retry_after", getattr(self, "retry_after", None))
            self.retry_after = None if retry_after is None else str(retry_after)
            for name, default in (
                ("redirect_from", None),
                ("redirect_to", None),
                ("redirect_query", None),
                ("redirect_status", 307),
            ):
                setattr(self, name, options.get(name, getattr(self, name, default)))
            self.redirect_status = int(self.redirect_status)
            self.redirected = 0
            self.authorization_by_prefix: dict[str, dict[str, int]] = {}
            self.candidate_bodies: list[int] = []
            self.seen = 0
            self.candidates = 0
            self.injected = 0
            self.forwarded = 0
            self.as_forward_proxy = 0
            self.authorization: dict[str, int] = {}
            self.refused_tokens = 0
            self.tunnels = 0

    def choose(self, method: str, path: str, length: int = 0) -> str:
        """The fault for this request ("none" to forward it untouched)."""
        with self.lock:
            self.seen += 1
            if not self.match.search(f"{method} {path}"):
                return "none"
            self.candidates += 1
            if len(self.candidate_bodies) < 10_000:
                self.candidate_bodies.append(length)
            if self.fault == "none":
                return "none"
            if self.candidates <= self.after:
                return "none"
            hit = self.candidates - self.after <= self.first or (
                self.fraction > 0 and self.random.random() < self.fraction
            )
            if hit:
                self.injected += 1
                return self.fault
            return "none"

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "fault": self.fault,
                "first": self.first,
                "after": self.after,
                "fraction": self.fraction,
                "match": self.match_text,
                "stall_seconds": self.stall_seconds,
                "slow_seconds": self.slow_seconds,
                "retry_after": self.retry_after,
                "seen": self.seen,
                "candidates": self.candidates,
                "injected": self.injected,
                "forwarded": self.forwarded,
                "as_forward_proxy": self.as_forward_proxy,
                "authorization": dict(self.authorization),
                "refused_tokens": self.refused_tokens,
                "tunnels": self.tunnels,
                "redirect_from": self.redirect_from,
                "redirect_to": self.redirect_to,
                "redirected": self.redirected,
                "authorization_by_prefix": {
                    k: dict(v) for k, v in self.authorization_by_prefix.items()
                },
                "candidate_bodies": list(self.candidate_bodies),
            }

    def redirect_for(self, path: str) -> str | None:
        """The ``Location`` for a request to ``path`` (and count it), or None."""
        with self.lock:
            source, target = self.redirect_from, self.redirect_to
            if not source or target is None or not path.startswith(source):
                return None
            self.redirected += 1
            location = target + path[len(source) :]
            if self.redirect_query:
                location += ("&" if "?" in location else "?") + self.redirect_query
            return location

    def note_authorization(self, value: str | None, path: str = "/") -> None:
        key = "none" if value is None else header_digest(value)
        prefix = "/" + urlsplit(path).path.lstrip("/").split("/", 1)[0]
        with self.lock:
            self.authorization[key] = self.authorization.get(key, 0) + 1
            seen = self.authorization_by_prefix.setdefault(prefix, {})
            seen[key] = seen.get(key, 0) + 1

    def note_refused_token(self) -> None:
        with self.lock:
            self.refused_tokens += 1

    def note_forward_proxy(self) -> None:
        with self.lock:
            self.as_forward_proxy += 1

    def count_forwarded(self) -> None:
        with self.lock:
            self.forwarded += 1

    def count_tunnel(self) -> None:
        with self.lock:
            self.tunnels += 1


def header_digest(value: str) -> str:
    """How an ``Authorization`` value is recorded: its sha256, in hex."""
    return hashlib.sha256(value.encode()).hexdigest()


def mint_token(key: str, lifetime: float) -> tuple[str, float]:
    """A bearer token the ``--token-key`` gate accepts until ``now + lifetime``."""
    expires = f"{time.time() + lifetime:.3f}"
    signature = hmac.new(key.encode(), expires.encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}", float(expires)


def token_is_valid(key: str, header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    expires, _, signature = header.removeprefix("Bearer ").rpartition(".")
    wanted = hmac.new(key.encode(), expires.encode(), hashlib.sha256).hexdigest()
    try:
        alive = float(expires) > time.time()
    except ValueError:
        return False
    return alive and hmac.compare_digest(wanted, signature)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from ``source`` to ``sink`` until ``source`` closes or fails."""
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _abort(sock: socket.socket) -> None:
    """Close a socket with a TCP RST instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body_length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        retry_after = self.server.policy.retry_after
        if status in (429, 503) and retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)

    def _control(self) -> None:
        policy = self.server.policy
        if self.command == "POST":
            try:
                options = json.loads(self.rfile.read(self._body_length()) or b"{}")
                if options.pop("cut_tunnels", False):
                    self.server.cut_tunnels()
                policy.configure(**options)
            except (ValueError, TypeError) as exc:
                self._answer(400, json.dumps({"error": str(exc)}).encode())
                return
        else:
            self._drain(self._body_length())
        self._answer(200, json.dumps(policy.stats()).encode())

    def _handle(self) -> None:
        if self.path.startswith(("http://", "https://")):
            # sent to us as a forward proxy (HTTP_PROXY): the request line holds the
            # absolute URL; forward it to the upstream in origin form, as proxies do
            parts = urlsplit(self.path)
            self.path = parts.path + (f"?{parts.query}" if parts.query else "")
            self.server.policy.note_forward_proxy()
        if urlsplit(self.path).path == CONTROL_PATH:
            self._control()
            return
        self.server.policy.note_authorization(self.headers.get("Authorization"), self.path)
        location = self.server.policy.redirect_for(self.path)
        if location is not None:
            self._drain(self._body_length())
            self.send_response(self.server.policy.redirect_status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.server.strip_path is not None:
            self.path = self.server.strip_path.sub("", self.path, count=1) or "/"
        key = self.server.token_key
        if key is not None and not token_is_valid(key, self.headers.get("Authorization")):
            self.server.policy.note_refused_token()
            self._drain(self._body_length())
            if self.server.policy.fault == "slow":  # refusals overlap, as on a slow link
                time.sleep(self.server.policy.slow_seconds)
            message = {"error_code": "UNAUTHENTICATED", "message": "faultproxy: token refused"}
            self._answer(401, json.dumps(message).encode())
            return
        fault = self.server.policy.choose(self.command, self.path, self._body_length())
        if fault == "refuse":
            self.close_connection = True
            _abort(self.connection)
            return
        length = self._body_length()
        if fault in ("503", "429", "403"):
            self._drain(length)
            message = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"faultproxy {fault}"}
            self._answer(int(fault), json.dumps(message).encode())
            return
        if fault == "slow":
            time.sleep(self.server.policy.slow_seconds)
        if fault == "none" and self.headers.get("Upgrade"):
            self._tunnel()
            return
        self._forward(fault, length)

    def _tunnel(self) -> None:
        """Relay an upgraded connection (a websocket) to the upstream, both ways."""
        upstream = self.server.upstream
        self.close_connection = True
        try:
            up = socket.create_connection((upstream.hostname, upstream.port), timeout=30)
        except OSError:
            _abort(self.connection)
            return
        lines = [f"{self.command} {self.path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() != "host"]
        lines.append(f"Host: {upstream.netloc}")
        up.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        up.settimeout(None)
        self.connection.settimeout(None)
        self.server.policy.count_tunnel()
        self.server.add_tunnel(self.connection, up)
        back = threading.Thread(target=_pipe, args=(up, self.connection), daemon=True)
        back.start()
        _pipe(self.connection, up)
        back.join(timeout=5)
        self.server.drop_tunnel(self.connection, up)

    def _forward(self, fault: str, length: int) -> None:
        upstream = self.server.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() in _HOP_BY_HOP or name.lower() == "host":
                    continue
                conn.putheader(name, value)
            conn.putheader("Host", upstream.netloc)
            conn.endheaders()
            remaining = length
            stop_at = length // 2 if fault == "reset" else -1
            sent = 0
            while remaining > 0:
                step = min(_CHUNK, remaining)
                if stop_at >= 0:
                    step = min(step, max(stop_at - sent, 1))
                chunk = self.rfile.read(step)
                if not chunk:
                    break
                conn.send(chunk)
                sent += len(chunk)
                remaining -= len(chunk)
                if stop_at >= 0 and sent >= stop_at:
                    break
            if fault == "reset":
                self.close_connection = True
                if conn.sock is not None:
                    _abort(conn.sock)
                _abort(self.connection)
                return
            response = conn.getresponse()
            if fault == "stall":
                response.read()
                time.sleep(self.server.policy.stall_seconds)
                self.close_connection = True
                _abort(self.connection)
                return
            self.server.policy.count_forwarded()
            self._relay(response)
        finally:
            conn.close()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        known_length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue
            self.send_header(name, value)
        if known_length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        while chunk := response.read(_CHUNK):
            self.wfile.write(chunk)
        self.wfile.flush()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int,
        upstream: str,
        policy: Policy,
        token_key: str | None = None,
        strip_path: str | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), ProxyHandler)
        self.upstream = urlsplit(upstream)
        self.policy = policy
        self.token_key = token_key
        self.strip_path = re.compile(strip_path) if strip_path else None
        self._tunnels: set[tuple[socket.socket, socket.socket]] = set()
        self._tunnels_lock = threading.Lock()

    def add_tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._tunnels_lock:
            self._tunnels.add((client, upstream))

    def drop_tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._tunnels_lock:
            self._tunnels.discard((client, upstream))
        _abort(upstream)

    def cut_tunnels(self) -> None:
        """Abort every open tunnel, both sides (as a server going away would)."""
        with self._tunnels_lock:
            tunnels, self._tunnels = self._tunnels, set()
        for client, upstream in tunnels:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the real server")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--first", type=int, default=0, help="fault the first N candidates")
    parser.add_argument("--fraction", type=float, default=0.0, help="then fault this share")
    parser.add_argument("--match", default=".*", help="regex on 'METHOD path'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--retry-after", help="Retry-After value of 429/503 answers")
    parser.add_argument(
        "--token-key-env",
        metavar="VAR",
        help="forward only requests with a live bearer token signed with $VAR (see mint_token)",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--strip-path", help="regex removed from each path before forwarding")
    parser.add_argument("--redirect-from", help="redirect requests under this path prefix...")
    parser.add_argument("--redirect-to", help="...to the same path under this prefix (or URL)")
    args = parser.parse_args(argv)
    policy = Policy(
        args.fault,
        args.first,
        args.fraction,
        args.match,
        args.seed,
        args.stall_seconds,
        args.slow_seconds,
        args.retry_after,
        args.redirect_from,
        args.redirect_to,
    )
    token_key = os.environ[args.token_key_env] if args.token_key_env else None
    server = ProxyServer(args.port, args.upstream, policy, token_key, args.strip_path)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
