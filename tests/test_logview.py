"""JSON log lines, as `runner logs`, the page, the daemon's terminal and `runner submit` show them."""

import json

from runner.logview import render, render_text


def line(**record) -> str:
    return json.dumps(record)


def test_progress_and_the_run_s_events_read_as_sentences():
    assert render(line(event="progress", step=12, total_steps=24, loss=0.8192039728164673,
                       tokens_per_second=2345.678, eta_s=75.3)) == "step 12/24  loss 0.8192  2,346 tok/s  ETA 1:15"
    assert render(line(event="run_started", plan="chatty", method="sft", attempt=2, run_dir="/r")) == \
        "run started: chatty (sft), attempt 2"
    assert render(line(event="run_finished", state="failed", error="out of memory", run_dir="/r")) == \
        "run finished: failed: out of memory"
    assert render(line(event="model_loaded", model="./model", seconds=1.234567)) == "model loaded: ./model in 1.235 s"


def test_other_events_are_named_with_their_fields_rounded_and_warnings_say_their_message():
    assert render(line(event="data_ready", train=120000, eval=8, rejected=0)) == \
        "data ready: train 120,000, eval 8, rejected 0"
    assert render(line(event="tracker_failed", level="warning", message="wandb stopped", tracker="wandb")) == \
        "warning: wandb stopped"
    assert render(line(event="job_cancelling", job=3, name="x", timestamp="2026-01-10T09:15:02Z")).endswith(
        " job cancelling: job 3, name x")


def test_what_is_not_a_json_event_is_shown_as_it_is():
    text = "runner run: error: the plan is stale\n  hint: plan again\n{not json\n[1, 2]\n"
    assert render_text(text) == text.rstrip("\n")
