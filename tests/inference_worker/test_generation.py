import pytest
import torch

from inference_worker.engine import Engine, Request, SamplingParams
from inference_worker.engine import tp as tp_module

from .conftest import PROMPTS, hf_greedy, random_hf_model, save_hf


@pytest.fixture(scope="module")
def engine(hf_dirs):
    return Engine.from_pretrained(hf_dirs["pre_ln"])


@pytest.fixture(scope="module")
def small_batch_engine(hf_dirs):
    """Two slots and a tiny token budget: forces queuing, slot reuse and chunked prefill."""
    return Engine.from_pretrained(hf_dirs["pre_ln"], max_batch=2, max_batch_tokens=5)


def complete(engine, prompt, **params):
    [output] = engine.complete([Request(prompt, SamplingParams(**params))])
    return output


@pytest.mark.parametrize("variant", ["pre_ln", "350m_style"])
def test_greedy_tokens_match_transformers(variant, hf_models, hf_dirs):
    engine = Engine.from_pretrained(hf_dirs[variant])
    expected = [hf_greedy(hf_models[variant], p, 20) for p in PROMPTS]
    assert engine.generate(PROMPTS, max_new_tokens=20) == expected


@pytest.mark.parametrize("native_kernels", [True, False], ids=["own kernels", "no C compiler"])
def test_an_engine_for_one_sequence_gives_the_same_tokens(native_kernels, hf_models, hf_dirs, monkeypatch):
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS", raising=False)
    if not native_kernels:
        monkeypatch.setattr(tp_module.native, "gemv_available", lambda dtype: False)
    elif not tp_module.native.gemv_available(torch.float32):
        pytest.skip("no C compiler here")
    steps = []
    step = tp_module.native.DecoderStack.step
    monkeypatch.setattr(tp_module.native.DecoderStack, "step", lambda *args: steps.append(1) or step(*args))
    single = Engine.from_pretrained(hf_dirs["pre_ln"], max_batch=1)
    assert single.model.layers[0].mlp.fc1.weight.is_mkldnn != native_kernels
    expected = [hf_greedy(hf_models["pre_ln"], p, 20) for p in PROMPTS]
    assert single.generate(PROMPTS, max_new_tokens=20) == expected
    assert len(steps) == (19 * len(PROMPTS) if native_kernels else 0)  # every token after a prompt's first


def test_continuous_batching_gives_each_request_its_solo_result(engine, small_batch_engine):
    prompts = PROMPTS + [[2, 44, 45], [2, 17] * 6]
    alone = [engine.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert small_batch_engine.generate(prompts, max_new_tokens=12) == alone


def test_generation_stops_at_eos_inclusive(hf_models, tmp_path):
    model = random_hf_model(hf_models["pre_ln"].config, seed=5)
    with torch.no_grad():  # every final hidden state becomes v, and </s> is the token most like v
        decoder = model.model.decoder
        decoder.final_layer_norm.weight.zero_()
        v = decoder.final_layer_norm.bias
        decoder.embed_tokens.weight[2] = 10 * v / v.norm()
    engine = Engine.from_pretrained(save_hf(model, tmp_path / "eos"))
    assert engine.generate([[2, 10, 11]], max_new_tokens=5) == [[2]]
    assert complete(engine, [2, 10, 11], max_tokens=5).completions[0].finish_reason == "stop"
    ignoring = complete(engine, [2, 10, 11], max_tokens=5, ignore_eos=True).completions[0]
    assert ignoring.token_ids == [2] * 5 and ignoring.finish_reason == "length"


def test_stop_token_ids_end_generation(engine):
    greedy = engine.generate([PROMPTS[0]], max_new_tokens=8)[0]
    stop_token = greedy[2]
    output = complete(engine, PROMPTS[0], max_tokens=8, stop_token_ids=[stop_token])
    assert output.completions[0].token_ids == greedy[: greedy.index(stop_token) + 1]
    assert output.completions[0].finish_reason == "stop"
    assert complete(engine, PROMPTS[0], max_tokens=8).completions[0].finish_reason == "length"


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine, small_batch_engine):
    first = engine.generate(PROMPTS, max_new_tokens=16, temperature=0.9, seed=7)
    assert engine.generate(PROMPTS, max_new_tokens=16, temperature=0.9, seed=7) == first
    assert small_batch_engine.generate(PROMPTS, max_new_tokens=16, temperature=0.9, seed=7) == first
    assert engine.generate(PROMPTS, max_new_tokens=16, temperature=0.9, seed=8) != first


