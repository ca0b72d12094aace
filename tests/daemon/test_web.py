"""The status page and its JSON API: what they bind, what they refuse, what they show (a real daemon with
the fake runner children, and a real headless Chromium at two window widths, measured in the page: nothing
wider than the window, charts inside their cards with axis ticks, numbers rounded, words never broken; the
screenshots land in .artifacts/)."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.daemon.store import Store
from runner.daemon.web import Limits, Page
from runner.errors import UsageError
from tests.conftest import REPO
from tests.daemon.browser import Browser
from tests.daemon.harness import fake_daemon, spec_text, wait_until

SCRIPT = "<script>alert(1)</script>"
HOSTILE_FILE = "<img src=x onerror=alert(1)>.yaml"
ARTIFACTS = REPO / ".artifacts"
ANSWER = ("I am a helpful assistant trained by a community of volunteers; my answers wrap between words "
          "wherever the column ends, and none of them is ever broken in the middle, however narrow it is.")


def get(port: int, path: str, host: str = "127.0.0.1", headers: dict | None = None) -> tuple[int, dict | str]:
    """GET a raw path (http.client sends it as it is: no `..` folding as a browser or urllib would)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read().decode()
        kind = response.getheader("Content-Type", "")
    finally:
        connection.close()
    return response.status, json.loads(body) if kind.startswith("application/json") else body


@pytest.fixture
def serve(tmp_path):
    """Start a page (with these limits) on a state dir with one run, and a run-like folder outside the run root."""
    state, runs = tmp_path / "state", tmp_path / "runs"
    state.mkdir()
    Store.for_daemon(state)[0].close()
    run = runs / "runs" / "tiny" / "20260101-000000-abcdef12"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"name": "tiny", "state": "succeeded"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "epoch": 0.5 * s, "elapsed_s": s,
                                                           "learning_rate": 1e-4, **({"eval_loss": 0.4} if s == 2 else {})})
                                               + "\n" for s in (1, 2, 3)))
    outside = tmp_path / "secret"  # a run-like folder beside the run root
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"name": "secret"}))
    (outside / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.0}) + "\n")
    (runs / "runs" / "leak").symlink_to(outside)
    started = []

    def start(limits: Limits | None = None) -> Page:
        served = Page.bind("127.0.0.1:0", state, runs, limits)
        served.start()
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def page(serve):
    return serve()


def test_it_binds_only_the_address_it_is_given(page):
    host, port = page.server.socket.getsockname()
    assert (host, page.url) == ("127.0.0.1", f"http://127.0.0.1:{port}/")
    assert get(port, "/api/jobs")[0] == 200
    with pytest.raises(ConnectionRefusedError):  # another loopback address: bound to 127.0.0.1 alone, not all
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/api/jobs/1", body=b"{}")  # read-only: nothing but GET is answered
    assert connection.getresponse().status == 501
    connection.close()


