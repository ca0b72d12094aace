"""The status page and its JSON API: what they bind, what they refuse, what they show (a real daemon with
the fake runner children, and a real headless Chromium at two window widths, measured in the page: nothing
wider than the window, charts inside their cards with axis ticks, numbers rounded, words never broken; the
screenshots land in .artifacts/)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from runner.daemon.store import Store
from runner.daemon.web import Page
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
def page(tmp_path):
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
    loss = [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert (code, body) == (200, {"lines": 3, "points": loss, "series": {  # every curve; epoch and time are not
        "loss": loss, "learning_rate": [[1, 1e-4], [2, 1e-4], [3, 1e-4]], "eval_loss": [[2, 0.4]]}})
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
