"""The benchmarks' median interval: what the README's on/off figures are quoted with."""

from __future__ import annotations

import statistics

import pytest

from sim.bench.stats import median_interval


def test_the_interval_holds_the_median_and_widens_with_the_scatter() -> None:
    tight = [2.0 + 0.1 * (i % 5) for i in range(30)]
    wide = [2.0 + 4.0 * ((i * 7) % 11 - 5) for i in range(30)]
    low, high = median_interval(tight)
    assert low <= statistics.median(tight) <= high
    wide_low, wide_high = median_interval(wide)
    assert wide_low <= statistics.median(wide) <= wide_high
    assert wide_high - wide_low > 10 * (high - low) > 0


def test_a_constant_sample_has_no_width_and_a_run_can_be_printed_again() -> None:
    assert median_interval([1.5] * 12) == (1.5, 1.5)
    sample = [float(x) for x in (3, -1, 4, 1, -5, 9, 2, 6, -5, 3)]
    assert median_interval(sample) == median_interval(sample)
    assert median_interval(sample, confidence=0.5) != median_interval(sample, confidence=0.99)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        median_interval([])