def test_top_k_one_and_tiny_top_p_are_greedy(engine):
    greedy = engine.generate(PROMPTS, max_new_tokens=10)
    for params in (dict(top_k=1), dict(top_p=1e-6)):
        outs = [complete(engine, p, max_tokens=10, temperature=1.5, seed=3, **params) for p in PROMPTS]
        assert [o.completions[0].token_ids for o in outs] == greedy


def test_sampling_follows_the_model_distribution(engine, hf_models):
    """Empirical first-token frequencies over many seeds track softmax(logits / T)."""
    prompt, temperature = PROMPTS[1], 2.0
    with torch.no_grad():
        logits = hf_models["pre_ln"](torch.tensor([prompt])).logits[0, -1]
    probs = (logits / temperature).softmax(-1)
    requests = [Request(prompt, SamplingParams(max_tokens=1, temperature=temperature, seed=s)) for s in range(600)]
    counts = torch.zeros_like(probs)
    for out in engine.complete(requests):
        counts[out.completions[0].token_ids[0]] += 1
    top = probs.topk(3).indices
    assert torch.allclose(counts[top] / 600, probs[top], atol=0.06)


def test_frequency_penalty_stops_repetition(engine):
    plain = complete(engine, PROMPTS[2], max_tokens=24).completions[0].token_ids
    assert len(set(plain)) < len(plain)  # the random model repeats itself
    penalised = complete(engine, PROMPTS[2], max_tokens=24, frequency_penalty=100.0).completions[0].token_ids
    assert len(set(penalised)) == len(penalised)
    presence = complete(engine, PROMPTS[2], max_tokens=24, presence_penalty=100.0).completions[0].token_ids
    assert len(set(presence)) == len(presence)


def test_repetition_penalty_avoids_prompt_tokens(engine):
    out = complete(engine, PROMPTS[2], max_tokens=12, repetition_penalty=1e6, ignore_eos=True)
    assert not set(out.completions[0].token_ids) & set(PROMPTS[2])


def test_logprobs_and_echo_match_transformers(engine, hf_models):
    prompt = PROMPTS[0]
    out = complete(engine, prompt, max_tokens=4, logprobs=3, echo=True).completions[0]
    ids = torch.tensor([out.token_ids])
    with torch.no_grad():
        logprobs = hf_models["pre_ln"](ids).logits[0].log_softmax(-1)
    expected = [None] + [float(logprobs[t - 1, ids[0, t]]) for t in range(1, ids.shape[1])]
    assert out.token_ids[: len(prompt)] == prompt
    assert out.logprobs[0] is None
    assert out.logprobs[1:] == pytest.approx(expected[1:], abs=1e-4)
    top = out.top_logprobs[len(prompt)]  # alternatives for the first generated token
    assert [t.token_id for t in top] == logprobs[len(prompt) - 1].topk(3).indices.tolist()
    assert out.cumulative_logprob == pytest.approx(sum(expected[len(prompt):]), abs=1e-3)


def test_best_of_returns_the_most_likely_samples(engine):
    params = dict(max_tokens=6, temperature=1.0, seed=11, ignore_eos=True)
    all_five = complete(engine, PROMPTS[0], n=5, logprobs=0, **params).completions
    best_two = complete(engine, PROMPTS[0], n=2, best_of=5, **params).completions
    ranked = sorted(all_five, key=lambda c: -c.cumulative_logprob)[:2]
    assert [c.token_ids for c in best_two] == [c.token_ids for c in ranked]
    assert len({tuple(c.token_ids) for c in all_five}) > 1


def test_n_sequences_prefill_their_shared_prompt_once(hf_dirs):
    engine = Engine.from_pretrained(hf_dirs["pre_ln"], max_batch=4)
    prompt_tokens = []
    forward_cached = engine.model.forward_cached

    def counting(tokens, *args, **kwargs):
        if tokens.shape[1] > 1:  # a prompt chunk (decode steps run one token per row)
            prompt_tokens.append(tokens.shape[1])
        return forward_cached(tokens, *args, **kwargs)

    engine.model.forward_cached = counting
    prompt = [2] + list(range(50, 70))
    params = dict(max_tokens=8, temperature=1.0, seed=5, ignore_eos=True, logprobs=2, echo=True)
    shared = complete(engine, prompt, n=3, **params).completions
    assert prompt_tokens == [len(prompt)]
    # the same as each sequence prefilling the prompt itself (one slot: the siblings cannot copy)
    alone = complete(Engine.from_pretrained(hf_dirs["pre_ln"], max_batch=1), prompt, n=3, **params).completions
    assert [c.token_ids for c in shared] == [c.token_ids for c in alone]
    for copied, own in zip(shared, alone):  # echoed prompt logprobs (the first is None) and sampled ones
        assert copied.logprobs[0] is None and copied.logprobs[1:] == pytest.approx(own.logprobs[1:], abs=1e-5)
    assert len({tuple(c.token_ids) for c in shared}) > 1


