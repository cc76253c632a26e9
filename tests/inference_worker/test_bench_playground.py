"""The playground benchmark's arithmetic and parsing on recorded values (the benchmark itself,
``manage.py bench_playground``, is not a test)."""

import json

import pytest

from inference_worker import bench_playground as bp


def test_latencies_are_summarised_in_milliseconds():
    figures = bp.latency_ms([0.010, 0.030, 0.020, 0.040, 0.100])
    assert figures["n"] == 5
    assert figures["median"] == pytest.approx(30.0)
    assert figures["p90"] == pytest.approx(76.0)  # between 40 and 100, 0.6 of the way
    assert (figures["min"], figures["max"]) == (pytest.approx(10.0), pytest.approx(100.0))


def measurement(tokens_per_s: float, before_gbs: float, after_gbs: float) -> dict:
    return {"tokens_per_s": tokens_per_s, "bandwidth_before": before_gbs * 1e9, "bandwidth_after": after_gbs * 1e9}


def test_the_paired_ratio_is_the_median_of_each_pairs_own_ratio():
    pairs = [{"path": measurement(90, 50, 50), "engine": measurement(100, 50, 49)},
             {"path": measurement(40, 30, 30), "engine": measurement(50, 30, 31)},   # a slow minute: 0.8
             {"path": measurement(190, 80, 79), "engine": measurement(200, 80, 80)}]
    ratio = bp.paired_ratio(pairs, threshold=0.1)
    assert ratio["ratios"] == pytest.approx([0.9, 0.8, 0.95])
    assert ratio["median"] == pytest.approx(0.9)
    assert (ratio["steady"], ratio["of"]) == (3, 3)
    assert (ratio["low"], ratio["high"]) == (pytest.approx(0.8), pytest.approx(0.95))


def test_a_pair_during_which_the_machine_changed_phase_is_left_out_of_the_median():
    """Its whole-path side ran at 50 GB/s and its in-process side at 80: their ratio says nothing."""
    pairs = [{"path": measurement(90, 50, 50), "engine": measurement(100, 50, 50)},
             {"path": measurement(100, 50, 50), "engine": measurement(200, 80, 80)},
             {"path": measurement(95, 50, 51), "engine": measurement(100, 50, 50)}]
    ratio = bp.paired_ratio(pairs, threshold=0.1)
    assert not bp.steady(pairs[1], 0.1) and bp.steady(pairs[0], 0.1)
    assert (ratio["steady"], ratio["of"]) == (2, 3)
    assert ratio["median"] == pytest.approx(0.925)
    assert ratio["median_all"] == pytest.approx(0.9)


def test_with_no_steady_pair_every_pair_counts():
    pairs = [{"path": measurement(50, 30, 60), "engine": measurement(100, 60, 60)}]
    ratio = bp.paired_ratio(pairs, threshold=0.1)
    assert ratio["steady"] == 0 and ratio["median"] == pytest.approx(0.5)


def test_stages_are_the_median_differences_of_consecutive_stamps():
    keys = ["sent", "queued_at", "queued_event", "received", "started_at", "started_event", "token_event",
            "client_first"]
    rows = [dict(zip(keys, [0.000, 0.020, 0.025, 0.030, 0.045, 0.047, 0.147, 0.150])),
            dict(zip(keys, [1.000, 1.030, 1.035, 1.040, 1.055, 1.057, 1.157, 1.162])),
            dict(zip(keys, [2.000, 2.010, 2.015, 2.020, 2.035, 2.037, 2.137, 2.141]))]
    stages = bp.stage_medians(rows)
    assert [s["median_ms"] for s in stages] == pytest.approx([20, 5, 5, 15, 2, 100, 4])
    assert sum(s["median_ms"] for s in stages) == pytest.approx(151)
    coarse = bp.stage_medians(rows, bp.CONCURRENT_STAGES)
    assert [s["median_ms"] for s in coarse] == pytest.approx([20, 25, 102, 4])


