import ctypes
import logging
import platform

import pytest
import torch
import torch.nn.functional as F

from inference_worker.engine import native
from inference_worker.engine import tp as tp_module
from inference_worker.engine.kv_cache import CachedBatch, KVCache
from inference_worker.engine.loaders import load_model
from inference_worker.engine.tp import TensorParallel, cpu_weight_layout, onednn_packs

from .conftest import relative_error

CPU = torch.device("cpu")

pytestmark = pytest.mark.skipif(not native.gemv_available(torch.float32), reason="no C compiler here")


def code_paths() -> list[str]:
    """-march values whose builds take each branch of cpu_kernels.c on this CPU: this machine's
    own build (AVX-512 BF16 pair products where there are any), AVX2 + FMA sums of widened
    bfloat16, and the portable loops."""
    paths = ["native"]
    if platform.machine() == "x86_64":
        if {"avx2", "fma"} <= set(native._cpu_flags().split()):
            paths.append("x86-64-v3")
        paths.append("x86-64")
    return paths


@pytest.fixture(scope="module", params=code_paths())
def kernel_build(request, tmp_path_factory):
    """The library built for one code path (module-wide: each is compiled once)."""
    if request.param == "native":
        return native._library()
    flags = [f"-march={request.param}" if flag.startswith("-march=") else flag for flag in native.FLAGS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEHOUSE_CACHE_DIR", str(tmp_path_factory.mktemp(request.param)))
        return native._bind(ctypes.CDLL(str(native._build("cc", flags))))


@pytest.fixture
def kernels(kernel_build, monkeypatch):
    """Run the test's kernels from ``kernel_build``."""
    monkeypatch.setattr(native, "_library", lambda: kernel_build)
    return kernel_build


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """Both a serial run and one whose rows are split between two OpenMP threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("rows, cols", [(64, 64), (7, 13), (50, 256), (1, 1)])
def test_gemv_matches_a_float32_linear(rows, cols, threads, kernels):
    generator = torch.Generator().manual_seed(rows * cols)
    weight, bias = torch.randn(rows, cols, generator=generator), torch.randn(rows, generator=generator)
    x = torch.randn(1, 1, cols, generator=generator)
    y = native.gemv(x, weight, bias)
    assert y.shape == (1, 1, rows)
    assert relative_error(y, F.linear(x, weight, bias)) < 1e-6
    assert relative_error(native.gemv(x[0, 0], weight), weight @ x[0, 0]) < 1e-6


def test_gemv_rounds_bfloat16_outputs_of_float32_sums(threads, kernels):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(96, 200, generator=generator).bfloat16()
    bias = torch.randn(96, generator=generator).bfloat16()
    x = torch.randn(1, 200, generator=generator).bfloat16()
    y = native.gemv(x, weight, bias)
    exact = F.linear(x.float(), weight.float(), bias.float())
    assert y.dtype == torch.bfloat16
    assert ((y.float() - exact).abs() <= exact.abs() * 2**-8 + 1e-6).all()  # float32 sums, rounded once


def test_gemv_refuses_what_it_cannot_read():
    weight = torch.randn(8, 16)
    with pytest.raises(ValueError, match="one row of 16"):
        native.gemv(torch.randn(2, 16), weight)
    with pytest.raises(ValueError, match="contiguous"):
        native.gemv(torch.randn(8), weight.t())
    with pytest.raises(ValueError, match="a torch.float32 bias of 8"):
        native.gemv(torch.randn(16), weight, torch.randn(8).bfloat16())


def test_layer_parameters_are_checked_before_the_kernel_reads_their_addresses(hf_dirs):
    model = load_model(hf_dirs["pre_ln"], TensorParallel(), CPU, torch.float32, max_batch=1)
    layer = model.layers[0]
    assert len(native.layer_parameters(layer)) == 12
    layer.mlp.fc2.weight = torch.nn.Parameter(layer.mlp.fc2.weight.t().contiguous().t())  # column-major
    with pytest.raises(ValueError, match="stack needs dense contiguous CPU tensors"):
        native.layer_parameters(layer)


def decode_logits(model, prompt, steps, feed=None, dtype=torch.float32):
    """The tokens fed to each decode step after a cached prefill of ``prompt`` (greedy, or
    ``feed``), and the logits each step gives."""
    c = model.config
    cache = KVCache(c.n_layers, 1, c.n_heads, len(prompt) + steps, c.head_dim, dtype, CPU)
    tokens = torch.tensor([prompt])
    batch = CachedBatch.build([0], [0], len(prompt), CPU)
    logits = model.forward_cached(tokens, torch.arange(len(prompt)).view(1, -1), cache, batch)
    fed, steps_logits = [], []
    for step, position in enumerate(range(len(prompt), len(prompt) + steps)):
        token = logits[:, -1].argmax(-1).view(1, 1) if feed is None else torch.tensor([[feed[step]]])
        batch = CachedBatch.build([0], [position], 1, CPU)
        logits = model.forward_cached(token, torch.tensor([[position]]), cache, batch)
        fed.append(token.item())
        steps_logits.append(logits[0, -1])
    return fed, torch.stack(steps_logits), cache


# float32: our sums against PyTorch's; bfloat16: both round every operation's output to bfloat16,
# where one ulp is 0.4-0.8%, and sum in a different order (PyTorch's attention, AVX-512 BF16's
# pair dot products), so a rounding now and then falls the other way
STACK_TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (0.02, 0.03)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_the_native_decoder_stack_matches_pytorchs_layers_and_transformers(
    hf_dirs, hf_models, threads, dtype, kernels, monkeypatch
):
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS", raising=False)
    model = load_model(hf_dirs["pre_ln"], TensorParallel(), CPU, dtype, max_batch=1)
    prompt, feed = [2, 31, 41, 59, 26, 53], [58, 97, 93, 23, 84, 62, 64, 33]
    one_token = torch.zeros(1, 1, dtype=torch.long)
    cache, batch = KVCache(1, 1, 1, 1, 1, dtype, CPU), CachedBatch.build([0], [3], 1, CPU)
    assert model._native_decode(one_token, torch.tensor([[3]]), cache, batch)
    calls = []
    step = native.DecoderStack.step
    monkeypatch.setattr(native.DecoderStack, "step", lambda *args: calls.append(1) or step(*args))
    with torch.no_grad():
        _, ours, ours_cache = decode_logits(model, prompt, len(feed), feed=feed, dtype=dtype)
        assert len(calls) == len(feed)
        monkeypatch.setattr(model, "_native_decode", lambda *args: False)
        _, torchs, torch_cache = decode_logits(model, prompt, len(feed), feed=feed, dtype=dtype)
        expected = hf_models["pre_ln"](torch.tensor([prompt + feed])).logits[0, len(prompt) :]
    assert ours.dtype == dtype and ours_cache.k.dtype == dtype
    against_torch, against_transformers = STACK_TOLERANCE[dtype]
    assert relative_error(ours.float(), torchs.float()) < against_torch
    assert relative_error(ours.float(), expected) < against_transformers
    for mine, theirs in ((ours_cache.k, torch_cache.k), (ours_cache.v, torch_cache.v)):
        assert relative_error(mine.float(), theirs.float()) < against_torch


def stack_of(model) -> native.DecoderStack:
    return native.DecoderStack(
        list(model.layers),
        model.embed_tokens.weight,
        model.embed_positions.weight,
        model.config.position_offset,
        (model.final_layer_norm.weight, model.final_layer_norm.bias),
        model.embed_tokens.weight,
        model.config.layer_norm_eps,
    )


def test_the_decoder_stack_refuses_what_it_cannot_read(hf_dirs):
    model = load_model(hf_dirs["pre_ln"], TensorParallel(), CPU, torch.float32, max_batch=1)
    c = model.config
    stack = stack_of(model)
    cache = KVCache(c.n_layers, 1, c.n_heads, 8, c.head_dim, torch.float32, CPU)
    keys, values = cache.k[:, 0], cache.v[:, 0]
    assert stack.step(5, 0, keys, values, 0).shape == (c.vocab_size,)
    with pytest.raises(IndexError, match="cache position 8 is outside the slot's 8"):
        stack.step(5, 8, keys, values, 8)
    with pytest.raises(IndexError, match=f"position {c.max_positions} is outside the position table"):
        stack.step(5, c.max_positions, keys, values, 1)
    with pytest.raises(IndexError, match=f"token {c.vocab_size} is outside the vocabulary"):
        stack.step(c.vocab_size, 1, keys, values, 1)
    with pytest.raises(ValueError, match="cache slot must be torch.float32"):
        stack.step(5, 1, keys.bfloat16(), values.bfloat16(), 1)
    with pytest.raises(ValueError, match="contiguous"):
        stack.step(5, 1, keys.transpose(2, 3).contiguous().transpose(2, 3), values, 1)
    model.final_layer_norm.bias.data = model.final_layer_norm.bias.data.bfloat16()
    with pytest.raises(ValueError, match="its bias must be a dense contiguous torch.float32 CPU tensor"):
        stack_of(model)


def test_the_decoder_stack_keeps_the_weights_it_was_made_with(hf_dirs):
    """The kernel reads the weights through addresses taken once: replacing a parameter's
    tensor afterwards must not leave it reading freed memory."""
    model = load_model(hf_dirs["pre_ln"], TensorParallel(), CPU, torch.float32, max_batch=1)
    c = model.config
    stack = stack_of(model)
    cache = KVCache(c.n_layers, 1, c.n_heads, 8, c.head_dim, torch.float32, CPU)
    before = stack.step(5, 0, cache.k[:, 0], cache.v[:, 0], 0)
    for parameter in model.parameters():
        parameter.data = torch.zeros_like(parameter.data)  # the old tensors' memory is free for reuse now
    assert torch.equal(stack.step(5, 0, cache.k[:, 0], cache.v[:, 0], 0), before)


def test_without_a_compiler_the_engine_warns_and_keeps_onednn(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GATEHOUSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS", raising=False)
    native._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=native.__name__):
            assert not native.gemv_available(torch.float32)
        assert "CPU decode kernels unavailable" in caplog.text and "no-such-cc" in caplog.text
        if onednn_packs(torch.float32):
            assert cpu_weight_layout(torch.float32, max_batch=1) == "onednn"
        x, weight = torch.randn(1, 5), torch.randn(3, 5)
        assert relative_error(tp_module.linear(x, weight), x @ weight.T) < 1e-6
    finally:
        monkeypatch.undo()
        native._library.cache_clear()
    assert native.gemv_available(torch.float32)


def test_the_build_is_compiled_once_per_machine_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEHOUSE_CACHE_DIR", str(tmp_path))
    first = native._build("cc")
    assert first.parent == tmp_path / "native" and first.exists()
    built = first.stat().st_mtime_ns
    assert native._build("cc") == first and first.stat().st_mtime_ns == built
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no partial file left behind


def test_gatehouse_native_0_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_NATIVE", "0")
    native._library.cache_clear()
    try:
        assert not native.gemv_available(torch.float32)
    finally:
        monkeypatch.delenv("GATEHOUSE_NATIVE")
        native._library.cache_clear()


def test_bfloat16_layers_the_stack_does_not_run_use_our_matrix_vector_kernel(hf_dirs, hf_models, monkeypatch):
    """PyTorch's layers, as at TP > 1 or in a 350m-style model, with our products."""
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS", raising=False)
    model = load_model(hf_dirs["pre_ln"], TensorParallel(), CPU, torch.bfloat16, max_batch=1)
    assert not model.layers[0].self_attn.qkv.weight.is_mkldnn  # dense weights
    monkeypatch.setattr(model, "_native_decode", lambda *args: False)
    calls = []
    gemv = native.gemv
    monkeypatch.setattr(native, "gemv", lambda *args: calls.append(1) or gemv(*args))
    prompt, feed = [2, 31, 41, 59], [26, 53, 58, 97, 93, 23]
    with torch.no_grad():
        _, ours, _ = decode_logits(model, prompt, len(feed), feed=feed, dtype=torch.bfloat16)
        expected = hf_models["pre_ln"](torch.tensor([prompt + feed])).logits[0, len(prompt) :]
    per_step = 4 * model.config.n_layers + 1  # q/k/v, out_proj, fc1, fc2 per layer; the LM head
    assert len(calls) == 1 + per_step * len(feed)  # the prefill's last row goes through the LM head
    assert ours.dtype == torch.bfloat16
    assert relative_error(ours.float(), expected) < 0.05
