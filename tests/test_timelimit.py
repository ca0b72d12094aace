"""A time limit on Python code in the main thread."""

import threading
import time

import pytest

from runner.timelimit import OverTime, limited


def test_a_loop_past_its_limit_is_ended_and_an_outer_limit_goes_on():
    started = time.monotonic()
    with pytest.raises(OverTime):
        with limited(2.0):
            with pytest.raises(OverTime):
                with limited(0.2):
                    while True:
                        pass
            assert time.monotonic() - started < 1.0
            while True:  # the outer limit still holds
                pass
    assert 1.9 < time.monotonic() - started < 3.0


def test_work_within_its_limit_is_untouched_and_no_alarm_is_left():
    with limited(1.0):
        total = sum(range(1000))
    time.sleep(1.2)  # an alarm left behind would end the test process here
    assert total == 499500


def test_off_the_main_thread_it_runs_without_a_limit():
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_in_thread()))
    thread.start()
    thread.join()
    assert outcome == ["done"]


def _in_thread() -> str:
    with limited(0.01):
        time.sleep(0.05)
    return "done"