def test_stamps_come_from_redis_entry_ids_and_celerys_log_lines():
    assert bp.stream_id_seconds("1796162567573-0") == pytest.approx(1796162567.573)
    log = ("[2026-12-01 22:01:03,059: INFO/MainProcess] Task gpu.generate[b00b7d6c] received\n"
           "[2026-12-01 22:01:03,410: INFO/MainProcess] Task gpu.generate[b00b7d6c] succeeded in 0.35s: None\n"
           "[2026-12-01 22:01:04,559: INFO/MainProcess] Task gpu.generate[c83e2b6f] received\n")
    first, second = bp.celery_received(log)
    assert second - first == pytest.approx(1.5)


def chunk(text: str, **extra) -> str:
    return "data: " + json.dumps({"id": "cmpl-1", "choices": [{"index": 0, "text": text}], **extra})


def test_the_client_counts_the_first_chunk_with_text_and_the_usage():
    assert bp.sse_event("") is None and bp.sse_event(": keep-alive") is None
    assert bp.sse_event(chunk(""))[0] == "other"  # a finish chunk, or a token whose text is held back
    assert bp.sse_event(chunk(" fox"))[0] == "text"
    usage = "data: " + json.dumps({"id": "cmpl-1", "choices": [], "usage": {"completion_tokens": 7}})
    assert bp.sse_event(usage)[0] == "usage"
    assert bp.sse_event("data: [DONE]") == ("done", None)
    with pytest.raises(RuntimeError, match="stream_interrupted"):
        bp.sse_event("data: " + json.dumps({"error": {"message": "x", "code": "stream_interrupted"}}))

    record = bp.StreamRecord()
    record.sent = record.sent_wall = 0.0
    for line in (chunk(""), chunk(" fox"), chunk(" jumps"), usage, "data: [DONE]"):
        event = bp.sse_event(line)
        finished = record.see(*event)
    assert finished and record.tokens == 7 and record.completion_id == "cmpl-1"
    assert 0 < record.first <= record.done


def test_the_tokenizer_corpus_repeats_every_word_so_each_can_become_a_token():
    corpus = bp.tokenizer_corpus(words=300)
    words = " ".join(corpus).split()
    assert len(words) == 600 and all(words.count(w) >= 2 for w in set(words))
    assert corpus == bp.tokenizer_corpus(words=300)  # the same text every run


def test_the_report_says_whether_each_goal_was_met_and_by_how_much_it_was_missed():
    def side(tokens_per_s: float, cpu: float) -> dict:
        return {**measurement(tokens_per_s, 50, 50), "seconds": 100.0, "users": 64, "load_average": 1.0,
                "ttft": {"median": 500.0, "p90": 900.0, "p95": 950.0},
                "cpu_s": dict.fromkeys(("worker", "web", "engine", "client", "other"), cpu),
                "stages": [{"stage": "a stage", "median_ms": 1.0, "p90_ms": 2.0}]}

    pairs = [{"path": side(91, 1.0), "engine": side(100, 2.0)}]
    results = {
        "machine": "a CPU, 2 cores visible", "date": "2026-12-01", "bandwidth": 50e9, "bandwidth_low": 40e9,
        "load_average_before": [1.0], "load_average_after": [2.0],
        "plan": {"threads": 2, "max_batch": 16, "quick": False},
        "ttft": {"path": {"n": 50, "median": 145.6, "p90": 160.0}, "engine": {"median": 100.0, "p90": 110.0},
                 "added_ms": 45.6, "stages": [], "server_costs": {"new database connection": 5.0}},
        "throughput": {"pairs": pairs, "ratio": bp.paired_ratio(pairs, 0.1), "tokens_expected": 8357},
        "closed_loop": {"path": side(80, 1.0), "engine": side(100, 2.0)},
    }
    report = bp.table(results)
    assert "| +45.6 ms (medians) | at most +30 ms: missed by 15.6 ms |" in report
    assert "median paired ratio 0.91 (0.91-0.91; 1 of 1 pairs steady) | at least 0.9: met |" in report
    assert "| 0.80 (tokens/s, one measurement each) |" in report
    assert "| whole path 1 | 91.0 | 100.0 | 50.0 / 50.0 | 1.0 | 1.0 / 1.0 / 1.0 / 1.0 / 1.0 |" in report
