"""The daemon's read-only status page and JSON API (`runner watch --http`, `runner serve`).

Stdlib only. One thread (runner-page) does all of the page's socket work through a selector: it accepts
connections, reads each request head within its limits and deadlines, and writes each answer; a few
handler threads make the answers. A request reads the store through its own read-only connection and the
run folders through runner.daemon.report (the same JSON `runner status --format json` prints); it never
touches the supervisor's objects, so a slow or hostile client cannot stall the loop. It binds exactly the
address it is given (loopback unless told otherwise).

The page runs inside the daemon's process, so what its clients may hold is bounded (Limits), however
many connect: at most `connections` at once, far below the process's descriptor limit (a new one beyond
them closes the longest-idle one still sending its request), so the daemon's store, logs, spec files and
children always find descriptors; a request head of bounded size, sent within an idle and a total
deadline; one answer per connection. A request that is not well-formed HTTP gets its 4xx (or, when no
request line came, a quiet close), never a traceback.

Nothing the page shows is trusted: the page builds its DOM with textContent (never innerHTML), and
the Content-Security-Policy allows only this server's own script and data.

    GET /                            the page: queue, running jobs (live loss curves), recent jobs
    GET /run/<run>                   a run's page: plan summary, manifest, samples, loss curve
    GET /api/jobs                    the overview (runner.daemon.report.overview)
    GET /api/jobs/<id>               one job, with its log's last lines
    GET /api/runs/<run>              a run's manifest and plan summary
    GET /api/runs/<run>/metrics      its loss curve's points
<run> is the run folder's path under the run root; one that leads outside it is refused (403).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import queue
import re
import resource
import selectors
import socket
import sqlite3
import sys
import threading
import time
import urllib.parse
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path

from runner.daemon import report
from runner.daemon.store import Store
from runner.errors import RunnerError, UsageError

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
                               "style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGE_FILES = Path(__file__).parent / "page"
STATIC = {"/": ("page.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
          "/page.css": ("page.css", "text/css")}


def connection_cap() -> int:
    """Connections the page holds at once: 64, or a sixteenth of the process's descriptor limit when
    that is lower, so that the daemon's store, logs, spec files and children always find descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 64 if soft == resource.RLIM_INFINITY else max(4, min(64, soft // 16))


@dataclass(frozen=True)
class Limits:
    """What the page's clients may hold, and for how long."""

    connections: int = field(default_factory=connection_cap)
    handlers: int = 4
    """Threads that make answers (each reads the store through its own connection while it does)."""
    idle_s: float = 10.0
    """The longest a client may stay silent while it sends its request."""
    request_s: float = 20.0
    """The longest it may take to send a whole request head (a client that trickles bytes is cut here)."""
    answer_s: float = 30.0
    """The longest it may take to receive its answer."""
    request_line: int = 8192
    head_bytes: int = 16384
    headers: int = 64

    def descriptors(self) -> int:
        """The most descriptors the page holds: its connections, its own four (listening socket, selector,
        wake-up pair) and, per handler, a store connection (database, WAL, shared memory) and one file."""
        return self.connections + 4 + 4 * self.handlers


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:8765)."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--http {text}: not an address to listen on", "give HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


class Page:
    """The server, bound on creation (a taken port is an error before the daemon starts its loop)."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.thread: threading.Thread | None = None

    @classmethod
    def bind(cls, address: str, state_dir: Path, runs_dir: Path, limits: Limits | None = None) -> Page:
        host, port = parse_address(address)
        try:
            return cls(_Server((host, port), state_dir, runs_dir, limits or Limits()))
        except OSError as error:
            raise RunnerError(f"cannot listen on {address}: {error.strerror or error}",
                              "give another --http HOST:PORT (a free port, an address of this machine)") from None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> None:
        self.server.start_handlers()
        self.thread = threading.Thread(target=self.server.serve_forever, name="runner-page", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=10)
        self.server.server_close()


# --- requests -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """A well-formed GET request: its target's path, percent-decoded, and the host it names."""

    path: str
    host: str


