from collections import Counter

import pytest

from runner.data.mixing import rows_per_epoch, selection


@pytest.mark.parametrize("usable, weight, expected", [
    (10, 1, 10), (10, 3, 30), (10, 0.25, 3), (10, 0.5, 5), (10, 1.5, 15), (7, 0.5, 4), (3, 2.5, 8), (1, 0.4, 0),
])
def test_rows_per_epoch_is_usable_rows_times_weight_rounded_half_up(usable, weight, expected):
    assert rows_per_epoch(usable, weight) == expected
    assert len(selection(usable, weight, seed=0, position=0)) == expected


def test_whole_weights_repeat_every_row_and_fractions_sample_without_repeats():
    counts = Counter(selection(10, 2.5, seed=0, position=0))
    assert sorted(counts) == list(range(10))
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # every row twice, half of them once more
    half = selection(10, 0.5, seed=0, position=0)
    assert len(set(half)) == 5 and half == sorted(half)


def test_the_sample_depends_on_the_seed_and_the_source_only():
    assert selection(100, 0.3, seed=1, position=0) == selection(100, 0.3, seed=1, position=0)
    assert selection(100, 0.3, seed=1, position=0) != selection(100, 0.3, seed=2, position=0)
    assert selection(100, 0.3, seed=1, position=0) != selection(100, 0.3, seed=1, position=1)
