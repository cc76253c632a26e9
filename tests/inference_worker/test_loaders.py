import json
import pickle
import sys
import types

import numpy
import pytest
import torch
from safetensors.torch import load_file

from inference_worker.engine import writers
from inference_worker.engine.config import OPTConfig
from inference_worker.engine.convert import convert
from inference_worker.engine.loaders import load_model, open_source, read_local_state
from inference_worker.engine.loaders.converted import rank_file
from inference_worker.engine.loaders.flat import FSDPPartReader
from inference_worker.engine.loaders.fsdp import shard_files
from inference_worker.engine.loaders.hf import HFSource
from inference_worker.engine.tp import TensorParallel

from .conftest import (
    canonical_state,
    hf_greedy,
    metaseq_args,
    metaseq_parts,
    relative_error,
    save_fsdp_shards,
    save_hf,
    save_metaseq,
    write_tokenizer,
)

CPU = torch.device("cpu")
IDS = torch.tensor([[2, 17, 300, 42, 999, 5, 6, 7]])


def assert_same_logits(path, reference, dtype=torch.float32, tol=1e-4):
    model = load_model(path, TensorParallel(), CPU, dtype)
    with torch.no_grad():
        assert relative_error(model(IDS).float(), reference(IDS).logits) < tol


def assert_same_rank_states(path, reference_path, world):
    expected_source, source = open_source(reference_path), open_source(path)
    for rank in range(world):
        expected = read_local_state(expected_source, TensorParallel(rank, world))
        actual = read_local_state(source, TensorParallel(rank, world))
        assert actual.keys() == expected.keys()
        for key in expected:  # float16 files hold the (float16-valued) float32 weights exactly
            assert torch.equal(actual[key].float(), expected[key].float()), key


@pytest.mark.parametrize("fmt, shards", [("safetensors", 3), ("bin", 1), ("bin", 3)])
def test_hugging_face_directories_in_every_layout(fmt, shards, hf_models, tmp_path):
    path = save_hf(hf_models["pre_ln"], tmp_path / "hf", fmt=fmt, shards=shards)
    index = list(path.glob("*.index.json"))
    assert bool(index) == (shards > 1)
    assert_same_logits(path, hf_models["pre_ln"])


def test_hf_keys_without_model_prefix_are_read(hf_models, tmp_path):
    path = save_hf(hf_models["pre_ln"], tmp_path / "hf", fmt="bin")
    state = torch.load(path / "pytorch_model.bin")
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, path / "pytorch_model.bin")
    assert_same_logits(path, hf_models["pre_ln"])


@pytest.mark.parametrize("variant", ["pre_ln", "350m_style"])
def test_metaseq_parts_give_transformers_logits(variant, hf_models, metaseq_dirs):
    assert_same_logits(metaseq_dirs[variant], hf_models[variant])


@pytest.mark.parametrize("n_parts, cfg_style", [(1, "namespace"), (4, "dict")])
def test_metaseq_any_part_count_and_cfg_style(n_parts, cfg_style, hf_models, tmp_path):
    path = save_metaseq(hf_models["pre_ln"], tmp_path / "m", n_parts=n_parts, cfg_style=cfg_style)
    assert_same_logits(path, hf_models["pre_ln"])


def test_single_reshard_file(hf_models, tmp_path):
    path = save_metaseq(hf_models["350m_style"], tmp_path / "m", n_parts=1, single_file=True)
    assert [p.name for p in path.glob("*.pt")] == ["reshard.pt"]
    assert_same_logits(path, hf_models["350m_style"])


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("n_parts", [1, 2, 4])
def test_metaseq_parts_reshard_to_any_tp_degree(n_parts, world, hf_models, hf_dirs, tmp_path):
    path = save_metaseq(hf_models["pre_ln"], tmp_path / "m", n_parts=n_parts)
    assert_same_rank_states(path, hf_dirs["pre_ln"], world)


def test_metaseq_config_json_replaces_a_missing_cfg(hf_models, hf_dirs, tmp_path):
    path = tmp_path / "m"
    path.mkdir()
    for p, state in enumerate(metaseq_parts(hf_models["350m_style"], 2)):
        torch.save({"model": state}, path / f"reshard-model_part-{p}.pt")
    (path / "config.json").write_text((hf_dirs["350m_style"] / "config.json").read_text())
    assert_same_logits(path, hf_models["350m_style"])


