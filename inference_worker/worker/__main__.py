"""The GPU worker: load one release's model once, serve it, and consume that release's queue.

    python -m inference_worker.worker --release SLUG --checkpoint PATH [--tp N] [--device cpu|cuda]
        [--dtype float32|bfloat16|float16] [--max-batch 16] [--concurrency N] [--threads N]

The model is loaded and the engine's ``serve()`` loop started before the worker takes work; then a
Celery worker with the threads pool consumes ``gpu.<slug>``: up to ``--concurrency`` (default: the
engine's batch size) jobs at once share the continuous batch, with prefetch 1 and late acks, so
the rest wait in the broker. SIGTERM (or Ctrl-C) drains: no new work, running jobs get
``PLAYGROUND_DRAIN_SECONDS`` to finish, the rest are handed back (or failed once they streamed
tokens), then the ranks stop and the process exits 0.

Tensor parallelism: ``--tp N`` starts ranks 1..N-1 itself (they exit with this process), or run
it under ``torchrun --nproc-per-node N``: rank 0 consumes, the other ranks follow it until it
closes and ignore SIGTERM themselves.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference_worker.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, help="the release slug whose queue (gpu.<slug>) this serves")
    parser.add_argument("--checkpoint", required=True, help="HF directory, metaseq parts or converted directory")
    parser.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default 1, or torchrun's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch", type=int, default=16, help="sequences in the engine's continuous batch")
    parser.add_argument("--max-len", type=int, default=None, help="prompt + max_tokens bound (default: the model's)")
    parser.add_argument("--concurrency", type=int, default=None, help="jobs in flight (default: --max-batch)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per rank")
    parser.add_argument("--worker-id", default=None, help="name in heartbeats (default host:pid:release)")
    parser.add_argument("--loglevel", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # Each job thread keeps its database connection: a new one costs more than the claim itself.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "600")
    import django

    django.setup()
    import torch

    from inference_worker.engine import Engine
    from inference_worker.engine.tp import launched_by_torchrun

    if args.threads:
        torch.set_num_threads(args.threads)
    tp = args.tp or (int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1)
    started = time.monotonic()
    engine = Engine.from_pretrained(args.checkpoint, tp=tp, device=args.device, dtype=args.dtype,
                                    max_batch=args.max_batch, num_threads=args.threads)
    if engine.tp.rank != 0:  # a torchrun follower: rank 0 decides when everything stops
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        engine.serve(args.max_len)
        engine.close()
        return 0
    if engine.tokenizer is None:
        engine.close()
        print(f"{args.checkpoint} has no tokenizer files; the playground needs them", file=sys.stderr)
        return 2
    engine.serve(args.max_len)
    return consume(engine, args, tp=tp, load_seconds=time.monotonic() - started)


def consume(engine, args: argparse.Namespace, *, tp: int, load_seconds: float) -> int:
    from celery.signals import worker_shutting_down

    from inference_worker.services import gpu_queue
    from inference_worker.worker import runtime, tasks
    from portal.celery import app

    worker = runtime.WorkerRuntime(engine, release=args.release, tp=tp, device=args.device, dtype=args.dtype,
                                   load_seconds=load_seconds, worker_id=args.worker_id)
    runtime.install(worker)
    worker_shutting_down.connect(lambda **_: worker.begin_drain(), weak=False)
    # Celery's Django fixup closes every database connection around each task unless told to reuse
    # them; the job threads keep theirs (WorkerRuntime.run_job drops one that broke).
    app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000
    assert tasks.generate.name == "gpu.generate"
    worker.start()
    logging.getLogger(__name__).info("Worker %s loaded %s in %.2f s; consuming %s", worker.worker_id,
                                     args.checkpoint, load_seconds, gpu_queue(args.release))
    try:
        app.worker_main([
            "worker", "--pool=threads", f"--concurrency={args.concurrency or args.max_batch}",
            f"--queues={gpu_queue(args.release)}", "--prefetch-multiplier=1", "--without-gossip",
            "--without-mingle", "--without-heartbeat", f"--hostname={worker.worker_id}@%h",
            f"--loglevel={args.loglevel}",
        ])
    finally:
        worker.stop()
        engine.close()
    return 0


if __name__ == "__main__":
    code = main()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        from inference_worker.engine.tp import exit_rank

        exit_rank(code)
    sys.exit(code)
