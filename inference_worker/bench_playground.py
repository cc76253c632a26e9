"""Parts of ``python manage.py bench_playground``: the arithmetic of its figures, the processes it
starts (the GPU worker, uvicorn, and the in-process engine in a child process of its own), and
its streaming HTTP client.

Torch-free at import: only the child, ``python -m inference_worker.bench_playground engine
CHECKPOINT MAX_BATCH THREADS``, loads the engine. It answers one JSON command per line on stdin
with one ``BENCH {...}`` line on stdout, so it can stay loaded, idle, while the worker is measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from portal.percentiles import percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
REPLY = "BENCH "

# -- arithmetic -----------------------------------------------------------------------------------


def latency_ms(seconds: list[float]) -> dict:
    """Median, p90, p95 and range, in milliseconds, of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "median": statistics.median(ms), "p90": percentile(ms, 0.9), "p95": percentile(ms, 0.95),
            "min": min(ms), "max": max(ms)}


def steady(pair: dict, threshold: float) -> bool:
    """Whether the four bandwidths read around a pair's two measurements are within ``threshold``
    of the highest: if not, the machine changed phase and the two sides ran at different speeds."""
    readings = [m[k] for m in (pair["path"], pair["engine"]) for k in ("bandwidth_before", "bandwidth_after")]
    return max(readings) - min(readings) <= threshold * max(readings)


def paired_ratio(pairs: list[dict], threshold: float) -> dict:
    """Each pair's whole-path / in-process tokens/s; the median over the steady pairs (over all of
    them when none is steady), as the engine benchmark pairs its decode measurements."""
    ratios = [p["path"]["tokens_per_s"] / p["engine"]["tokens_per_s"] for p in pairs]
    kept = [r for r, p in zip(ratios, pairs) if steady(p, threshold)]
    return {"ratios": ratios, "steady": len(kept), "of": len(pairs), "median": statistics.median(kept or ratios),
            "median_all": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}


#: the stages of a first token through the whole path, as (label, from, to) stamps of each request:
#: the client's clock, the job row's ``queued_at`` and ``started_at``, the Redis entry ids of the
#: job's events, and the worker's Celery log line (all the same machine's wall clock)
STAGES = (
    ("sent -> the job's `queued_at`: HTTP, token check, job_submit's checks", "sent", "queued_at"),
    ("`queued_at` -> `queued` event: the rest of job_submit, its commit, the XADD", "queued_at", "queued_event"),
    ("`queued` event -> the worker's Celery logs it received: send_task, broker", "queued_event", "received"),
    ("received -> the job's `started_at`: Celery's threads pool, job_claim until it stamps the job", "received",
     "started_at"),
    ("`started_at` -> `started` event: the rest of job_claim and its commit, the XADD", "started_at", "started_event"),
    ("`started` event -> first `token` event: engine submit, prefill, first token, the pump's XADD", "started_event",
     "token_event"),
    ("first `token` event -> the client's first text chunk: hub XREAD, SSE chunk, HTTP", "token_event", "client_first"),
)


#: the same, coarser, for concurrent requests (whose Celery log lines cannot be told apart)
CONCURRENT_STAGES = (
    ("sent -> `queued_at`: HTTP, token check, job_submit's checks", "sent", "queued_at"),
    ("`queued_at` -> `started_at`: commit, `queued` event, waiting in the broker for one of the worker's job "
     "slots (--concurrency, default --max-batch), job_claim", "queued_at", "started_at"),
    ("`started_at` -> first `token` event: the rest of the claim, prefill between the batch's steps, the XADD",
     "started_at", "token_event"),
    ("first `token` event -> the client: hub XREAD, SSE chunk, HTTP", "token_event", "client_first"),
)


def stage_medians(rows: list[dict], stages=STAGES) -> list[dict]:
    """Median (and p90) milliseconds of each stage over requests stamped with every key of ``stages``."""
    figures = []
    for label, start, end in stages:
        ms = [(r[end] - r[start]) * 1000 for r in rows]
        figures.append({"stage": label, "median_ms": statistics.median(ms), "p90_ms": percentile(ms, 0.9)})
    return figures


def celery_received(log: str) -> list[float]:
    """When the worker's consumer got each ``gpu.generate`` message, in order, from its log lines
    ``[2026-12-01 22:00:51,390: INFO/MainProcess] Task gpu.generate[...] received`` (local time)."""
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for stamp in re.findall(r"^\[([0-9-]+ [0-9:,]+): INFO/MainProcess\] Task gpu\.generate\[[^]]+\] received$",
                                    log, re.MULTILINE)]


def stream_id_seconds(entry_id: str) -> float:
    """When Redis added a stream entry: its id is ``<milliseconds>-<sequence>``."""
    return int(entry_id.partition("-")[0]) / 1000


