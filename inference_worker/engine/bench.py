"""``python -m inference_worker bench``: our engine against transformers' ``generate`` on one
random-weight opt-125m-shaped checkpoint, same weights and thread count, in one run.

Each side runs in its own child process (so peak RSS is each side's own); the parent writes the
checkpoint, measures the memory read bandwidth and prints the table. Not a test: nothing here
asserts a timing.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .config import PRESETS

FLOAT_BYTES = {"float32": 4, "bfloat16": 2}


def workload(quick: bool) -> list[tuple[list[int], int]]:
    """64 requests with prompts of 8-512 tokens and outputs of 8-256 tokens (fixed seed)."""
    rng = random.Random(0)
    count, max_prompt, max_output = (16, 128, 32) if quick else (64, 512, 256)
    requests = []
    for _ in range(count):
        prompt = [2] + [rng.randrange(4, 50000) for _ in range(rng.randint(8, max_prompt) - 1)]
        requests.append((prompt, rng.randint(8, max_output)))
    return requests


def write_checkpoint(path: Path) -> None:
    """A random opt-125m in the Hugging Face layout (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    from .model import OPT

    config = PRESETS["opt-125m"]
    torch.manual_seed(0)
    model = OPT(config)
    state = {}
    for name, p in model.named_parameters():
        if name.endswith("weight") and "norm" in name:
            p.data.fill_(1.0)
        elif "norm" in name:
            p.data.zero_()
        else:
            p.data.normal_(0.0, 0.02)
    sd = model.state_dict()
    for i in range(config.n_layers):
        q, k, v = sd.pop(f"layers.{i}.self_attn.qkv.weight").chunk(3)
        qb, kb, vb = sd.pop(f"layers.{i}.self_attn.qkv.bias").chunk(3)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            state[f"model.decoder.layers.{i}.self_attn.{name}.weight"] = w.contiguous()
            state[f"model.decoder.layers.{i}.self_attn.{name}.bias"] = b.contiguous()
    for key, value in sd.items():
        key = key.replace(".mlp.", ".")
        state[f"model.decoder.{key}"] = value.contiguous()
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config.to_hf_dict()))


def write_metaseq(hf_path: Path, path: Path) -> None:
    """The same weights as one metaseq ``reshard.pt`` (fused qkv in k, v, q order)."""
    from safetensors.torch import load_file

    config = PRESETS["opt-125m"]
    hf = {k.removeprefix("model."): v for k, v in load_file(str(hf_path / "model.safetensors")).items()}
    state = {}
    for key, value in hf.items():
        if ".q_proj." in key or ".v_proj." in key:
            continue
        if ".k_proj." in key:
            parts = [hf[key.replace("k_proj", p)] for p in ("k_proj", "v_proj", "q_proj")]
            state[key.replace("k_proj", "qkv_proj")] = torch.cat(parts)
            continue
        state[key.replace("decoder.final_layer_norm.", "decoder.layer_norm.")] = value
    args = {
        "decoder_layers": config.n_layers,
        "decoder_embed_dim": config.hidden,
        "decoder_ffn_embed_dim": config.ffn_hidden,
        "decoder_attention_heads": config.n_heads,
        "decoder_normalize_before": True,
        "max_target_positions": config.max_positions,
    }
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "cfg": {"model": args}}, path / "reshard.pt")


def read_bandwidth() -> float:
    """Bytes per second reading 1 GiB of float32: the best of 5 runs each of a sum and of a
    matrix-vector product (what a decode step does), so the floor errs on the low side."""
    x = torch.ones(256 * 1024 * 1024)
    matrix, vector = x.view(32768, 8192), torch.ones(8192)
    best = float("inf")
    for _ in range(5):
        for read in (x.sum, lambda: torch.mv(matrix, vector)):
            start = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def decode_bytes(dtype: str) -> int:
    """Weights read by one decode step: everything but the position table (one row is read)."""
    c = PRESETS["opt-125m"]
    with torch.device("meta"):
        from .model import OPT

        model = OPT(c)
    params = sum(p.numel() for p in model.parameters()) - model.embed_positions.weight.numel()
    return params * FLOAT_BYTES[dtype]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one side per child process ---------------------------------------------------------------


