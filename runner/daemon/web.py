"""The daemon's read-only status page and JSON API (`runner watch --http`, `runner serve`).

Stdlib only: a ThreadingHTTPServer in a thread beside the loop. A request reads the store through its
own read-only connection and the run folders through runner.daemon.report (the same JSON `runner
status --format json` prints); it never touches the supervisor's objects, so a slow or hostile client
cannot stall the loop. It binds exactly the address it is given (loopback unless told otherwise).
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

import ipaddress
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:8765)."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--http {text}: not an address to listen on", "give HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that never finishes its request never holds the daemon's exit

    def __init__(self, address: tuple[str, int], state_dir: Path, runs_dir: Path) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.state_dir, self.runs_dir = state_dir, runs_dir
        super().__init__(address, _Handler)


class Page:
    """The server, bound on creation (a taken port is an error before the daemon starts its loop)."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.thread: threading.Thread | None = None

    @classmethod
    def bind(cls, address: str, state_dir: Path, runs_dir: Path) -> Page:
        host, port = parse_address(address)
        try:
            return cls(_Server((host, port), state_dir, runs_dir))
        except OSError as error:
            raise RunnerError(f"cannot listen on {address}: {error.strerror or error}",
                              "give another --http HOST:PORT (a free port, an address of this machine)") from None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="runner-page", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "runner"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
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

    def _host_allowed(self) -> bool:
        """On a loopback address, only requests that name a loopback host: a web page elsewhere that points
        its own name at 127.0.0.1 (DNS rebinding) cannot read the jobs through a visitor's browser."""
        bound = self.server.server_address[0]
        if not ipaddress.ip_address(bound).is_loopback:
            return True  # reached by whatever name the box has; the address was asked for
        host = urllib.parse.urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return host == "localhost" or _is_loopback(host)

    def _api(self, path: str):
        parts = path.split("/")
        if parts[0] == "jobs" and len(parts) <= 2:
            store = Store.existing(self.server.state_dir, writable=False)
            try:
                if len(parts) == 1 or parts[1] == "":
                    return report.overview(store, self.server.state_dir, self.server.runs_dir)
                found = report.job_detail(store, self.server.state_dir, self.server.runs_dir,
                                          int(parts[1])) if parts[1].isdigit() else None
            finally:
                store.close()
            if found is None:
                raise _Refused(404, f"no job {parts[1]}")
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
        if folder is None:
            raise _Refused(404, "no run there")
        return folder

    def _json(self, code: int, data) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for header, value in SECURITY_HEADERS.items():
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's name)
        """Requests are not logged: the daemon's log is its jobs' story, not its readers'."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
