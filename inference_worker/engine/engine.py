"""The engine: a loaded (possibly tensor-parallel) model serving batches of completion requests.

With ``tp > 1`` every rank runs the same deterministic scheduling loop on the same requests
(SPMD). Under ``torchrun`` each process is a rank; otherwise the calling process is rank 0 and
starts the other ranks as subprocesses (``ranks.py``) that follow its commands, which also works
from a Celery prefork child, where ``multiprocessing`` may not start children.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import random
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

import torch

from .config import OPTConfig
from .kv_cache import CachedBatch, KVCache
from .loaders import load_model
from .model import OPT
from .ranks import Followers
from .requests import Completion, Request, RequestOutput, SamplingParams, TokenCallback, TokenEvent, TopLogprob
from .sampling import Sampled, Sampler, SamplingState
from .scheduler import PrefillChunk, Scheduler, Sequence
from .tokenizer import OPTTokenizer, tokenizer_files
from .tp import TensorParallel, connect, free_port, join_torchrun, launched_by_torchrun, leave_torchrun, rendezvous

logger = logging.getLogger(__name__)

#: rank 0's source of work: ``poll(idle)`` -> (new requests with their callbacks, closing)
Poll = Callable[[bool], "tuple[list[tuple[Request, TokenCallback | None]], bool]"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    return DTYPES[dtype] if isinstance(dtype, str) else dtype


class Engine:
    def __init__(
        self,
        model: OPT,
        tokenizer: OPTTokenizer | None,
        device: torch.device,
        *,
        max_batch: int = 16,
        max_batch_tokens: int = 3072,
        followers: Followers | None = None,
    ):
        self.model = model
        self.config: OPTConfig = model.config
        self.tp: TensorParallel = model.tp
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.sampler = Sampler(
            self.tp, self.config.vocab_size, model.embed_tokens.start, model.embed_tokens.rows_per_rank
        )
        self._followers = followers
        if followers is not None:
            followers.on_failure(self.tp.abort)
        self._joined_torchrun = False
        self._server: threading.Thread | None = None
        self._cache: KVCache | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        tp: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        *,
        max_batch: int = 16,
        max_batch_tokens: int = 3072,
        num_threads: int | None = None,
    ) -> Engine:
        """Load a checkpoint directory (any supported format) on ``tp`` ranks.

        Under torchrun this process is one of the ranks (``tp`` must equal ``WORLD_SIZE``);
        otherwise ranks 1..tp-1 are started here as subprocesses, each loading its own slice.
        ``num_threads`` sets the CPU threads of the started ranks. If a started rank exits, here or
        later in ``complete``/``generate``, the call raises a ``RuntimeError`` quoting that rank's
        stderr, and the other started ranks are stopped.
        """
        path, device, dtype = Path(path), torch.device(device), resolve_dtype(dtype)
        options = dict(max_batch=max_batch, max_batch_tokens=max_batch_tokens)
        if tp == 1:
            return cls.build(path, TensorParallel(), device, dtype, **options)
        if launched_by_torchrun():
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            if world != tp:
                raise ValueError(f"torchrun started {world} ranks but tp={tp}")
            device = _rank_device(device, int(os.environ.get("LOCAL_RANK", rank)))
            engine = cls.build(path, join_torchrun(device), device, dtype, **options)
            engine._joined_torchrun = True
            return engine
        port = free_port()
        followers = Followers.start(
            path=path, world=tp, device=device, dtype=dtype, port=port, num_threads=num_threads, **options
        )
        group = None
        try:
            device = _rank_device(device, 0)
            store = rendezvous(0, tp, "127.0.0.1", port)
            followers.wait_for(store, "connecting")  # the group is only made with ranks known to be alive
            group = followers.while_alive(lambda: connect(device, 0, tp, store))
            engine = cls.build(path, group, device, dtype, followers=followers, **options)
            followers.wait_for(store, "loaded")
            return engine
        except BaseException:
            followers.terminate()
            if group is not None:
                group.release()
            raise

    @classmethod
    def build(
        cls, path: Path, tp: TensorParallel, device: torch.device, dtype: torch.dtype, *, max_batch: int = 16, **options
    ) -> Engine:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        model = load_model(path, tp, device, dtype, max_batch)
        tokenizer = OPTTokenizer.from_directory(path, model.config.bos_id) if tokenizer_files(path) else None
        return cls(model, tokenizer, device, max_batch=max_batch, **options)

    def close(self) -> None:
        """Finish serving (waiting for submitted requests), then stop the ranks this engine
        started (their group goes with them)."""
        if self._server is not None:
            self._closing.set()
            self._server.join()
            self._server = None
        if self._followers is not None:
            self._followers.close()
            self._followers = None
        if self._joined_torchrun:
            leave_torchrun(self.tp)
            self._joined_torchrun = False
        else:
            self.tp.release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------------

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[list[int]]:
        """New token ids for each prompt (ids used exactly as given), ending at ``</s>`` inclusive
        or after ``max_new_tokens``."""
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        outputs = self.complete([Request(list(p), params, request_id=str(i)) for i, p in enumerate(prompts)])
        return [output.completions[0].token_ids for output in outputs]

    def complete(self, requests: list[Request], on_token: TokenCallback | None = None) -> list[RequestOutput]:
        """Run the requests to completion with continuous batching; ``on_token`` streams events.

        Under torchrun every rank calls this; the requests of rank 0 are the ones run.
        """
        if self._server is not None:
            raise RuntimeError("this engine is serving: use submit()")
        requests = [self._prepare(r, self.config.max_positions) for r in requests]
        pending = [(r, on_token) for r in requests]

        def poll(idle: bool) -> tuple[list[tuple[Request, TokenCallback | None]], bool]:
            nonlocal pending
            arrivals, pending = pending, []
            return arrivals, True

        if self._followers is not None:
            self._followers.begin_run()
        max_len = max((len(r.prompt_ids) + r.params.max_tokens for r in requests), default=1)
        return self._lead(poll, max_len)

    def serve(self, max_len: int | None = None) -> None:
        """Serve ``submit``-ted requests from a background thread until ``close()``: requests join
        the running batch at the next token boundary. ``max_len`` (default: the model's positions)
        bounds prompt + max_tokens and sizes the KV cache. Under torchrun, ranks other than 0
        block here, following rank 0, until it closes."""
        max_len = min(max_len or self.config.max_positions, self.config.max_positions)
        if self.tp.rank != 0:
            self._run(None, max_len)
            return
        if self._server is not None:
            raise RuntimeError("this engine is already serving")
        self._serve_max_len = max_len
        self._inbox: queue.Queue[tuple[Request, TokenCallback | None, Future]] = queue.Queue()
        self._closing = threading.Event()
        self._futures: dict[int, Future] = {}
        self._serve_lock = threading.Lock()  # orders submit() against the loop's failure
        self._serve_error: BaseException | None = None
        if self._followers is not None:
            self._followers.begin_run()
        self._server = threading.Thread(target=self._serve_loop, name="opt-engine", daemon=True)
        self._server.start()

    def submit(self, request: Request, on_token: TokenCallback | None = None) -> Future:
        """Queue a request on a serving engine; the future resolves to its ``RequestOutput``.
        ``on_token`` is called from the serving thread."""
        if self._server is None or self._closing.is_set():
            raise RuntimeError("call serve() first (and not after close())")
        request = self._prepare(request, self._serve_max_len)
        future: Future = Future()
        with self._serve_lock:
            if self._serve_error is not None:
                raise RuntimeError(f"this engine stopped serving: {self._serve_error}") from self._serve_error
            self._inbox.put((request, on_token, future))
        return future

    def _serve_loop(self) -> None:
        try:
            self._lead(self._poll_inbox, self._serve_max_len, self._resolve)
        except BaseException as error:  # fail every waiting caller, running or queued, rather than hang them
            with self._serve_lock:
                self._serve_error = error
                waiting = list(self._futures.values())
                while not self._inbox.empty():
                    waiting.append(self._inbox.get_nowait()[2])
            for future in waiting:
                future.set_exception(error)
            logger.error("The engine stopped serving", exc_info=error)

    def _poll_inbox(self, idle: bool) -> tuple[list[tuple[Request, TokenCallback | None]], bool]:
        arrivals = []
        try:
            # when idle, wait a little (followers stay in step through this empty exchange)
            item = self._inbox.get(timeout=0.2) if idle else self._inbox.get_nowait()
            while True:
                request, on_token, future = item
                self._futures[id(request)] = future
                arrivals.append((request, on_token))
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        return arrivals, self._closing.is_set() and self._inbox.empty()

    def _resolve(self, request: Request, output: RequestOutput) -> None:
        self._futures.pop(id(request)).set_result(output)

    def encode(self, text: str) -> list[int]:
        return self._require_tokenizer().encode(text, add_bos=True)

    def decode(self, ids: list[int]) -> str:
        return self._require_tokenizer().decode(ids)

    # -- the loop (runs identically on every rank) -------------------------------------------

    def _prepare(self, request: Request, max_len: int) -> Request:
        p, prompt = request.params, list(request.prompt_ids)
        if not prompt:
            raise ValueError("the prompt is empty")
        if any(not 0 <= i < self.config.vocab_size for i in prompt):
            raise ValueError(f"prompt ids must be in [0, {self.config.vocab_size})")
        if p.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer in the checkpoint directory")
        room = max_len - p.max_tokens
        if len(prompt) > room:
            if p.truncate == "error" or room < 1:
                raise ValueError(
                    f"prompt of {len(prompt)} tokens + max_tokens {p.max_tokens} exceeds {max_len} positions"
                )
            prompt = prompt[-room:]
        if p.seed is None:
            p = dataclasses.replace(p, seed=random.randrange(2**62))
        return Request(prompt, p, request.request_id, request.cancel)

    def _lead(
        self, poll: Poll, max_len: int, on_output: Callable[[Request, RequestOutput], None] | None = None
    ) -> list[RequestOutput]:
        """``_run`` on rank 0. A follower that dies breaks the collective rank 0 is in (the other
        followers are killed with it, see ``ranks.py``): raise the follower's own error instead."""
        try:
            return self._run(poll, max_len, on_output)
        except Exception as error:
            followers = self._followers
            # the collective can fail a moment before the dying follower is reaped
            if followers is not None and followers.exited(wait=5.0 if isinstance(error, RuntimeError) else 0.0):
                raise followers.error() from error
            raise

    def _run(
        self,
        poll: Poll | None,
        max_len: int,
        on_output: Callable[[Request, RequestOutput], None] | None = None,
    ) -> list[RequestOutput]:
        """The generation loop, identical on every rank. At each token boundary rank 0 takes new
        requests from ``poll`` and the cancellations, and shares them with the other ranks; the
        loop ends once ``poll`` says it is closing and nothing is left to do. Returns the outputs
        in arrival order (``on_output`` also gets each one as soon as it is done)."""
        max_len = int(self._share(torch.tensor([max_len]))[0])
        cache = self._cache_for(max_len)
        scheduler = Scheduler(self.max_batch, self.max_batch_tokens)
        active: dict[int, tuple[Request, list[Sequence]]] = {}
        outputs: dict[int, RequestOutput] = {}
        arrived = 0
        with torch.inference_mode():
            while True:
                arrivals, cancels, closing = self._exchange(poll, not scheduler.has_work(), active)
                for request, on_token in arrivals:
                    sequences = [
                        Sequence(request, i, self._sampling_state(request, i), on_token=on_token)
                        for i in range(request.params.n_sequences)
                    ]
                    for sibling in sequences[1:]:
                        sibling.leader = sequences[0]
                    active[arrived] = (request, sequences)
                    arrived += 1
                    for sequence in sequences:
                        scheduler.add(sequence)
                self._cancel([active[key] for key in cancels if key in active], scheduler, cache)
                if scheduler.has_work():
                    plan = scheduler.plan()
                    for chunk in plan.prefill:
                        self._prefill(chunk, cache, scheduler)
                    if plan.decode:
                        self._decode(plan.decode, cache)
                    self._retire(scheduler, cache)
                for key, (request, sequences) in list(active.items()):
                    if all(s.finished for s in sequences):
                        del active[key]
                        outputs[key] = self._output(request, sequences)
                        if on_output is not None:
                            on_output(request, outputs[key])
                if closing and not scheduler.has_work():
                    return [outputs[key] for key in sorted(outputs)]

    def _sampling_state(self, request: Request, index: int) -> SamplingState:
        return SamplingState.create(request.params, request.params.seed + index, list(request.prompt_ids), self.config.eos_id)

    def _share(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``x`` on every rank (through the device, as NCCL needs)."""
        if self.tp.world == 1:
            return x
        return self.tp.broadcast(x.to(self.device)).cpu()

    def _exchange(self, poll: Poll | None, idle: bool, active: dict[int, tuple[Request, list[Sequence]]]):
        """New requests, cancelled request keys and the closing flag, as rank 0 sees them."""
        arrivals, cancels, closing, payload = [], [], False, b""
        if self.tp.rank == 0:
            arrivals, closing = poll(idle)
            cancels = [key for key, (request, _) in active.items() if request.cancel.is_set()]
            if self.tp.world > 1 and (arrivals or cancels):
                message = {"new": [r.to_json() for r, _ in arrivals], "cancel": cancels}
                payload = json.dumps(message).encode()
        if self.tp.world == 1:
            return arrivals, cancels, closing
        size, closing = self._share(torch.tensor([len(payload), int(closing)])).tolist()
        if size and self.tp.rank != 0:
            message = json.loads(bytes(self._share(torch.empty(size, dtype=torch.uint8)).tolist()))
            arrivals = [(Request.from_json(r), None) for r in message["new"]]
            cancels = message["cancel"]
        elif size:
            self._share(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        return arrivals, cancels, bool(closing)

    @staticmethod
    def _retire(scheduler: Scheduler, cache: KVCache) -> None:
        for sequence, source, target in scheduler.retire_finished():
            cache.copy_slot(source, target, sequence.cached)

    def _cache_for(self, max_len: int) -> KVCache:
        c = self.config
        heads = c.n_heads // self.tp.world
        dtype = self.model.embed_positions.weight.dtype
        if self._cache is None or not self._cache.fits(self.max_batch, max_len, dtype, c.n_layers, heads):
            self._cache = None  # release before allocating the larger one
            self._cache = KVCache(c.n_layers, self.max_batch, heads, max_len, c.head_dim, dtype, self.device)
        return self._cache

    def _prefill(self, chunk: PrefillChunk, cache: KVCache, scheduler: Scheduler) -> None:
        """Run a prompt chunk; when it completes the prompt, the sequence and the siblings that copy
        its cache (``n``/``best_of``) each sample a first token from its last logits."""
        s, n = chunk.sequence, chunk.stop - chunk.start
        p = s.request.params
        tokens = torch.tensor([s.prompt_ids[chunk.start : chunk.stop]], device=self.device)  # (1, T)
        positions = torch.arange(chunk.start, chunk.stop, device=self.device).unsqueeze(0)
        batch = CachedBatch.build([s.slot], [chunk.start], n, self.device)
        score_prompt = p.echo and p.logprobs is not None
        logits = self.model.forward_cached(tokens, positions, cache, batch, last_only=not score_prompt)[0]
        s.cached = chunk.stop
        if score_prompt:
            self._score_prompt(s, chunk, logits)
        if not chunk.completes_prompt:
            return
        group = [s]
        for sibling in scheduler.fork(s):
            cache.copy_slot(s.slot, sibling.slot, s.cached)
            sibling.cached = s.cached
            sibling.prompt_logprobs, sibling.prompt_top_logprobs = list(s.prompt_logprobs), list(s.prompt_top_logprobs)
            group.append(sibling)
        if p.max_tokens == 0:
            for member in group:
                member.finish_reason = "length"
                self._stream(member, None)
            return
        last = logits[-1:].expand(len(group), -1).clone()
        for member, sampled in zip(group, self.sampler.sample(last, [m.sampling for m in group])):
            self._append(member, sampled)

    def _score_prompt(self, s: Sequence, chunk: PrefillChunk, logits: torch.Tensor) -> None:
        """Logprobs of the prompt's own tokens (for ``echo`` with ``logprobs``)."""
        if chunk.start == 0:
            s.prompt_logprobs.append(None)
            s.prompt_top_logprobs.append([])
        targets = s.prompt_ids[chunk.start + 1 : chunk.stop + 1]
        if not targets:
            return
        ids = torch.tensor(targets, device=logits.device)
        chosen, top = self.sampler.token_logprobs(logits[: len(targets)], ids, s.request.params.logprobs)
        s.prompt_logprobs.extend(chosen.tolist())
        for t in range(len(targets)):
            s.prompt_top_logprobs.append(
                [TopLogprob(int(i), float(v)) for v, i in zip(top[0][t], top[1][t])] if top is not None else []
            )

    def _decode(self, sequences: list[Sequence], cache: KVCache) -> None:
        if len(sequences) == 1 and self.model.native_ready(cache):  # one C call, no tensors to build
            s = sequences[0]
            logits = self.model.native_step(s.output_ids[-1], s.cached, cache, s.slot).view(1, -1)
        else:
            sequences = sorted(sequences, key=lambda s: s.slot)
            tokens = torch.tensor([[s.output_ids[-1]] for s in sequences], device=self.device)  # (B, 1)
            positions = torch.tensor([[s.cached] for s in sequences], device=self.device)
            batch = CachedBatch.build([s.slot for s in sequences], [s.cached for s in sequences], 1, self.device)
            logits = self.model.forward_cached(tokens, positions, cache, batch)[:, -1]  # (B, V_r)
        for s in sequences:
            s.cached += 1
        for s, sampled in zip(sequences, self.sampler.sample(logits, [s.sampling for s in sequences])):
            self._append(s, sampled)

    def _append(self, s: Sequence, sampled: Sampled) -> None:
        p = s.request.params
        s.output_ids.append(sampled.token_id)
        s.logprobs.append(sampled.logprob)
        if sampled.top is not None:
            s.top_logprobs.append(sampled.top)
        may_stop = len(s.output_ids) >= p.min_tokens
        if may_stop and (
            (sampled.token_id == self.config.eos_id and not p.ignore_eos) or sampled.token_id in p.stop_token_ids
        ):
            s.finish_reason = "stop"
        if self.tokenizer is not None and (p.stop or s.on_token is not None):
            s.text = self.tokenizer.decode(s.output_ids)
            if may_stop and p.stop and s.finish_reason is None:
                hits = [i for i in (s.text.find(stop) for stop in p.stop) if i >= 0]
                if hits:
                    s.text = s.text[: min(hits)]
                    s.finish_reason = "stop"
        if s.finish_reason is None and len(s.output_ids) >= p.max_tokens:
            s.finish_reason = "length"
        self._stream(s, sampled)

    def _stream(self, s: Sequence, sampled: Sampled | None) -> None:
        if s.on_token is None:
            return
        settled = len(s.text) if s.finished else len(s.text) - _unsettled_suffix(s.text, s.request.params.stop)
        delta = s.text[s.streamed : settled]
        s.streamed = max(s.streamed, settled)
        event = TokenEvent(
            s.request.request_id, s.index, sampled.token_id if sampled else None, delta, s.finish_reason,
            sampled.logprob if sampled else None, sampled.top if sampled else None,
        )
        if s.on_token(event) is False:
            s.request.cancel.set()

    def _cancel(self, cancelled: list[tuple[Request, list[Sequence]]], scheduler: Scheduler, cache: KVCache) -> None:
        if not cancelled:
            return
        for request, sequences in cancelled:
            scheduler.cancel_waiting(request)
            for s in sequences:
                if not s.finished:
                    s.finish_reason = "cancelled"
                    self._stream(s, None)
        self._retire(scheduler, cache)

    def _output(self, request: Request, sequences: list[Sequence]) -> RequestOutput:
        p = request.params
        completions = []
        for s in sequences:
            text = s.text if (p.stop and s.finish_reason == "stop") else self._text(s.output_ids)
            ids, logprobs, top = list(s.output_ids), list(s.logprobs), list(s.top_logprobs)
            if p.echo:
                text = self._text(s.prompt_ids) + text
                ids = s.prompt_ids + ids
                logprobs = (s.prompt_logprobs or [None] * len(s.prompt_ids)) + logprobs
                top = s.prompt_top_logprobs + top
            completions.append(
                Completion(
                    index=s.index,
                    token_ids=ids,
                    text=text,
                    finish_reason=s.finish_reason or "length",
                    cumulative_logprob=float(sum(s.logprobs)) if s.sampling.needs_logprobs else None,
                    logprobs=logprobs if p.logprobs is not None else None,
                    top_logprobs=top if p.logprobs else None,
                )
            )
        if p.n_sequences > p.n:
            completions = sorted(completions, key=lambda c: -c.cumulative_logprob)[: p.n]
            for index, completion in enumerate(completions):
                completion.index = index
        return RequestOutput(request.request_id, list(request.prompt_ids), completions)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

    def _require_tokenizer(self) -> OPTTokenizer:
        if self.tokenizer is None:
            raise ValueError("this checkpoint directory has no tokenizer files")
        return self.tokenizer


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def _unsettled_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that may still change: the start of a stop string or
    an unfinished multi-byte character (decoded as U+FFFD)."""
    held = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                held = max(held, k)
                break
    return held
