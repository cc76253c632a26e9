import pytest
import torch

from inference_worker.engine import PRESETS, OPTConfig
from inference_worker.engine.loaders import load_model
from inference_worker.engine import tp as tp_module
from inference_worker.engine.model import OPT
from inference_worker.engine.tp import TensorParallel, cpu_weight_layout, onednn_packs

from .conftest import VARIANTS, relative_error

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "name, billions",
    [("opt-125m", 0.125), ("opt-350m", 0.331), ("opt-1.3b", 1.316), ("opt-13b", 12.85), ("opt-175b", 174.6)],
)
def test_presets_have_the_published_parameter_counts(name, billions):
    with torch.device("meta"):
        model = OPT(PRESETS[name])
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert count == pytest.approx(billions, rel=0.01)


def test_350m_preset_is_post_ln_with_projections():
    config = PRESETS["opt-350m"]
    assert not config.pre_layer_norm and not config.final_layer_norm
    with torch.device("meta"):
        model = OPT(config)
    assert model.final_layer_norm is None
    assert model.project_in.bias is None and model.project_in.weight.shape == (1024, 512)


def test_hf_config_round_trips():
    for preset in PRESETS.values():
        assert OPTConfig.from_hf_dict(preset.to_hf_dict()) == preset


@pytest.mark.parametrize("layout", ["onednn", "dense"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match_transformers_on_a_left_padded_batch(variant, layout, hf_models, hf_dirs, monkeypatch):
    if layout == "onednn" and not onednn_packs(torch.float32):
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setenv("GATEHOUSE_CPU_WEIGHTS", layout)
    reference = hf_models[variant]
    model = load_model(hf_dirs[variant], TensorParallel(), CPU, torch.float32)
    qkv = model.layers[0].self_attn.qkv.weight
    if layout == "onednn":
        assert qkv.is_mkldnn and model.embed_tokens.head is not None
    else:  # row-major weights; the embedding table serves as the LM head
        assert not qkv.is_mkldnn and qkv.is_contiguous() and model.embed_tokens.head is None
    ids = torch.randint(3, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    mask[2, :11] = 0
    ids = ids.masked_fill(mask == 0, 1)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).logits
        actual = model(ids, mask)
    real = mask.bool()
    assert relative_error(actual[real], expected[real]) < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padded_rows_equal_each_prompt_alone(variant, hf_dirs):
    model = load_model(hf_dirs[variant], TensorParallel(), CPU, torch.float32)
    short, long = [2, 50, 60, 70], [2, 9, 8, 7, 6, 5, 4]
    batch = torch.tensor([[1, 1, 1, *short], long])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        together = model(batch, mask)
        alone = model(torch.tensor([short]))
    assert relative_error(together[0, 3:], alone[0]) < 1e-5


def test_cpu_weight_layout_packs_for_onednn_unless_one_sequence_runs_our_kernel(monkeypatch):
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS", raising=False)
    if not onednn_packs(torch.float32):
        pytest.skip("this PyTorch build has no oneDNN")
    bfloat16 = "onednn" if onednn_packs(torch.bfloat16) else "dense"  # oneDNN bf16 kernels need AVX-512 BF16 or AMX
    monkeypatch.setattr(tp_module.native, "gemv_available", lambda dtype: True)
    assert cpu_weight_layout(torch.float32, max_batch=1) == "dense"
    assert cpu_weight_layout(torch.bfloat16, max_batch=1) == "dense"
    assert cpu_weight_layout(torch.float32, max_batch=16) == "onednn"
    assert cpu_weight_layout(torch.bfloat16, max_batch=16) == bfloat16
    monkeypatch.setenv("GATEHOUSE_CPU_WEIGHTS", "onednn")
    assert cpu_weight_layout(torch.float32, max_batch=1) == "onednn"
    monkeypatch.delenv("GATEHOUSE_CPU_WEIGHTS")
    monkeypatch.setattr(tp_module.native, "gemv_available", lambda dtype: False)  # no C compiler
    assert cpu_weight_layout(torch.float32, max_batch=1) == "onednn"
    assert cpu_weight_layout(torch.float16, max_batch=1) == "dense"  # oneDNN has no float16 linear here


def test_cpu_weight_layout_rejects_an_unknown_override(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_CPU_WEIGHTS", "fast")
    with pytest.raises(ValueError, match="GATEHOUSE_CPU_WEIGHTS must be 'onednn' or 'dense'"):
        cpu_weight_layout(torch.float32, max_batch=1)
