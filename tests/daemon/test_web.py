"""The status page and its JSON API: what they bind, what they refuse, what they show (a real daemon with
the fake runner children, and a real headless browser)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from runner.daemon.store import Store
from runner.daemon.web import Page
from runner.errors import UsageError
from tests.conftest import REPO
from tests.daemon.harness import fake_daemon, spec_text, wait_until

SCRIPT = "<script>alert(1)</script>"
HOSTILE_FILE = "<img src=x onerror=alert(1)>.yaml"
ARTIFACTS = REPO / ".artifacts"


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
def page(tmp_path):
    state, runs = tmp_path / "state", tmp_path / "runs"
    state.mkdir()
    Store.for_daemon(state)[0].close()
    run = runs / "runs" / "tiny" / "20260101-000000-abcdef12"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"name": "tiny", "state": "succeeded"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    outside = tmp_path / "secret"  # a run-like folder beside the run root
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"name": "secret"}))
    (outside / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.0}) + "\n")
    (runs / "runs" / "leak").symlink_to(outside)
    served = Page.bind("127.0.0.1:0", state, runs)
    served.start()
    yield served
    served.stop()


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
    assert (code, body) == (200, {"lines": 3, "points": [[1, 1.0], [2, 0.5], [3, 1 / 3]]})
    assert get(port, "/api/runs/runs/tiny/20260101-000000-abcdef12")[1]["manifest"]["name"] == "tiny"
    assert get(port, "/api/runs/runs/tiny/missing")[0] == 404
    assert get(port, "/api/jobs/99")[0] == 404
    assert get(port, "/nothing")[0] == 404
    code, html = get(port, "/run/runs/tiny/20260101-000000-abcdef12")
    assert code == 200 and 'data-page="run"' in html


# --- a real daemon: the API, `runner status --format json`, and the page in a browser ----------------

@pytest.fixture(scope="module")
def scenario(tmp_path_factory, plan_template, tiny_model_dir):
    """One job finished, one running (its metrics all written, then holding), one queued behind it
    (--max-jobs 1), and one spec whose file name is HTML."""
    root = tmp_path_factory.mktemp("web")
    daemon = fake_daemon(root, plan_template, tiny_model_dir)
    daemon.start("--http", "127.0.0.1:0", "--max-jobs", "1")
    (daemon.folder / "done.yaml").write_text(spec_text("done", "priority: 2\n# fake-metrics: 4\n"))
    daemon.wait_for(lambda jobs: any(j.name == "done" and j.state.value == "succeeded" for j in jobs), what="done")
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


def browse(browser: str, url: str, *extra: str) -> str:
    arguments = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--virtual-time-budget=8000", "--window-size=1280,1000", *extra, url]
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_in_a_headless_browser(scenario):
    browser = chromium()
    daemon, url, jobs = scenario
    dom = browse(browser, url, "--dump-dom")
    for name in ("long", "waiting", "done"):
        assert f'data-job-id="{jobs[name].id}"' in dom, dom
    assert f'<tr data-job-id="{jobs["waiting"].id}" data-state="queued">' in dom
    assert f'<div class="job" data-job-id="{jobs["long"].id}" data-state="running">' in dom
    assert f'<tr data-job-id="{jobs["done"].id}" data-state="succeeded">' in dom
    lines = len((Path(jobs["long"].run_dir) / "metrics.jsonl").read_text().splitlines())
    assert f'data-points="{lines}"' in dom and dom.count("<circle") == lines == 12
    # HTML in a file name and a log line is shown as text, never made into elements
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and SCRIPT not in dom
    assert "&lt;img src=x onerror=alert(1)&gt;.yaml" in dom and "<img" not in dom
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "daemon-page.png"
    screenshot.unlink(missing_ok=True)
    browse(browser, url, f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 10_000

    done = next(job for job in json.loads(daemon.cli("status", "--format", "json")[1])["jobs"]
                if job["name"] == "done")
    run_dom = browse(browser, url + "run/" + done["run"], "--dump-dom")
    assert 'data-points="4"' in run_dom and "succeeded" in run_dom
    assert "<td>trained</td>" in run_dom or "<td>lora</td>" in run_dom  # the plan's trainable table
    browse(browser, url + "run/" + done["run"], f"--screenshot={ARTIFACTS / 'daemon-run-page.png'}")