def tokenizer_corpus(words: int = 40_000) -> list[str]:
    """Text on which ``writers.train_tokenizer`` learns a full opt-125m vocabulary (50,272 tokens):
    every random word twice, so that each becomes a token. With fewer tokens than the model's ids,
    generated ids past the tokenizer would decode to nothing and stream no text."""
    rng = random.Random(0)
    distinct = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 10))) for _ in range(words)]
    text = distinct * 2
    rng.shuffle(text)
    return [" ".join(text[i : i + 50]) for i in range(0, len(text), 50)]


#: the code on the measured path, fingerprinted in the results (it changes from run to run)
PATH_MODULES = ("inference_worker/apis.py", "inference_worker/stream_front.py", "inference_worker/services.py",
                "inference_worker/selectors.py", "inference_worker/streams.py", "inference_worker/release_model.py",
                "inference_worker/worker/runtime.py", "inference_worker/engine/engine.py", "access/services/tokens.py")


def code_fingerprint() -> dict:
    """The git commit and the sha256 (first 12 hex digits) of each module on the measured path."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return {"commit": commit.stdout.strip(), **{path: hashlib.sha256((REPO_ROOT / path).read_bytes()).hexdigest()[:12]
                                                 for path in PATH_MODULES}}


# -- CPU time ---------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine so far (all cores, idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


class CpuMeter:
    """CPU seconds used by each named process, and by everything else, between start and ``stop()``."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        used["other"] = machine_busy_seconds() - self.machine - sum(used.values())  # PostgreSQL, Redis, the rest
        return used