def test_a_request_for_another_host_name_is_refused(page):
    port = page.server.server_address[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
        assert get(port, "/api/jobs", headers={"Host": host})[0] == 200, host
    code, body = get(port, "/api/jobs", headers={"Host": f"evil.example:{port}"})  # DNS rebinding
    assert code == 421 and "jobs" not in body


def test_a_taken_port_or_a_bad_address_is_a_clear_error(page, tmp_path):
    with pytest.raises(Exception, match="cannot listen on") as raised:
        Page.bind(page.url.removeprefix("http://").rstrip("/"), tmp_path, tmp_path)
    assert raised.value.hint
    with pytest.raises(UsageError, match="HOST:PORT"):
        Page.bind("localhost", tmp_path, tmp_path)


@pytest.mark.parametrize("path", [
    "/api/runs/../secret", "/api/runs/../secret/metrics", "/api/runs/%2e%2e/secret/metrics",
    "/api/runs/runs/../../secret", "/api/runs/runs/leak/metrics", "/run/../secret", "/run/runs/leak",
    "/api/runs//etc/passwd"])
def test_a_path_outside_the_run_root_is_refused(page, path):
    code, body = get(page.server.server_address[1], path)
    assert code == 403, body
    assert "secret" not in json.dumps(body) and "9.0" not in json.dumps(body)


def test_a_run_under_the_run_root_is_served(page):
    port = page.server.server_address[1]
    code, body = get(port, "/api/runs/runs/tiny/20260101-000000-abcdef12/metrics")
    loss = [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert (code, body) == (200, {"lines": 3, "points": loss, "series": {  # every curve; epoch and time are not
        "loss": loss, "learning_rate": [[1, 1e-4], [2, 1e-4], [3, 1e-4]], "eval_loss": [[2, 0.4]]}})
    assert get(port, "/api/runs/runs/tiny/20260101-000000-abcdef12")[1]["manifest"]["name"] == "tiny"
    assert get(port, "/api/runs/runs/tiny/missing")[0] == 404
    assert get(port, "/api/jobs/99")[0] == 404
    assert get(port, "/nothing")[0] == 404
    code, html = get(port, "/run/runs/tiny/20260101-000000-abcdef12")
    assert code == 200 and 'data-page="run"' in html


# --- hostile clients: malformed requests, slow clients, floods of connections --------------------------

HOST = b"Host: 127.0.0.1\r\n"
RESPONSE_HEAD = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n((?:[!-9;-~]+: [^\r\n]*\r\n)*)\r\n", re.DOTALL)
QUICK = Limits(idle_s=0.5, request_s=1.5, answer_s=2.0)
"""Deadlines short enough for a test to wait them out."""


def request(target: bytes, headers: bytes = HOST) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + headers + b"\r\n"


def exchange(port: int, raw: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes as one client, say it has nothing more to send, and read until the page closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(raw)
        client.shutdown(socket.SHUT_WR)
        return read_until_closed(client)


def read_until_closed(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answer_of(data: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole, well-formed answer: a status line, header fields, a body of its length."""
    head = RESPONSE_HEAD.match(data)
    assert head is not None, data[:300]
    fields = dict(line.split(": ", 1) for line in head.group(2).decode("latin-1").splitlines())
    body = data[head.end():]
    assert int(fields["Content-Length"]) == len(body) and fields["Connection"] == "close", fields
    assert fields["Content-Security-Policy"].startswith("default-src 'none'"), fields
    return int(head.group(1)), body


CORPUS = [  # what the first pass and issue 20 sent the page, and more of the same kinds
    ("a digit that is not ASCII", request(b"/api/jobs/%C2%B2"), 404),
    ("an Arabic-Indic digit", request(b"/api/jobs/%D9%A3"), 404),
    ("a 5,000-digit job id", request(b"/api/jobs/" + b"9" * 5000), 404),
    ("a job id beyond SQLite's integers", request(b"/api/jobs/" + b"9" * 30), 404),
    ("a negative job id", request(b"/api/jobs/-1"), 404),
    ("an encoded NUL", request(b"/api/runs/a%00b/metrics"), 400),
    ("a raw NUL", request(b"/api/runs/a\x00b"), 400),
    ("a name longer than a file name may be", request(b"/api/runs/" + b"a" * 300), 404),
    ("a run page of such a name", request(b"/run/" + b"a" * 300), 404),
    ("3,000 nested folders", request(b"/api/runs/" + b"a/" * 3000), 404),
    ("a request line over the limit", request(b"/" + b"a" * 20_000), 414),
    ("a head over the limit", request(b"/", HOST + b"X-Pad: " + b"a" * 20_000 + b"\r\n"), 431),
    ("too many header fields", request(b"/", HOST + b"X-A: b\r\n" * 100), 431),
    ("a Host that is not one", request(b"/api/jobs", b"Host: [::1\r\n"), 400),
    ("a Host with a broken port", request(b"/api/jobs", b"Host: 127.0.0.1:80x\r\n"), 400),
    ("an empty Host", request(b"/api/jobs", b"Host:\r\n"), 400),
    ("no Host", request(b"/api/jobs", b""), 400),
    ("two Hosts", request(b"/api/jobs", HOST + b"Host: evil.example\r\n"), 400),
    ("a NUL in the Host", request(b"/api/jobs", b"Host: 127.0.0.1\x00.evil.example\r\n"), 400),
    ("a % that escapes nothing", request(b"/api/runs/%zz"), 400),
    ("a cut % escape", request(b"/api/runs/%4"), 400),
    ("escapes that are not UTF-8", request(b"/api/runs/%ff"), 400),
    ("an escaped lone surrogate", request(b"/api/runs/%ED%A0%80"), 400),
    ("an escaped control character", request(b"/api/runs/%1b%5b2J"), 400),
    ("a raw byte beyond ASCII", request(b"/api/runs/caf\xc3\xa9"), 400),
    ("HTTP/0.9", b"GET /\r\n", 400),
    ("HTTP/2 in plain text", b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    ("a version that is not one", b"GET / HTTP/1.1.1\r\n" + HOST + b"\r\n", 400),
    ("a version in lower case", b"GET / http/1.1\r\n" + HOST + b"\r\n", 400),
    ("an absolute target", request(b"http://127.0.0.1/api/jobs"), 400),
    ("an asterisk", b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    ("a method in lower case", b"get / HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    ("a NUL in the method", b"G\x00ET / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("two spaces", b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("a tab for a space", b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("a header line without a colon", request(b"/", HOST + b"oops\r\n"), 400),
    ("a space in a header name", request(b"/", HOST + b"X Y: z\r\n"), 400),
    ("a folded header line", request(b"/", HOST + b"X-A: b\r\n c\r\n"), 400),
    ("an empty request line", b"\r\n\r\n", 400),
    ("nothing at all", b"", None),
    ("a request cut short", b"GET /api/jobs HTT", None),
    ("a TLS hello on the plain port", bytes.fromhex("16030100a5010000a10303") + bytes(40), None),
    ("bare line feeds", b"GET /api/jobs HTTP/1.1\nHost: 127.0.0.1\n\n", 200),
    ("a body with a GET", request(b"/api/jobs", HOST + b"Content-Length: 5\r\n") + b"hello", 200),
    ("a header value in Latin-1", request(b"/api/jobs", HOST + b"X-Name: caf\xe9\r\n"), 200),
]


@pytest.mark.parametrize("raw, status", [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS])
def test_a_malformed_request_gets_its_4xx_and_no_traceback(page, capfd, raw, status):
    data = exchange(page.server.server_address[1], raw)
    if status is None:  # it never became a request: closed without a word
        assert data == b""
    else:
        code, body = answer_of(data)
        assert code == status, body
        assert code == 200 or "error" in json.loads(body)
    assert capfd.readouterr().err == ""


def test_a_slow_client_is_cut_at_its_deadlines(serve):
    port = serve(QUICK).server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:  # silent after its first line
        started = time.monotonic()
        client.sendall(b"GET /api/jobs HTTP/1.1\r\n")
        assert answer_of(read_until_closed(client))[0] == 408
        assert QUICK.idle_s - 0.1 < time.monotonic() - started < QUICK.idle_s + 1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:  # one byte every 0.2 s: never idle
        started = time.monotonic()
        client.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while not select.select([client], [], [], 0.2)[0] and time.monotonic() - started < 10:
            client.sendall(b"a")
        assert answer_of(read_until_closed(client))[0] == 408
        assert QUICK.request_s - 0.1 < time.monotonic() - started < QUICK.request_s + 1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:  # says nothing at all
        started = time.monotonic()
        assert read_until_closed(client) == b""
        assert time.monotonic() - started < QUICK.idle_s + 1


def test_idle_connections_beyond_the_cap_give_way_to_a_request(serve):
    page = serve(Limits(connections=8))
    port = page.server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        started = time.monotonic()
        assert answer_of(exchange(port, request(b"/api/jobs")))[0] == 200
        assert time.monotonic() - started < 2
        assert len(page.server.connections) <= 8
    finally:
        for client in idle:
            client.close()


def test_the_connection_cap_follows_the_descriptor_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    shown = subprocess.run(
        [sys.executable, "-c", "from runner.daemon.web import Limits; print(Limits().connections, "
                               "Limits().descriptors())"], capture_output=True, text=True, cwd=REPO, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    assert shown.stdout.split() == ["16", "36"], shown.stderr  # 36 of the process's 256


TARGETS = ["/", "/page.js", "/api/jobs", "/api/jobs/1", "/api/jobs/x", "/api/runs/runs/tiny/20260101-000000-abcdef12",
           "/api/runs/runs/tiny/20260101-000000-abcdef12/metrics", "/api/runs/../secret", "/run/runs/leak", "/%",
           "/%00", "/%ff", "/a?b=%zz", "*", "http://x/", "/" + "a" * 300]
HEADERS = [b"Host: 127.0.0.1", b"Host: localhost:1", b"Host: [::1]", b"Host: evil.example", b"Host: [", b"Host:",
           b"X: \x00", b"X:: y", b" folded", b"no colon", b"Content-Length: -1", b"Transfer-Encoding: chunked",
           b"Connection: keep-alive", b"Host: 127.0.0.1:99999999"]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(method=st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"", b"G\x00T"]) | st.binary(max_size=8),
       target=st.sampled_from(TARGETS).map(str.encode) | st.binary(max_size=300),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2", b"", b"HTTP/1.1 x"])
       | st.binary(max_size=10),
       space=st.sampled_from([b" ", b"  ", b"\t", b"\x00"]),
       headers=st.lists(st.sampled_from(HEADERS) | st.binary(max_size=60), max_size=6),
       newline=st.sampled_from([b"\r\n", b"\n", b"\r"]), tail=st.binary(max_size=40))
def test_any_request_gets_a_well_formed_answer_or_a_quiet_close(page, capfd, method, target, version, space,
                                                                headers, newline, tail):
    raw = space.join(part for part in (method, target, version) if part) + newline
    raw += b"".join(header + newline for header in headers) + newline + tail
    data = exchange(page.server.server_address[1], raw)
    if data:
        assert answer_of(data)[0] in (200, 400, 403, 404, 414, 421, 431, 501, 505)
    assert capfd.readouterr().err == ""


def raised_descriptor_limit(at_least: int) -> None:
    """The test's own sockets need descriptors too: raise this process's soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < at_least:
        pytest.skip(f"this machine allows {hard} descriptors per process; the test needs {at_least}")
    if soft != resource.RLIM_INFINITY and soft < at_least:
        resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_thousand_idle_connections_stop_neither_the_page_nor_the_daemon(daemon):
    """Issue 20: ~1,000 idle connections took a thread and a descriptor each inside the daemon's process, until
    the page stopped and the daemon could admit nothing. The page now holds at most its cap."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if limit[0] == resource.RLIM_INFINITY or limit[0] > 1024:  # the daemon gets a common default limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, limit[1]))
        daemon.start("--http", "127.0.0.1:0")
        raised_descriptor_limit(2048)
        url = wait_until(lambda: json.loads((daemon.state / "daemon.json").read_text()).get("http")
                         if (daemon.state / "daemon.json").is_file() else None, what="the page's address")
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert get(port, "/api/jobs")[0] == 200
        baseline = descriptors(daemon.process.pid)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(1000)]
        try:
            held = [descriptors(daemon.process.pid)]
            started = time.monotonic()
            assert get(port, "/api/jobs")[0] == 200
            assert time.monotonic() - started < 2
            (daemon.folder / "admitted.yaml").write_text(spec_text("admitted"))
            daemon.wait_for(lambda jobs: any(job.name == "admitted" and job.state.value == "succeeded"
                                             for job in jobs), timeout=30, what="the job admitted, run and done")
            held.append(descriptors(daemon.process.pid))
        finally:
            for client in idle:
                client.close()
        assert max(held) - baseline <= Limits().descriptors(), (baseline, held)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)


# --- a real daemon: the API, `runner status --format json`, and the page in a browser ----------------

@pytest.fixture(scope="module")
def scenario(tmp_path_factory, plan_template, tiny_model_dir):
    """One job finished, one running (its metrics all written, then holding), one queued behind it
    (--max-jobs 1), and one spec whose file name is HTML."""
    root = tmp_path_factory.mktemp("web")
    daemon = fake_daemon(root, plan_template, tiny_model_dir)
    daemon.start("--http", "127.0.0.1:0", "--max-jobs", "1")
    (daemon.folder / "done.yaml").write_text(spec_text("done", "priority: 2\n# fake-metrics: 4\n"))
    done = daemon.wait_for(lambda jobs: any(j.name == "done" and j.state.value == "succeeded" for j in jobs),
                           what="done")
    manifest_file = Path(next(j for j in done if j.name == "done").run_dir) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())  # what a real run's manifest adds: metrics, samples
    manifest["metrics"].update(train_loss=0.8192039728164673, tokens_per_second=1234.5678, trained_tokens=123456,
                               peak_memory_bytes=int(1.5 * 2**30))
    manifest["samples"] = [{"prompt": "What is your name?", "before": ANSWER, "after": ANSWER.upper()}]
    manifest_file.write_text(json.dumps(manifest))
    (daemon.folder / "long.yaml").write_text(spec_text(
        "long", f"priority: 1\n# fake-seconds: 0.3\n# fake-metrics: 12\n# fake-hold: 120\n# fake-log: {SCRIPT}\n"))
    daemon.wait_for(lambda jobs: any(j.name == "long" and j.state.value == "running" for j in jobs), what="long runs")
    (daemon.folder / "waiting.yaml").write_text(spec_text("waiting"))
    (daemon.folder / HOSTILE_FILE).write_text("version: 1\nname: Not A Name\n")
    daemon.wait_for(lambda jobs: len(jobs) == 4 and any(j.name == "waiting" and j.step and j.step.value == "resources"
                                                        for j in jobs) and any(j.state.value == "invalid" for j in jobs),
                    what="the queued and the invalid job")
    described = json.loads((daemon.state / "daemon.json").read_text())
    by_name = {job.name or Path(job.path).name: job for job in daemon.jobs()}
    metrics = Path(by_name["long"].run_dir) / "metrics.jsonl"
    wait_until(lambda: len(metrics.read_text().splitlines()) == 12, what="all metrics of the running job")
    yield daemon, described["http"], by_name
    daemon.stop()  # warm: the held run is stopped too (a killed daemon would leave it running)


def test_the_api_and_status_json_say_the_same(scenario):
    daemon, url, jobs = scenario
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    code, api = get(port, "/api/jobs")
    assert code == 200
    code, out = daemon.cli("status", "--format", "json")
    assert code == 0
    status = json.loads(out)
    assert status["queue"] == api["queue"] == [jobs["waiting"].id]
    assert api["running"] == status["running"] == [jobs["long"].id]
    assert set(api["recent"]) == {jobs["done"].id, jobs[HOSTILE_FILE].id}
    waiting = next(job for job in api["jobs"] if job["id"] == jobs["waiting"].id)
    assert waiting["waits_for"] == "resources" and "job slot" in waiting["reason"]
    running = next(job for job in api["jobs"] if job["id"] == jobs["long"].id)
    assert running["progress"]["step"] == 12 and running["progress"]["tokens_per_second"] == 1234.5
    code, detail = get(port, f"/api/jobs/{jobs['long'].id}")
    assert SCRIPT in detail["log_tail"]  # the API gives the text as it is; the page sets it as text
    code, metrics = get(port, f"/api/runs/{running['run']}/metrics")
    assert metrics["lines"] == 12 and len(metrics["points"]) == 12


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("RUNNER_REQUIRE_CHROMIUM") == "1":
        pytest.fail("RUNNER_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install -y chromium)")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page's browser test needs it")
    return found


@pytest.fixture(scope="module")
def browser():
    opened = Browser(chromium())
    yield opened
    opened.close()


WIDTHS = (1400, 900)
"""A laptop's full window, and half of a wide screen."""

LAYOUT = """(() => {
  const inside = (inner, outer) => inner.left >= outer.left - 0.5 && inner.right <= outer.right + 0.5;
  const charts = [...document.querySelectorAll("figure.chart")].map(figure => {
    const card = figure.closest(".job") || figure.closest("section");
    const svg = figure.querySelector("svg").getBoundingClientRect(), box = figure.getBoundingClientRect();
    return {fits: inside(box, card.getBoundingClientRect()) && inside(svg, box), width: svg.width,
            ticks: figure.querySelectorAll("svg text").length, series: figure.querySelector("svg").dataset.series,
            title: figure.querySelector("figcaption").textContent};
  });
  const broken = [];  // words broken across lines: in any cell but those of names without spaces (.code)
  const cells = [...document.querySelectorAll("td:not(.code)")].flatMap(cell => [...cell.childNodes]
    .flatMap(node => node.nodeType === Node.TEXT_NODE ? [node] : [...node.childNodes]));
  for (const text of cells) {
    if (text.nodeType !== Node.TEXT_NODE) continue;
    for (const word of text.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(text, word.index); range.setEnd(text, word.index + word[0].length);
      if (range.getClientRects().length > 1) broken.push(word[0]);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, width: innerWidth, charts, broken,
          text: document.body.innerText, html: document.documentElement.outerHTML};
})()"""


def layout(browser, url: str, width: int, ready: str) -> dict:
    tab = browser.open(url, width)
    tab.wait_for(ready)
    time.sleep(0.5)  # one more refresh of the page's data, as a person would see it
    tab.wait_for(ready)
    shown = tab.evaluate(LAYOUT)
    ARTIFACTS.mkdir(exist_ok=True)
    name = "daemon-run-page" if "/run/" in url else "daemon-page"
    tab.screenshot(ARTIFACTS / f"{name}-{width}.png")
    return shown


def assert_readable(shown: dict, width: int) -> None:
    """Fits the window (no sideways scroll), every chart inside its card with axis ticks, numbers rounded."""
    assert shown["scrollWidth"] <= shown["width"] == width, (width, shown["scrollWidth"])
    assert shown["charts"] and all(chart["fits"] for chart in shown["charts"]), (width, shown["charts"])
    assert all(chart["ticks"] >= 6 for chart in shown["charts"]), shown["charts"]
    assert not re.search(r"\d\.\d{5,}", shown["text"]), re.findall(r"\S*\d\.\d{5,}\S*", shown["text"])
    assert '"event"' not in shown["text"]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_overview_in_a_real_browser(scenario, browser, width):
    daemon, url, jobs = scenario
    shown = layout(browser, url, width, "!!document.querySelector('.job svg.chart polyline')")
    dom, text = shown["html"], shown["text"]
    for name in ("long", "waiting", "done"):
        assert f'data-job-id="{jobs[name].id}"' in dom, dom
    assert f'<tr data-job-id="{jobs["waiting"].id}" data-state="queued">' in dom
    assert f'<div class="job" data-job-id="{jobs["long"].id}" data-state="running">' in dom
    assert f'<tr data-job-id="{jobs["done"].id}" data-state="succeeded">' in dom
    lines = len((Path(jobs["long"].run_dir) / "metrics.jsonl").read_text().splitlines())
    assert f'data-points="{lines}"' in dom and dom.count("<circle") == lines == 12
    assert_readable(shown, width)
    (card,) = shown["charts"]
    assert card["title"] == "Loss" and card["series"] == "loss|eval_loss"
    assert "step 12/12  loss 0.6522  1,234 tok/s  ETA 0:01" in text  # the log tail, rendered: not JSON
    assert shown["broken"] == []
    assert "1,235 tok/s" in text and "loss 0.6522" in text  # the card's facts, rounded
    # an invalid spec: its file, and every error the check found (as the CLI shows them)
    invalid = next(job for job in json.loads(daemon.cli("status", "--format", "json")[1])["jobs"]
                   if job["state"] == "invalid")
    errors = [d for d in invalid["diagnostics"] if d["severity"] == "error"]
    assert len(errors) >= 2
    assert f"{HOSTILE_FILE}\tinvalid" in text and f"{len(errors)} errors:" in text
    assert all(error["summary"] in text for error in errors)
    # HTML in a file name and a log line is shown as text, never made into elements
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and SCRIPT not in dom
    assert "&lt;img src=x onerror=alert(1)&gt;.yaml" in dom and "<img" not in dom


@pytest.mark.parametrize("width", WIDTHS)
def test_a_run_s_page_in_a_real_browser_with_another_run_to_compare(scenario, browser, width):
    daemon, url, jobs = scenario
    by_name = {job["name"]: job for job in json.loads(daemon.cli("status", "--format", "json")[1])["jobs"]}
    done, long = by_name["done"]["run"], by_name["long"]["run"]
    shown = layout(browser, f"{url}run/{done}?compare={long}", width,
                   "document.querySelectorAll('figure.chart polyline.compared').length >= 4")
    assert_readable(shown, width)
    titles = [chart["title"] for chart in shown["charts"]]
    assert titles[:4] == ["Loss", "Learning rate", "Gradient norm", "Tokens per second"], titles
    loss = shown["charts"][0]
    assert loss["series"].split("|") == ["loss", f"loss, long {long.split('/')[-1]}", "eval_loss",
                                         f"eval_loss, long {long.split('/')[-1]}"]
    assert f'data-points="4"' in shown["html"] and "succeeded" in shown["text"]
    assert "<td>trained</td>" in shown["html"] or "<td>lora</td>" in shown["html"]  # the plan's trainable table
    text = shown["text"]
    assert "peak memory bytes\t1.50 GiB" in text and "train loss\t0.8192" in text
    assert "tokens per second\t1,235 tok/s" in text and "trained tokens\t123.5K" in text
    assert "What is your name?" in text and shown["broken"] == []  # answers and tables wrap between words only
    assert re.search(r"\d+(\.\d)?[KM] of \d+(\.\d)?[KM] parameters", text), text[:2000]