def test_stop_string_truncates_text_across_token_boundaries(engine):
    full = complete(engine, PROMPTS[0], max_tokens=16, ignore_eos=True).completions[0]
    assert len(full.text) > 6
    stop = full.text[3:6]
    out = complete(engine, PROMPTS[0], max_tokens=16, ignore_eos=True, stop=[stop]).completions[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[: full.text.index(stop)]
    assert full.token_ids[: len(out.token_ids)] == out.token_ids
    assert len(out.token_ids) < len(full.token_ids)


def test_streaming_callback_sees_every_token_and_the_final_text(engine):
    events = []
    [output] = engine.complete(
        [Request(PROMPTS[1], SamplingParams(max_tokens=10, ignore_eos=True), request_id="r1")],
        on_token=events.append,
    )
    completion = output.completions[0]
    assert [e.token_id for e in events] == completion.token_ids
    assert "".join(e.text for e in events) == completion.text
    assert [e.finish_reason for e in events] == [None] * 9 + ["length"]
    assert {e.request_id for e in events} == {"r1"}


def test_callback_returning_false_cancels_only_that_request(small_batch_engine):
    requests = [Request(p, SamplingParams(max_tokens=10, ignore_eos=True), request_id=str(i)) for i, p in enumerate(PROMPTS)]
    seen = []

    def on_token(event):
        seen.append(event)
        return not (event.request_id == "1" and event.token_id is not None)

    outputs = small_batch_engine.complete(requests, on_token=on_token)
    assert [o.completions[0].finish_reason for o in outputs] == ["length", "cancelled", "length"]
    assert len(outputs[1].completions[0].token_ids) == 1
    assert [len(o.completions[0].token_ids) for o in (outputs[0], outputs[2])] == [10, 10]


def test_min_tokens_suppresses_early_stop(engine):
    greedy = engine.generate([PROMPTS[0]], max_new_tokens=8)[0]
    out = complete(engine, PROMPTS[0], max_tokens=8, min_tokens=5, stop_token_ids=[greedy[0]])
    assert len(out.completions[0].token_ids) >= 5


def test_prompt_truncation_policy(engine):
    too_long = [2] + [7, 8, 9] * 50  # 151 tokens, the model has 128 positions
    with pytest.raises(ValueError, match="exceeds 128 positions"):
        complete(engine, too_long, max_tokens=8)
    kept = too_long[-(128 - 8):]
    out = complete(engine, too_long, max_tokens=8, truncate="left")
    assert out.prompt_ids == kept
    assert out.completions[0].token_ids == engine.generate([kept], max_new_tokens=8)[0]


def test_text_round_trips_through_the_tokenizer(engine):
    ids = engine.encode("Hello world!")
    assert ids[0] == 2 and engine.decode(ids) == "Hello world!"


def test_serving_engine_admits_requests_while_others_run(hf_dirs, engine):
    """A request submitted mid-generation joins the running batch at a token boundary."""
    serving = Engine.from_pretrained(hf_dirs["pre_ln"], max_batch=4)
    serving.serve(max_len=64)
    events = []
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    late_future = []

    def on_first(event):
        events.append(("first", event.token_id))
        if len(events) == 3:  # the first request is running: submit another
            late_future.append(serving.submit(Request(PROMPTS[1], params, "late"), on_token=lambda e: events.append(("late", e.token_id))))

    first = serving.submit(Request(PROMPTS[0], params, "first"), on_token=on_first)
    first_output = first.result(timeout=60)
    late_output = late_future[0].result(timeout=60)
    serving.close()
    solo = engine.generate([PROMPTS[0], PROMPTS[1]], max_new_tokens=24)
    assert [first_output.completions[0].token_ids, late_output.completions[0].token_ids] == solo
    order = [name for name, _ in events]
    assert order.index("late") < len(order) - 1 - order[::-1].index("first")  # interleaved
    with pytest.raises(RuntimeError, match="serve"):
        serving.submit(Request(PROMPTS[0], params))
