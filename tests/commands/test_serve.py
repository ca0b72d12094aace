"""`runner serve`: the daemon's page and API from its state dir, without the daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from runner.daemon.store import Store
from runner.daemon.states import CHECKING
from tests.helpers import REPO


def test_it_serves_the_store_read_only_and_stops_on_sigterm(tmp_path):
    store, _ = Store.for_daemon(tmp_path)
    store.add(str(tmp_path / "a.yaml"), "a" * 64, "a", CHECKING, reason="waiting to be checked")
    store.close()
    served = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--state-dir", str(tmp_path),
                               "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = served.stdout.readline()
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:"), line
        with urllib.request.urlopen(url + "api/jobs", timeout=10) as response:
            jobs = json.load(response)
        assert [(job["name"], job["state"], job["waits_for"]) for job in jobs["jobs"]] == [("a", "queued", "checking")]
        assert jobs["queue"] == [1]
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=30) == 0
    finally:
        served.kill()


def test_a_state_dir_without_a_store_is_an_error_not_a_page(tmp_path):
    done = subprocess.run([sys.executable, "-m", "runner", "serve", "--state-dir", str(tmp_path), "--http",
                           "127.0.0.1:0"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode != 0 and "no runner store" in done.stderr and "Traceback" not in done.stderr