# -- processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(*, slug: str, checkpoint: Path, max_batch: int, threads: int, env: dict,
                 log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "inference_worker.worker", "--release", slug, "--checkpoint", str(checkpoint),
            "--max-batch", str(max_batch), "--threads", str(threads)]
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_worker(process: subprocess.Popen, log: Path, live_ids, timeout: float = 120) -> None:
    """Until the worker's heartbeat is seen (``live_ids()``) and Celery says it is ready."""
    deadline = time.monotonic() + timeout
    while not (any(w.endswith(f"-{process.pid}") for w in live_ids()) and "ready." in log.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def start_web(*, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """One uvicorn process serving the portal's ASGI application; returns it and its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    with open(log, "w") as out:
        process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()[-4000:]}") from None
            time.sleep(0.2)


def stop(*processes: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to every process at once (the worker drains), then wait; kill what outlives ``timeout``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EngineChild:
    """The in-process side: an engine serving in a child process, driven over its stdin/stdout."""

    def __init__(self, *, checkpoint: Path, max_batch: int, threads: int, env: dict, log: Path):
        self.log = log
        with open(log, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inference_worker.bench_playground", "engine", str(checkpoint), str(max_batch),
                 str(threads)], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True)

    def wait_ready(self) -> None:
        self._reply()  # loaded and serving

    def call(self, op: str, **arguments) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        raise RuntimeError(f"the in-process engine exited:\n{self.log.read_text()[-4000:]}")

    def close(self) -> None:
        """Ask the engine to stop (it finishes what it serves); SIGTERM follows with the others'."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.process.stdin.close()
            except OSError:
                pass


# -- the whole path's client (OpenAI's streamed completions over HTTP) ------------------------------


def completion_body(model: str, prompt: list[int], max_tokens: int, seed: int) -> dict:
    """Greedy, exactly ``max_tokens`` tokens (``ignore_eos``), streamed with the usage chunk at the end."""
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}


def sse_event(line: str) -> tuple[str, dict | None] | None:
    """What one line of the stream is: ("text", chunk) for a chunk carrying generated text,
    ("usage", chunk), ("other", chunk), ("done", None), or None for blank lines and comments."""
    if not line.startswith("data: "):
        return None
    payload = line[len("data: "):]
    if payload == "[DONE]":
        return "done", None
    chunk = json.loads(payload)
    if "error" in chunk:
        raise RuntimeError(f"the stream failed: {chunk['error']}")
    if chunk.get("usage"):
        return "usage", chunk
    return ("text" if any(c["text"] for c in chunk["choices"]) else "other"), chunk


class StreamRecord:
    """One streamed request as the client saw it (perf_counter times; ``sent_wall``: time.time())."""

    def __init__(self):
        self.sent = self.sent_wall = self.first = self.first_wall = self.done = None
        self.completion_id, self.tokens = None, 0

    def see(self, kind: str, chunk: dict | None) -> bool:
        """Record one event; True at ``[DONE]``."""
        if chunk is not None:
            self.completion_id = chunk["id"]
        if kind == "text" and self.first is None:
            self.first, self.first_wall = time.perf_counter(), time.time()
        if kind == "usage":
            self.tokens = chunk["usage"]["completion_tokens"]
        if kind == "done":
            self.done = time.perf_counter()
        return kind == "done"

    def as_dict(self) -> dict:
        return {"sent_wall": self.sent_wall, "ttft_s": self.first - self.sent, "first_wall": self.first_wall,
                "latency_s": self.done - self.sent, "tokens": self.tokens, "completion_id": self.completion_id}


def _check(response) -> None:
    if response.status_code != 200:
        response.read()
        raise RuntimeError(f"POST /api/v1/completions answered {response.status_code}: {response.text}")


def stream_once(client, url: str, token: str, body: dict) -> dict:
    """One streamed completion on a (kept-alive) synchronous httpx2 client."""
    record = StreamRecord()
    record.sent, record.sent_wall = time.perf_counter(), time.time()
    with client.stream("POST", f"{url}/api/v1/completions", json=body,
                       headers={"Authorization": f"Bearer {token}"}) as response:
        _check(response)
        for line in response.iter_lines():
            event = sse_event(line)
            if event is not None and record.see(*event):
                break
    return record.as_dict()


async def _stream_async(client, url: str, token: str, body: dict) -> dict:
    record = StreamRecord()
    record.sent, record.sent_wall = time.perf_counter(), time.time()
    async with client.stream("POST", f"{url}/api/v1/completions", json=body,
                             headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"POST /api/v1/completions answered {response.status_code}: {response.text}")
        async for line in response.aiter_lines():
            event = sse_event(line)
            if event is not None and record.see(*event):
                break
    return record.as_dict()


async def _closed_loop(url: str, tokens: list[str], bodies: list[dict], users: int) -> dict:
    """``users`` clients, each sending its next body (taken in turn) when its previous answer is
    complete, until every body was sent; ``users == len(bodies)``: all at once."""
    import httpx2

    pending = iter(bodies)
    records: list[dict] = []

    async def user(index: int, client) -> None:
        for body in pending:  # a shared iterator: each user takes the next body
            records.append(await _stream_async(client, url, tokens[index % len(tokens)], body))

    limits = httpx2.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(600.0), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(user(i, client) for i in range(users)))
        seconds = time.perf_counter() - started
    generated = sum(r["tokens"] for r in records)
    return {"seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds, "requests": records}


def closed_loop(url: str, tokens: list[str], bodies: list[dict], users: int) -> dict:
    return asyncio.run(_closed_loop(url, tokens, bodies, users))


# -- the report ------------------------------------------------------------------------------------


def table(r: dict) -> str:
    """The report in markdown: the machine, the headline table, the first token's stages, and
    each throughput measurement with its bandwidths and the CPU time of every process."""
    t, plan, loop = r["ttft"], r["plan"], r["closed_loop"]
    pairs, ratio = r["throughput"]["pairs"], r["throughput"]["ratio"]
    ttft_goal = "met" if t["added_ms"] <= 30 else f"missed by {t['added_ms'] - 30:.1f} ms"
    ratio_goal = "met" if ratio["median"] >= 0.9 else f"missed by {0.9 - ratio['median']:.2f}"
    sides = (("path", "whole path"), ("engine", "in-process"))

    def tps(side: str) -> str:
        return ", ".join(f"{p[side]['tokens_per_s']:.1f}" for p in pairs)

    def first(m: dict, low: str = "median", high: str = "p90", digits: int = 1) -> str:
        return f"{m[low]:.{digits}f} / {m[high]:.{digits}f} ms"

    def row(name: str, m: dict) -> str:
        cpu = " / ".join(f"{m['cpu_s'][k]:.1f}" for k in ("worker", "web", "engine", "client", "other"))
        return (f"| {name} | {m['tokens_per_s']:.1f} | {m['seconds']:.1f} | {m['bandwidth_before'] / 1e9:.1f} / "
                f"{m['bandwidth_after'] / 1e9:.1f} | {m['load_average']:.1f} | {cpu} |")

    measurements = [row(f"{label} {i + 1}", p[side]) for i, p in enumerate(pairs) for side, label in sides]
    measurements += [row(f"closed loop, {label}", loop[side]) for side, label in sides]
    lines = [
        f"Machine: {r['machine']}; {plan['threads']} threads, max batch {plan['max_batch']}; measured read bandwidth "
        f"{r['bandwidth'] / 1e9:.1f} GB/s (highest reading; lowest {r['bandwidth_low'] / 1e9:.1f}); load average "
        f"{r['load_average_before'][0]:.2f} before, {r['load_average_after'][0]:.2f} after; {r['date']}"
        f"{' (--quick)' if plan['quick'] else ''}.",
        "",
        "| measure | whole path (HTTP, broker, worker, Redis, SSE) | in-process engine | whole path vs in-process "
        "| goal |",
        "|---|---|---|---|---|",
        f"| time to first token, idle, 32-token prompt, max_tokens 1 ({t['path']['n']} sequential): median / p90 "
        f"| {first(t['path'])} | {first(t['engine'])} | {t['added_ms']:+.1f} ms (medians) "
        f"| at most +30 ms: {ttft_goal} |",
        f"| {pairs[0]['path']['users']}-request workload, all at once ({r['throughput']['tokens_expected']} tokens): "
        f"generated tokens/s, {len(pairs)} pair(s) in run order | {tps('path')} | {tps('engine')} "
        f"| median paired ratio {ratio['median']:.2f} ({ratio['low']:.2f}-{ratio['high']:.2f}; {ratio['steady']} of "
        f"{ratio['of']} pairs steady) | at least 0.9: {ratio_goal} |",
        f"| {loop['path']['users']} users, closed loop over the workload: time to first token p50 / p95; tokens/s "
        + "".join(f"| {first(loop[side]['ttft'], high='p95', digits=0)}; {loop[side]['tokens_per_s']:.1f} "
                  for side, _ in sides)
        + f"| {loop['path']['tokens_per_s'] / loop['engine']['tokens_per_s']:.2f} (tokens/s, one measurement each) | |",
        "",
        "| stage of the whole path's first token (median over the sequential requests) | ms |",
        "|---|---|",
        *(f"| {s['stage']} | {s['median_ms']:.1f} |" for s in t["stages"]),
        f"| (the in-process engine: submit to the first token's callback) | {t['engine']['median']:.1f} |",
        "",
        "| first tokens of concurrent requests through the whole path, by stage: median / p90 ms "
        "| all at once (pair 1) | closed loop |",
        "|---|---|---|",
        *(f"| {a['stage']} | {a['median_ms']:.0f} / {a['p90_ms']:.0f} | {b['median_ms']:.0f} / {b['p90_ms']:.0f} |"
          for a, b in zip(pairs[0]["path"]["stages"], loop["path"]["stages"])),
        "",
        "| database work on that path, timed in the benchmark's own process (median) | ms |",
        "|---|---|",
        *(f"| {name} | {ms:.1f} |" for name, ms in t["server_costs"].items()),
        "",
        "| measurement | tokens/s | seconds | bandwidth before / after, GB/s | load average | CPU seconds: worker / "
        "web / in-process engine / client / everything else |",
        "|---|---|---|---|---|---|",
        *measurements,
    ]
    return "\n".join(lines) + "\n"


# -- the in-process engine (the child process) ------------------------------------------------------


def _engine_main(checkpoint: str, max_batch: int, threads: int) -> None:
    import torch

    from inference_worker.engine import Engine
    from inference_worker.engine.requests import Request, SamplingParams

    torch.set_num_threads(threads)
    engine = Engine.from_pretrained(checkpoint, max_batch=max_batch, num_threads=threads)
    engine.serve()  # like the worker: the model's positions bound prompt + max_tokens

    def request(prompt: list[int], max_tokens: int, seed: int) -> Request:
        return Request(list(prompt), SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=seed))

    def loop(requests: list, users: int) -> dict:
        """Closed loop as the client runs it; ``users == len(requests)``: all submitted at once.
        A finished request's callback (on the engine's thread) submits the next one."""
        pending, lock, done, records, failures = iter(enumerate(requests)), threading.Lock(), threading.Event(), [], []

        def send() -> None:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            index, (prompt, max_tokens) = item
            stamps = {"sent": time.perf_counter()}

            def on_token(event) -> None:  # the worker's callback is a queue put; this one a stamp
                if event.token_id is not None:
                    stamps.setdefault("first", time.perf_counter())

            def finished(future) -> None:
                if future.exception() is not None:  # the engine stopped serving: answer, do not hang
                    failures.append(repr(future.exception()))
                    done.set()
                    return
                records.append({"ttft_s": stamps["first"] - stamps["sent"],
                                "latency_s": time.perf_counter() - stamps["sent"],
                                "tokens": len(future.result().completions[0].token_ids)})
                if len(records) == len(requests):
                    done.set()
                send()

            engine.submit(request(prompt, max_tokens, index), on_token).add_done_callback(finished)

        started = time.perf_counter()
        for _ in range(min(users, len(requests))):
            send()
        done.wait()
        seconds = time.perf_counter() - started
        if failures:
            raise RuntimeError(failures[0])
        generated = sum(r["tokens"] for r in records)
        return {"seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds, "requests": records}

    print(REPLY + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "stop":
            break
        if command["op"] == "ttft":  # submit to the first token's callback
            result = loop([(command["prompt"], 1)], 1)["requests"][0]
        else:  # "loop"
            result = loop(command["requests"], command["users"])
        print(REPLY + json.dumps(result), flush=True)
    engine.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["engine"] or len(sys.argv) != 5:
        sys.exit("usage: python -m inference_worker.bench_playground engine CHECKPOINT MAX_BATCH THREADS")
    _engine_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
