"""Command line of the OPT engine: ``generate``, ``convert`` and ``bench``.

    python -m inference_worker generate --checkpoint PATH [--tp N] (--prompt TEXT | --prompt-ids 2,31414,232)
        [--max-new-tokens K] [--temperature T] [--top-p P] [--seed S] [--dtype float32|bfloat16|float16] [--json]
    python -m inference_worker convert --input PATH --output DIR [--tp N] [--dtype D]
    python -m inference_worker bench [--threads N] [--quick]

Under torchrun every process is one rank and only rank 0 prints; outside torchrun ``--tp N``
starts the other ranks as subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated token ids, e.g. 2,31414,232") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference_worker", description="OPT inference engine")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="continue one prompt")
    gen.add_argument("--checkpoint", required=True, help="HF directory, metaseq parts or converted directory")
    gen.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default 1, or torchrun's)")
    prompt = gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text; tokenized with </s> prepended")
    prompt.add_argument("--prompt-ids", type=_ids, help="token ids used exactly as given")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    gen.add_argument("--device", default="cpu", help="cpu or cuda (rank r uses cuda:r)")
    gen.add_argument("--json", action="store_true", help='last line: {"token_ids": [...], "text": "..."}')

    conv = commands.add_parser("convert", help="write the fastest-loading per-rank safetensors layout")
    conv.add_argument("--input", required=True)
    conv.add_argument("--output", required=True)
    conv.add_argument("--tp", type=int, default=1)
    conv.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="default: keep")

    bench = commands.add_parser("bench", help="benchmark against transformers on a random opt-125m")
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    bench.add_argument("--quick", action="store_true", help="a much smaller workload, for a smoke run")
    bench.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser


def generate(args: argparse.Namespace) -> int:
    from inference_worker.engine import Engine, SamplingParams
    from inference_worker.engine.requests import Request
    from inference_worker.engine.tp import launched_by_torchrun

    tp = args.tp or (int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1)
    # one request: one cache slot, and CPU weights laid out for a single sequence
    with Engine.from_pretrained(args.checkpoint, tp=tp, device=args.device, dtype=args.dtype, max_batch=1) as engine:
        is_rank0 = engine.tp.rank == 0
        prompt_ids = args.prompt_ids if args.prompt_ids is not None else engine.encode(args.prompt)
        params = SamplingParams(
            max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
        )

        def stream(event) -> None:
            if not args.json and event.text:
                sys.stdout.write(event.text)
                sys.stdout.flush()

        stream_text = engine.tokenizer is not None and not args.json
        [output] = engine.complete([Request(prompt_ids, params)], on_token=stream if stream_text else None)
        completion = output.completions[0]
        if is_rank0:
            if args.json:
                print(json.dumps({"token_ids": completion.token_ids, "text": completion.text}))
            elif stream_text:
                print()
            else:
                print(",".join(map(str, completion.token_ids)))
    return 0


def convert(args: argparse.Namespace) -> int:
    from inference_worker.engine.convert import convert as run_convert
    from inference_worker.engine.engine import resolve_dtype

    dtype = resolve_dtype(args.dtype) if args.dtype else None
    out = run_convert(args.input, args.output, tp=args.tp, dtype=dtype)
    print(f"wrote {out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from inference_worker.engine.bench import main as run_bench

    return run_bench(threads=args.threads, quick=args.quick, output=args.output)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from inference_worker.engine.ranks import RankExited

    try:
        return {"generate": generate, "convert": convert, "bench": bench}[args.command](args)
    except (ValueError, FileNotFoundError) as error:  # bad checkpoint or request: say why, no traceback
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except RankExited as error:  # the follower's own error is the useful part
        parser.exit(1, f"{parser.prog} {args.command}: error: {error}\n")


if __name__ == "__main__":
    code = main()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        from inference_worker.engine.tp import exit_rank

        exit_rank(code)
    sys.exit(code)