def test_metaseq_omegaconf_cfg_loads_without_omegaconf_installed(hf_models, tmp_path, monkeypatch):
    """The cfg pickles omegaconf classes; loading must neither import nor need omegaconf."""
    fake = types.ModuleType("omegaconf")

    class AnyNode:
        def __init__(self, value):
            self._val = value

    class DictConfig:
        def __init__(self, content):
            self._content = {k: v if isinstance(v, DictConfig) else AnyNode(v) for k, v in content.items()}
            self._metadata = {"ref_type": "Any"}

    for cls in (AnyNode, DictConfig):
        cls.__module__, cls.__qualname__ = "omegaconf", cls.__name__
        setattr(fake, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "omegaconf", fake)
    path = tmp_path / "m"
    path.mkdir()
    cfg = DictConfig({"model": DictConfig(metaseq_args(hf_models["pre_ln"].config)), "task": DictConfig({"x": 1})})
    for p, state in enumerate(metaseq_parts(hf_models["pre_ln"], 2)):
        torch.save({"model": state, "cfg": cfg}, path / f"reshard-model_part-{p}.pt")
    monkeypatch.delitem(sys.modules, "omegaconf")
    assert_same_logits(path, hf_models["pre_ln"])
    assert "omegaconf" not in sys.modules


def test_checkpoint_with_foreign_code_is_refused(hf_models, tmp_path):
    path = tmp_path / "m"
    path.mkdir()
    state = metaseq_parts(hf_models["pre_ln"], 1)[0]
    torch.save({"model": state, "cfg": {"model": metaseq_args(hf_models["pre_ln"].config)}, "x": print}, path / "reshard.pt")
    with pytest.raises(Exception, match="refusing to load .*print"):
        open_source(path)


def config_of(model) -> OPTConfig:
    return OPTConfig.from_hf_dict(model.config.to_dict())


def assert_reads_source_tensors_exactly(path, model):
    """Every canonical tensor read from ``path`` equals the model's own, value for value."""
    source = open_source(path)
    expected = canonical_state(model)
    assert set(source.layout) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(source.read(name).float(), tensor), name


def still_flat_part(part_state: dict[str, torch.Tensor], names_with_wrappers: bool = False) -> tuple[dict, dict]:
    """A part as OPT's May 2022 release holds it (metaseq issue #695): one FSDP instance whose
    ``flat_param_0`` is every parameter, in registration order, plus ``decoder.version``."""
    names = [n for n in part_state if n != writers.VERSION_KEY]
    prefix = "_fpw_module." if names_with_wrappers else ""
    model = {"flat_param_0": torch.cat([part_state[n].reshape(-1) for n in names]),
             writers.VERSION_KEY: part_state[writers.VERSION_KEY]}
    metadata = {
        "param_metadata": [{
            "fsdp_path": "",
            "params": {"flat_param_0": {"names": [prefix + n for n in names],
                                        "shapes": [part_state[n].shape for n in names],
                                        "numels": [part_state[n].numel() for n in names], "padding": 0}},
            "no_broadcast_optim_state": False,
            "shared_param_info": [writers.TIED],
        }],
        "buffer_names": [writers.VERSION_KEY],
    }
    return model, metadata


@pytest.mark.parametrize("shard_metadata", ["empty", "absent"])
def test_consolidated_parts_as_reshard_fsdp_writes_them_load_exactly(shard_metadata, hf_models, tmp_path):
    model = hf_models["pre_ln"]
    writers.save_metaseq(canonical_state(model), config_of(model), tmp_path, n_parts=2)
    if shard_metadata == "absent":
        for file in tmp_path.glob("*.pt"):
            checkpoint = torch.load(file, weights_only=False)
            del checkpoint["shard_metadata"]
            torch.save(checkpoint, file)
    assert_reads_source_tensors_exactly(tmp_path, model)
    assert_same_logits(tmp_path, model)