def per_token_ms(run, short: int = 8, long: int = 72, repeats: int = 2) -> float:
    """Decode time per token, prefill excluded: (t(long) - t(short)) / (long - short), each time
    the best of ``repeats`` (a hiccup only adds time; in t(short) alone it would make the
    difference too small)."""

    def best(n: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(n)
            times.append(time.perf_counter() - start)
        return min(times)

    return (best(long) - best(short)) / (long - short) * 1000


def paired_decode(run, quick: bool) -> list[dict]:
    """Decode ms/token measured several times, each between two bandwidth measurements: the
    machines' memory speed changes from one minute to the next, so each measurement is compared
    with the floor of its own moment (``decode_figures``)."""
    run(4)
    samples = []
    for _ in range(2 if quick else 8):
        before = read_bandwidth()
        ms = per_token_ms(run)
        samples.append({"ms": ms, "bandwidth_before": before, "bandwidth_after": read_bandwidth()})
    return samples


def ours(paths: dict[str, str], quick: bool) -> dict:
    from .convert import convert
    from .engine import Engine
    from .requests import Request, SamplingParams
    from .tp import cpu_weight_layout

    results = {}
    load = {}
    converted = Path(paths["work"]) / "converted"
    convert(Path(paths["hf"]), converted, tp=1)
    for name in ("hf", "metaseq", "converted"):
        path = converted if name == "converted" else Path(paths[name])
        times = []
        for _ in range(2):  # until the first token: mapped files are read lazily by the first step
            start = time.perf_counter()
            engine = Engine.from_pretrained(path, max_batch=1)
            engine.generate([[2, 100]], max_new_tokens=1)
            times.append(time.perf_counter() - start)
            del engine
        load[name] = min(times)
    results["load_s"] = load

    # Single-request latencies on an engine made for one sequence at a time (its weights are laid
    # out for that: tp.cpu_weight_layout), the workload on one serving 16.
    single = Engine.from_pretrained(converted, max_batch=1)
    prompt = [2] + list(range(100, 131))
    results["bandwidth"] = read_bandwidth()

    def decode(n: int) -> None:
        single.complete([Request(prompt, SamplingParams(max_tokens=n, ignore_eos=True))])

    results["decode"] = {"float32": paired_decode(decode, quick)}
    long_prompt = [2] + [random.Random(1).randrange(4, 50000) for _ in range(511)]
    ttft = []
    for _ in range(3):
        start = time.perf_counter()
        single.complete([Request(long_prompt, SamplingParams(max_tokens=1, ignore_eos=True))])
        ttft.append(time.perf_counter() - start)
    results["ttft_512_ms"] = min(ttft) * 1000
    del single

    engine = Engine.from_pretrained(converted, max_batch=16)
    requests = [Request(p, SamplingParams(max_tokens=n, ignore_eos=True)) for p, n in workload(quick)]
    start = time.perf_counter()
    outputs = engine.complete(requests)
    elapsed = time.perf_counter() - start
    generated = sum(len(o.completions[0].token_ids) for o in outputs)
    results["workload"] = {"tokens": generated, "seconds": elapsed, "tokens_per_s": generated / elapsed}
    results["peak_rss_mib"] = peak_rss_mib()

    bf16 = Engine.from_pretrained(converted, dtype=torch.bfloat16, max_batch=1)

    def decode_bf16(n: int) -> None:
        bf16.complete([Request(prompt, SamplingParams(max_tokens=n, ignore_eos=True))])

    results["decode"]["bfloat16"] = paired_decode(decode_bf16, quick)
    results["cpu_weights"] = {
        "float32 batch 1": cpu_weight_layout(torch.float32, 1),
        "float32 workload": cpu_weight_layout(torch.float32, 16),
        "bfloat16 batch 1": cpu_weight_layout(torch.bfloat16, 1),
    }
    return results


def transformers_side(paths: dict[str, str], quick: bool) -> dict:
    import transformers

    model = transformers.OPTForCausalLM.from_pretrained(paths["hf"], dtype=torch.float32).eval()
    prompt = [2] + list(range(100, 131))

    def generate(m, ids: torch.Tensor, n: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return m.generate(
                ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1
            )

    results = {"bandwidth": read_bandwidth()}
    results["decode"] = {"float32": paired_decode(lambda n: generate(model, torch.tensor([prompt]), n), quick)}
    long_prompt = torch.tensor([[2] + [random.Random(1).randrange(4, 50000) for _ in range(511)]])
    ttft = []
    for _ in range(3):
        start = time.perf_counter()
        generate(model, long_prompt, 1)
        ttft.append(time.perf_counter() - start)
    results["ttft_512_ms"] = min(ttft) * 1000

    requests = workload(quick)
    start = time.perf_counter()
    generated = 0
    for i in range(0, len(requests), 16):
        batch = requests[i : i + 16]
        width = max(len(p) for p, _ in batch)
        ids = torch.tensor([[1] * (width - len(p)) + p for p, _ in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in batch])
        out = generate(model, ids, max(n for _, n in batch), mask)
        generated += sum(min(n, out.shape[1] - width) for _, n in batch)  # tokens the requests asked for
    elapsed = time.perf_counter() - start
    results["workload"] = {"tokens": generated, "seconds": elapsed, "tokens_per_s": generated / elapsed}
    results["peak_rss_mib"] = peak_rss_mib()

    bf16 = model.to(torch.bfloat16)
    results["decode"]["bfloat16"] = paired_decode(lambda n: generate(bf16, torch.tensor([prompt]), n), quick)
    return results


def child(side: str, paths_json: str, quick: bool, threads: int) -> None:
    torch.set_num_threads(threads)
    paths = json.loads(paths_json)
    result = ours(paths, quick) if side == "ours" else transformers_side(paths, quick)
    print(json.dumps(result))


# -- the parent -------------------------------------------------------------------------------


def run_side(side: str, paths: dict, quick: bool, threads: int) -> dict:
    command = [sys.executable, "-m", "inference_worker.engine.bench", side, json.dumps(paths), str(int(quick)), str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} benchmark failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}"


PHASE_SWITCH = 0.1  # bandwidths before and after a decode measurement further apart than this


def decode_figures(samples: list[dict], dtype: str) -> dict:
    """The best ms/token, and each measurement's ratio to the floor of its own moment: from the
    higher of the bandwidths measured right before and after it (so the floor errs low). Both
    leave out measurements during which the machine changed phase (the two bandwidths differ by
    over 10%): their short and long generations may have run at different speeds."""
    kept, ratios = [], []
    for s in samples:
        low, high = sorted((s["bandwidth_before"], s["bandwidth_after"]))
        if high - low <= PHASE_SWITCH * high:
            kept.append(s)
            ratios.append(s["ms"] / (decode_bytes(dtype) / high * 1000))
    figures = {"ms": min(s["ms"] for s in kept or samples), "pairs": len(ratios), "of": len(samples)}
    if ratios:
        figures.update(median=statistics.median(ratios), low=min(ratios), high=max(ratios))
    return figures


def paired_cell(f: dict, floor: float) -> str:
    paired = (
        f"paired: median {f['median']:.2f}x, {f['low']:.2f}-{f['high']:.2f}x, {f['pairs']} of {f['of']}"
        if f["pairs"]
        else f"paired: none of {f['of']}, the machine changed phase during each"
    )
    return f"{f['ms']:.1f} ({f['ms'] / floor:.2f}x floor; {paired})"


def table(ours_r: dict, hf_r: dict, bandwidth: float, threads: int) -> str:
    floor = {d: decode_bytes(d) / bandwidth * 1000 for d in ("float32", "bfloat16")}
    w_o, w_h = ours_r["workload"], hf_r["workload"]
    lines = [
        "| measure | gatehouse engine | transformers | engine vs transformers |",
        "|---|---|---|---|",
        f"| 64-request workload, generated tokens/s | {w_o['tokens_per_s']:.1f} ({w_o['tokens']} tok, {w_o['seconds']:.1f} s) "
        f"| {w_h['tokens_per_s']:.1f} ({w_h['tokens']} tok, {w_h['seconds']:.1f} s) | {w_o['tokens_per_s'] / w_h['tokens_per_s']:.2f}x |",
    ]
    for dtype in ("float32", "bfloat16"):
        o, h = decode_figures(ours_r["decode"][dtype], dtype), decode_figures(hf_r["decode"][dtype], dtype)
        lines.append(
            f"| batch-1 decode {dtype}, ms/token (floor {floor[dtype]:.1f} ms) | {paired_cell(o, floor[dtype])} "
            f"| {paired_cell(h, floor[dtype])} "
            f"| {h['ms'] / o['ms']:.2f}x faster |"
        )
    lines.append(
        f"| time to first token, 512-token prompt | {ours_r['ttft_512_ms']:.0f} ms | {hf_r['ttft_512_ms']:.0f} ms "
        f"| {hf_r['ttft_512_ms'] / ours_r['ttft_512_ms']:.2f}x faster |"
    )
    lines.append(f"| peak RSS of the process | {ours_r['peak_rss_mib']:.0f} MiB | {hf_r['peak_rss_mib']:.0f} MiB | |")
    load = ours_r["load_s"]
    lines.append(
        f"| load + first token: HF safetensors / metaseq reshard.pt / converted | {load['hf']:.2f} s / "
        f"{load['metaseq']:.2f} s / {load['converted']:.2f} s | | |"
    )
    header = (
        f"Machine: {machine()}; {threads} threads; measured read bandwidth {bandwidth / 1e9:.1f} GB/s "
        "(best of sum and matrix-vector product over 1 GiB, measured throughout the run); "
        f"floor = weight bytes read per step ({decode_bytes('float32') / 1e6:.0f} MB fp32) / bandwidth; "
        "decode ms: the best of the measurements kept; 'paired': each measurement's ratio to the floor from "
        "the bandwidths measured right before and after it (median, lowest-highest, and how many of the "
        "measurements had those two within 10%, the others being left out). "
        "Our CPU weights (tp.cpu_weight_layout): "
        + "; ".join(f"{use}: {layout}" for use, layout in ours_r["cpu_weights"].items())
        + "."
    )
    return header + "\n\n" + "\n".join(lines)


def main(threads: int | None = None, quick: bool = False, output: str | None = None) -> int:
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        paths = {"work": work, "hf": f"{work}/hf", "metaseq": f"{work}/metaseq"}
        write_checkpoint(Path(paths["hf"]))
        write_metaseq(Path(paths["hf"]), Path(paths["metaseq"]))
        measured = [read_bandwidth()]
        ours_r = run_side("ours", paths, quick, threads)
        hf_r = run_side("transformers", paths, quick, threads)
        bandwidth = max(measured + [r["bandwidth"] for r in (ours_r, hf_r)]
                        + [max(d["bandwidth_before"], d["bandwidth_after"])
                           for r in (ours_r, hf_r) for ds in r["decode"].values() for d in ds])
    print(table(ours_r, hf_r, bandwidth, threads))
    if output:
        Path(output).write_text(json.dumps({"ours": ours_r, "transformers": hf_r, "bandwidth": bandwidth}, indent=2))
    return 0


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], bool(int(sys.argv[3])), int(sys.argv[4]))