_REQUEST_LINE = re.compile(r"([!-~]+) ([!-~]+) ([!-~]+)")
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t -~\x80-\xff]*")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{0,5})?")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEAD_END = re.compile(rb"\n\r?\n")
_JOB_ID = re.compile(r"[0-9]{1,18}")


def request_line(line: bytes) -> str:
    """The target of a request line (its end of line removed), or _Refused: what is not HTTP/1.x GET."""
    match = _REQUEST_LINE.fullmatch(line.removesuffix(b"\r").decode("latin-1"))
    if match is None:
        raise _Refused(400, "not an HTTP request line (METHOD TARGET HTTP/1.1)")
    method, target, version = match.groups()
    number = _VERSION.fullmatch(version)
    if number is None:
        raise _Refused(400, f"not an HTTP version: {version[:40]}")
    if number.group(1) != "1":
        raise _Refused(505, "this page speaks HTTP/1.1")
    if not _TOKEN.fullmatch(method):
        raise _Refused(400, "not an HTTP method")
    if method != "GET":
        raise _Refused(501, "this page is read-only: GET only")
    if not target.startswith("/"):
        raise _Refused(400, "ask for a path (/...)")
    return target


def parse_head(head: bytes, limits: Limits) -> Request:
    """A request head (without the empty line that ends it) as a Request, or _Refused with its 4xx."""
    first, *fields = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    target = request_line(first)
    if len(fields) > limits.headers:
        raise _Refused(431, f"more than {limits.headers} header fields")
    hosts = []
    for line in fields:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Refused(400, "a header field is not NAME: VALUE")
        value = value.strip(" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise _Refused(400, f"the {name[:40]} header holds control characters")
        if name.lower() == "host":
            hosts.append(value)
    host = _HOST.fullmatch(hosts[0]) if len(hosts) == 1 else None
    if host is None:
        raise _Refused(400, "name this page's host in one Host header (Host: 127.0.0.1:PORT)")
    raw = target.split("?", 1)[0]
    if _BAD_ESCAPE.search(raw):
        raise _Refused(400, "a % in the path starts no %XX escape")
    try:
        path = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(400, "the path is not UTF-8") from None
    if _CONTROL.search(path):
        raise _Refused(400, "the path holds control characters")
    return Request(path, host.group(1).removeprefix("[").removesuffix("]").lower())


# --- the server ----------------------------------------------------------------------------------------

READING, ANSWERING, SENDING, CLOSING, CLOSED = "reading", "answering", "sending", "closing", "closed"
ACCEPTS_PER_TURN = 256
"""Connections accepted before the loop reads and writes again (a flood of connects cannot starve them)."""
LINGER_S = 2.0
"""After its answer, how long a connection may take to close its side (what it still sends is dropped)."""
LINGER_BYTES = 65536
ACCEPT_PAUSE_S = 0.5
"""When the process is out of descriptors, how long the page stops accepting (the daemon needs them more)."""
MAX_WAIT_S = 1.0


class _Connection:
    """One client: its socket, what it sent, what it is being sent, and until when it may take."""

    def __init__(self, sock: socket.socket, now: float, limits: Limits) -> None:
        self.sock = sock
        self.state = READING
        self.received = bytearray()
        self.scanned = 0
        """Bytes of `received` already searched for the head's end."""
        self.outgoing = memoryview(b"")
        self.lingered = 0
        """Bytes read and dropped after its answer."""
        self.active = now
        self.deadline = now + limits.request_s
        self.events = 0
        """What the selector watches for on it (0: not registered)."""


class _Server:
    """The page's sockets (one selector loop) and its handler threads (answers)."""

    def __init__(self, address: tuple[str, int], state_dir: Path, runs_dir: Path, limits: Limits) -> None:
        self.state_dir, self.runs_dir, self.limits = state_dir, runs_dir, limits
        self.socket = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(1024)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.socket, selectors.EVENT_READ)
        self._wake_in, self._wake_out = socket.socketpair()
        for end in (self._wake_in, self._wake_out):
            end.setblocking(False)
        self.selector.register(self._wake_in, selectors.EVENT_READ)
        self.connections: set[_Connection] = set()
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.handlers: list[threading.Thread] = []
        self._accepting_at: float | None = None
        """While accepting is paused: when it resumes."""
        self._stopping = False

    def start_handlers(self) -> None:
        for number in range(self.limits.handlers):
            thread = threading.Thread(target=self._handle_requests, name=f"runner-page-{number}", daemon=True)
            thread.start()
            self.handlers.append(thread)

    def serve_forever(self) -> None:
        while not self._stopping:
            ready = self.selector.select(self._wait())
            now = time.monotonic()
            for key, _ in ready:
                if key.fileobj is self.socket:
                    self._accept(now)
                elif key.fileobj is self._wake_in:
                    with suppress(OSError):
                        self._wake_in.recv(4096)
                else:
                    self._guarded(key.data, self._ready, now)
            while not self.answers.empty():
                connection, answer = self.answers.get()
                if connection.state == ANSWERING:
                    self._guarded(connection, self._answer, answer, now)
            self._expire(now)

    def shutdown(self) -> None:
        self._stopping = True
        self._wake()
        for _ in self.handlers:
            self.requests.put(None)
        for thread in self.handlers:
            thread.join(timeout=5)

    def server_close(self) -> None:
        for connection in list(self.connections):
            self._close(connection)
        self.selector.close()
        for sock in (self.socket, self._wake_in, self._wake_out):
            sock.close()

    # --- the loop's steps (the runner-page thread alone) ---

    def _wait(self) -> float:
        deadlines = [self._deadline(connection) for connection in self.connections if connection.state != ANSWERING]
        if self._accepting_at is not None:
            deadlines.append(self._accepting_at)
        return max(0.0, min([time.monotonic() + MAX_WAIT_S, *deadlines]) - time.monotonic())

    def _deadline(self, connection: _Connection) -> float:
        if connection.state == READING:
            return min(connection.deadline, connection.active + self.limits.idle_s)
        return connection.deadline

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, _ = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno != errno.ECONNABORTED:  # out of descriptors (EMFILE, ENFILE) or buffers
                    self.selector.unregister(self.socket)
                    self._accepting_at = now + ACCEPT_PAUSE_S
                    return
                continue
            sock.setblocking(False)
            if len(self.connections) >= self.limits.connections and not self._make_room():
                with suppress(OSError):  # every connection is being answered: this one is told to come back
                    sock.send(_error(503, "the page is answering as many requests as it may; try again"))
                sock.close()
                continue
            connection = _Connection(sock, now, self.limits)
            self.connections.add(connection)
            self._watch(connection, selectors.EVENT_READ)

    def _make_room(self) -> bool:
        """Close the connection that matters least (one closing after its answer, else the one silent the
        longest while it sends its request): a flood of idle connections cannot lock the page."""
        waiting = [connection for connection in self.connections if connection.state in (CLOSING, READING)]
        if not waiting:
            return False
        self._close(min(waiting, key=lambda connection: (connection.state != CLOSING, connection.active)))
        return True

    def _ready(self, connection: _Connection, now: float) -> None:
        if connection.state == READING:
            self._read(connection, now)
        elif connection.state == SENDING:
            self._send(connection, now)
        elif connection.state == CLOSING:
            self._linger(connection)

    def _read(self, connection: _Connection, now: float) -> None:
        chunk = _receive(connection)
        if chunk is None:
            return
        if not chunk:  # the client left before it finished its request
            self._close(connection)
            return
        connection.received += chunk
        connection.active = now
        try:
            request = self._request(connection)
        except _Refused as refused:
            self._answer(connection, _error(refused.code, refused.message), now)
            return
        if request is not None:
            self._watch(connection, 0)
            connection.state = ANSWERING
            self.requests.put((connection, request))

    def _request(self, connection: _Connection) -> Request | None:
        """The request once its head is complete; None while it is not; _Refused past a limit."""
        received, limits = connection.received, self.limits
        line_end = received.find(b"\n")
        if line_end > limits.request_line or (line_end < 0 and len(received) > limits.request_line):
            raise _Refused(414, f"the request line is longer than {limits.request_line} bytes")
        if line_end < 0:
            return None
        request_line(bytes(received[:line_end]))  # what is not a GET is answered at once (HTTP/0.9 sends no head)
        end = _HEAD_END.search(received, max(0, connection.scanned - 2))
        connection.scanned = len(received)
        if (end.end() if end else len(received)) > limits.head_bytes:
            raise _Refused(431, f"the request head is longer than {limits.head_bytes} bytes")
        return parse_head(bytes(received[:end.start()]), limits) if end else None

    def _answer(self, connection: _Connection, answer: bytes, now: float) -> None:
        connection.state, connection.outgoing = SENDING, memoryview(answer)
        connection.deadline = now + self.limits.answer_s
        self._watch(connection, selectors.EVENT_WRITE)
        self._send(connection, now)

    def _send(self, connection: _Connection, now: float) -> None:
        try:
            sent = connection.sock.send(connection.outgoing)
        except BlockingIOError:
            return
        except OSError:
            self._close(connection)
            return
        connection.outgoing = connection.outgoing[sent:]
        if connection.outgoing:
            return
        try:  # one answer per connection; what the client still sends is read and dropped, so that its
            connection.sock.shutdown(socket.SHUT_WR)  # unread bytes do not reset the answer it is reading
        except OSError:
            self._close(connection)
            return
        connection.state, connection.deadline = CLOSING, now + LINGER_S
        self._watch(connection, selectors.EVENT_READ)

    def _linger(self, connection: _Connection) -> None:
        chunk = _receive(connection)
        if chunk is None:
            return
        connection.lingered += len(chunk)
        if not chunk or connection.lingered > LINGER_BYTES:
            self._close(connection)

    def _expire(self, now: float) -> None:
        if self._accepting_at is not None and now >= self._accepting_at:
            self._accepting_at = None
            self.selector.register(self.socket, selectors.EVENT_READ)
        for connection in list(self.connections):
            if connection.state == ANSWERING or now < self._deadline(connection):
                continue
            if connection.state == READING and connection.received:
                self._guarded(connection, self._answer, _error(408, "the request came too slowly"), now)
                connection.deadline = now + LINGER_S  # a client that does not read its 408 is not waited for
            else:
                self._close(connection)

    def _watch(self, connection: _Connection, events: int) -> None:
        if events == connection.events:
            return
        if not events:
            self.selector.unregister(connection.sock)
        elif connection.events:
            self.selector.modify(connection.sock, events, connection)
        else:
            self.selector.register(connection.sock, events, connection)
        connection.events = events

    def _close(self, connection: _Connection) -> None:
        if connection.state == CLOSED:
            return
        if connection.events:
            with suppress(KeyError, ValueError, OSError):
                self.selector.unregister(connection.sock)
        connection.sock.close()
        connection.state, connection.events = CLOSED, 0
        self.connections.discard(connection)

    def _guarded(self, connection: _Connection, step, *arguments) -> None:
        """A step on one connection: whatever it raises closes that connection, never the page."""
        try:
            step(connection, *arguments)
        except Exception as error:  # a bug: one line for the log, and the page goes on
            _note("a connection failed", error)
            self._close(connection)

    def _wake(self) -> None:
        with suppress(OSError):  # a full wake-up pipe has woken the loop already
            self._wake_out.send(b"\0")

    # --- the handler threads ---

    def _handle_requests(self) -> None:
        while (item := self.requests.get()) is not None:
            connection, request = item
            self.answers.put((connection, _Handler(self, request).respond()))
            self._wake()