@pytest.mark.parametrize("file_name", ["reshard-model_part-{i}.pt", "reshard-model_part-{i}-shard0.pt"])
def test_still_flat_parts_of_the_may_2022_and_66b_releases_load_exactly(file_name, hf_models, tmp_path):
    model = hf_models["350m_style"]
    config = config_of(model)
    for i, part in enumerate(metaseq_parts(model, 2)):
        flat, metadata = still_flat_part(part, names_with_wrappers=i == 1)
        checkpoint = writers.training_state(flat, writers.metaseq_cfg(config, 2), metadata)
        torch.save(checkpoint, tmp_path / file_name.format(i=i))
    assert set(torch.load(tmp_path / file_name.format(i=0), weights_only=False)["model"]) == {
        "flat_param_0", "decoder.version"}
    assert_reads_source_tensors_exactly(tmp_path, model)
    assert_same_logits(tmp_path, model)


def test_a_flat_part_without_shard_metadata_is_refused_clearly(hf_models, tmp_path):
    flat, _ = still_flat_part(metaseq_parts(hf_models["pre_ln"], 1)[0])
    torch.save({"model": flat, "cfg": {"model": metaseq_args(hf_models["pre_ln"].config)}}, tmp_path / "reshard.pt")
    with pytest.raises(ValueError, match="FSDP-flat parameters but no shard_metadata"):
        open_source(tmp_path)


def test_fsdp_shards_with_padding_consolidate_exactly(hf_models, tmp_path):
    model = hf_models["350m_style"]
    parts = metaseq_parts(model, 2)
    cfg = writers.metaseq_cfg(config_of(model), 2)
    for p, state in enumerate(parts):
        save_fsdp_shards(state, tmp_path, part=p, n_shards=3, cfg=cfg)
    files = shard_files(tmp_path)
    assert [len(f) for f in files.values()] == [3, 3]
    paddings = {m["params"]["flat_param_0"]["padding"]
                for f in files[0] for m in torch.load(f, weights_only=False)["shard_metadata"]["param_metadata"]}
    assert paddings - {0}, "no flat parameter was padded: the test would not cover padding"
    for p, state in enumerate(parts):
        reader = FSDPPartReader(files[p])
        assert sorted(reader.keys()) == sorted(state)
        for key, tensor in state.items():
            assert torch.equal(reader.read(key), tensor), key
    assert_reads_source_tensors_exactly(tmp_path, model)
    assert_same_logits(tmp_path, model)


def test_fsdp_shards_with_wrapper_names_and_odd_sizes_reshard_to_tp4(hf_models, hf_dirs, tmp_path):
    model = hf_models["pre_ln"]
    cfg = writers.metaseq_cfg(config_of(model), 1)
    save_fsdp_shards(metaseq_parts(model, 1)[0], tmp_path, part=0, n_shards=7, cfg=cfg)
    for file in tmp_path.glob("*.pt"):  # keys as some metaseq versions wrote them
        checkpoint = torch.load(file, weights_only=False)
        checkpoint["model"] = {k.replace("flat_param_0", "_fsdp_wrapped_module.flat_param_0"): v
                               for k, v in checkpoint["model"].items()}
        torch.save(checkpoint, file)
    assert_same_rank_states(tmp_path, hf_dirs["pre_ln"], world=4)


def test_numpy_numbers_in_extra_state_load(hf_models, tmp_path):
    model = hf_models["pre_ln"]
    writers.save_metaseq(canonical_state(model), config_of(model), tmp_path, n_parts=1)
    file = tmp_path / "reshard-model_part-0.pt"
    checkpoint = torch.load(file, weights_only=False)
    checkpoint["extra_state"].update(val_loss=numpy.float64(2.25), best=numpy.float32(1.5),
                                     steps=numpy.int64(143050), done=numpy.bool_(True))
    torch.save(checkpoint, file)
    assert_same_logits(tmp_path, model)
    extra = open_source(tmp_path).parts[0].checkpoint["extra_state"]
    assert (extra["val_loss"], extra["best"], extra["steps"], extra["done"]) == (2.25, 1.5, 143050, True)


class _ObjectScalar:
    """Pickles as a NumPy scalar of object dtype, which would hand back any object."""

    def __reduce__(self):
        return numpy._core.multiarray.scalar, (numpy.dtype("O"), "anything")


