"""The benchmarks' percentiles."""

import pytest

from portal.percentiles import percentile


def test_percentiles_interpolate_between_the_closest_ranks():
    values = [float(v) for v in range(10, 0, -1)]  # 10..1, unsorted on purpose
    assert percentile(values, 0.5) == pytest.approx(5.5)
    assert percentile(values, 0.9) == pytest.approx(9.1)
    assert percentile(values, 0.0) == 1 and percentile(values, 1.0) == 10
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