class _Handler:
    """One request's answer, by route."""

    def __init__(self, server: _Server, request: Request) -> None:
        self.server, self.path, self.host = server, request.path, request.host
        self.answer = b""

    def respond(self) -> bytes:
        try:
            self.do_GET()
        except Exception as error:  # a bug, not the client's doing: one line for the log and a 500
            _note(f"GET {self.path[:200]!r}", error)
            self._json(500, {"error": "the page failed to answer this request (the server's log says why)"})
        return self.answer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path
        try:
            if not self._host_allowed():
                raise _Refused(421, "this page answers to its loopback address only")
            if path in STATIC:
                name, kind = STATIC[path]
                self._send(200, (PAGE_FILES / name).read_bytes(), kind)
            elif path.startswith("/run/"):
                self._run_folder(path.removeprefix("/run/"))  # 403/404 now rather than an empty page
                self._send(200, (PAGE_FILES / "run.html").read_bytes(),
                           "text/html")
            elif path.startswith("/api/"):
                self._json(200, self._api(path.removeprefix("/api/")))
            else:
                raise _Refused(404, "no such page")
        except _Refused as refused:
            self._json(refused.code, {"error": refused.message})
        except RunnerError as error:  # no store (yet), or one that cannot be read
            self._json(503, {"error": error.message, "hint": error.hint})
        except sqlite3.Error as error:  # a store being replaced or repaired under the reader
            self._json(503, {"error": f"the store cannot be read now: {error}", "hint": "try again"})

    def _host_allowed(self) -> bool:
        """On a loopback address, only requests that name a loopback host: a web page elsewhere that points
        its own name at 127.0.0.1 (DNS rebinding) cannot read the jobs through a visitor's browser."""
        bound = self.server.server_address[0]
        if not ipaddress.ip_address(bound).is_loopback:
            return True  # reached by whatever name the box has; the address was asked for
        return self.host == "localhost" or _is_loopback(self.host)

    def _api(self, path: str):
        parts = path.split("/")
        if parts[0] == "jobs" and len(parts) <= 2:
            store = Store.existing(self.server.state_dir, writable=False)
            try:
                if len(parts) == 1 or parts[1] == "":
                    return report.overview(store, self.server.state_dir, self.server.runs_dir)
                found = report.job_detail(store, self.server.state_dir, self.server.runs_dir,
                                          int(parts[1])) if _JOB_ID.fullmatch(parts[1]) else None
            finally:
                store.close()
            if found is None:
                raise _Refused(404, f"no job {parts[1][:40]}")
            return found
        if parts[0] == "runs" and len(parts) > 1:
            name = "/".join(parts[1:])
            if parts[-1] == "metrics":
                return report.run_metrics(self._run_folder(name.removesuffix("/metrics")))
            return report.run_detail(self._run_folder(name))
        raise _Refused(404, "no such API")

    def _run_folder(self, name: str) -> Path:
        try:
            folder = report.run_folder(name, self.server.runs_dir)
        except report.OutsideRunRoot:
            raise _Refused(403, "outside the run root") from None
        except OSError:  # a name no folder can have (too long, a loop of links)
            folder = None
        if folder is None:
            raise _Refused(404, "no run there")
        return folder

    def _json(self, code: int, data) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.answer = _response(code, body, kind)


def _receive(connection: _Connection) -> bytes | None:
    """What the client sent next: None when nothing came yet, b"" when it closed or its connection failed."""
    try:
        return connection.sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _response(code: int, body: bytes, kind: str) -> bytes:
    """A whole HTTP answer; the connection closes after it."""
    head = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", f"Date: {formatdate(usegmt=True)}", "Server: runner",
            "Connection: close", f"Content-Type: {kind}; charset=utf-8", f"Content-Length: {len(body)}",
            *(f"{header}: {value}" for header, value in SECURITY_HEADERS.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _error(code: int, message: str) -> bytes:
    return _response(code, json.dumps({"error": message}).encode(), "application/json")


def _note(what: str, error: BaseException) -> None:
    """One line on stderr (the daemon's journal) for what should not happen; requests are not logged."""
    with suppress(OSError, ValueError):
        print(f"runner page: {what}: {type(error).__name__}: {str(error)[:300]}", file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