def test_a_numpy_object_scalar_is_refused(hf_models, tmp_path):
    state = metaseq_parts(hf_models["pre_ln"], 1)[0]
    torch.save({"model": state, "cfg": {"model": metaseq_args(hf_models["pre_ln"].config)},
                "extra_state": {"x": _ObjectScalar()}}, tmp_path / "reshard.pt")
    with pytest.raises(pickle.UnpicklingError, match="numpy scalar of dtype"):
        open_source(tmp_path)


def test_every_demo_style_variant_gives_the_same_greedy_tokens_directly_and_converted(hf_models, tmp_path):
    from inference_worker.engine import Engine

    model = hf_models["pre_ln"]
    state, config = canonical_state(model), config_of(model)
    variants = {"hf": tmp_path / "hf", "metaseq": tmp_path / "metaseq", "fsdp": tmp_path / "fsdp"}
    writers.save_hf(state, config, variants["hf"])
    writers.save_metaseq(state, config, variants["metaseq"], n_parts=2)
    writers.save_fsdp_shards(state, config, variants["fsdp"], n_parts=2, n_shards=3)
    for path in variants.values():
        write_tokenizer(path)
    prompt = [[2, 17, 300, 42, 999]]
    tokens = {}
    for name, path in variants.items():
        tokens[name] = Engine.from_pretrained(path, tp=1).generate(prompt, max_new_tokens=6)
        converted = convert(path, tmp_path / f"{name}-converted", tp=2)
        tokens[f"{name} converted"] = Engine.from_pretrained(converted, tp=1).generate(prompt, max_new_tokens=6)
    assert len(set(map(str, tokens.values()))) == 1, tokens
    assert tokens["hf"][0] == hf_greedy(model, prompt[0], 6)[: len(tokens["hf"][0])]


def test_missing_metaseq_part_is_reported(hf_models, tmp_path):
    path = save_metaseq(hf_models["pre_ln"], tmp_path / "m", n_parts=4)
    (path / "reshard-model_part-2.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing metaseq parts"):
        open_source(path)


@pytest.mark.parametrize("source", ["hf", "metaseq"])
def test_convert_writes_each_rank_its_own_slice(source, hf_dirs, metaseq_dirs, tmp_path):
    src = hf_dirs["pre_ln"] if source == "hf" else metaseq_dirs["pre_ln"]
    out = convert(src, tmp_path / "converted", tp=2)
    config = json.loads((out / "config.json").read_text())
    assert config["gatehouse"]["tp"] == 2
    assert {"vocab.json", "merges.txt"} <= {p.name for p in out.iterdir()} or {
        "gpt2-vocab.json",
        "gpt2-merges.txt",
    } <= {p.name for p in out.iterdir()}
    hf = HFSource(hf_dirs["pre_ln"])
    for rank in range(2):
        written = load_file(out / rank_file(rank, 2))
        expected = read_local_state(hf, TensorParallel(rank, 2))
        assert written.keys() == expected.keys()
        assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert_same_rank_states(out, hf_dirs["pre_ln"], world=4)  # read back at another degree


def test_converted_checkpoint_loads_with_transformers_logits(hf_models, hf_dirs, tmp_path):
    out = convert(hf_dirs["350m_style"], tmp_path / "converted", tp=1)
    assert_same_logits(out, hf_models["350m_style"])
    half = convert(hf_dirs["350m_style"], tmp_path / "bf16", tp=1, dtype=torch.bfloat16)
    assert load_file(half / rank_file(0, 1))["embed_tokens.weight"].dtype == torch.bfloat16
    assert_same_logits(half, hf_models["350m_style"], dtype=torch.bfloat16, tol=0.1)


def test_converted_vocab_not_divisible_by_tp(tmp_path):
    from .conftest import hf_config, random_hf_model

    model = random_hf_model(hf_config(vocab_size=1001))
    src = save_hf(model, tmp_path / "hf")
    out = convert(src, tmp_path / "converted", tp=4)
    assert load_file(out / rank_file(3, 4))["embed_tokens.weight"].shape == (251, 64)
    assert_same_logits(out, model)
