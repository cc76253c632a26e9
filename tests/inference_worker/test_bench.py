"""The benchmark's arithmetic on recorded measurements (the benchmark itself is not a test)."""

import pytest

from inference_worker.engine import bench

FLOOR_MS_AT_50 = bench.decode_bytes("float32") / 50e9 * 1000  # about 9.9 ms


def measurement(ms: float, before_gbs: float, after_gbs: float) -> dict:
    return {"ms": ms, "bandwidth_before": before_gbs * 1e9, "bandwidth_after": after_gbs * 1e9}


def test_each_decode_is_compared_with_the_floor_of_its_own_moment():
    samples = [measurement(1.1 * FLOOR_MS_AT_50, 50, 49), measurement(1.2 * FLOOR_MS_AT_50 / 2, 100, 98)]
    figures = bench.decode_figures(samples, "float32")
    assert figures["pairs"] == figures["of"] == 2
    assert figures["low"] == pytest.approx(1.1) and figures["high"] == pytest.approx(1.2)
    assert figures["ms"] == pytest.approx(0.6 * FLOOR_MS_AT_50)


def test_a_decode_during_a_change_of_phase_is_left_out_of_every_figure():
    """Its short and long generations ran at different speeds: its time may even beat the floor."""
    straddling = measurement(0.5 * FLOOR_MS_AT_50, 100, 50)
    figures = bench.decode_figures([measurement(1.1 * FLOOR_MS_AT_50, 50, 50), straddling], "float32")
    assert (figures["pairs"], figures["of"]) == (1, 2)
    assert figures["median"] == pytest.approx(1.1)
    assert figures["ms"] == pytest.approx(1.1 * FLOOR_MS_AT_50)
    assert "paired: median 1.10x, 1.10-1.10x, 1 of 2" in bench.paired_cell(figures, FLOOR_MS_AT_50)


def test_a_run_with_no_steady_measurement_says_so():
    figures = bench.decode_figures([measurement(8.0, 100, 50)], "float32")
    assert figures["pairs"] == 0 and figures["ms"] == 8.0
    assert "none of 1, the machine changed phase during each" in bench.paired_cell(figures, FLOOR_MS_AT_50)


def test_the_time_per_token_leaves_the_prefill_out_and_takes_the_best_of_each_length(monkeypatch):
    """t(n) = 50 + 2n ms, with a 100 ms hiccup in one short run: 2 ms per token."""
    calls = {8: 0, 72: 0}
    clock = {"now": 0.0}

    def run(n: int) -> None:
        calls[n] += 1
        clock["now"] += (50 + 2 * n + (100 if n == 8 and calls[8] == 1 else 0)) / 1000

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    assert bench.per_token_ms(run) == pytest.approx(2.0)
