"""Rank 0 fails fast, with the follower's own error, when a follower rank dies (real processes).

Each call that used to wait for a dead rank runs under a deadline far above its normal time, so a
regression fails the test instead of hanging it for the group timeout (30 minutes).
"""

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from inference_worker.engine import Engine, Request, SamplingParams
from inference_worker.engine import engine as engine_module
from inference_worker.engine import tp as tp_module
from inference_worker.engine.convert import convert
from inference_worker.engine.loaders.converted import rank_file

from .conftest import PROMPTS

DEADLINE = 120  # seconds


def within_deadline(call, deadline: float = DEADLINE):
    """``call()``'s exception (None if it returned), failing the test if it is still running."""
    outcome = {}

    def target():
        try:
            call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"still waiting after {deadline} s"
    return outcome.get("error")


def children() -> set[int]:
    """Processes whose parent is this one, zombies included (a zombie was never waited for)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid():
            pids.add(int(stat.parent.name))
    return pids


def test_follower_failing_to_load_its_slice_fails_from_pretrained(hf_dirs, tmp_path):
    """Rank 1's file of a converted checkpoint is cut short (a partial copy); rank 0's is fine."""
    converted = convert(hf_dirs["pre_ln"], tmp_path / "tp2", tp=2)
    damaged = converted / rank_file(1, 2)
    damaged.write_bytes(damaged.read_bytes()[:100])
    before = children()

    error = within_deadline(lambda: Engine.from_pretrained(converted, tp=2, num_threads=1))

    assert isinstance(error, RuntimeError)
    message = str(error)
    assert "rank 1 exited with code 1" in message
    assert "SafetensorError" in message and "deserializing header" in message  # the follower's own traceback
    assert children() - before == set()


def test_follower_dying_before_the_rendezvous_fails_from_pretrained(hf_dirs):
    """Followers apply ``num_threads`` before joining the process group; -1 makes them exit there."""
    before = children()

    error = within_deadline(lambda: Engine.from_pretrained(hf_dirs["pre_ln"], tp=2, num_threads=-1))

    assert isinstance(error, RuntimeError)
    assert "rank 1 exited with code 1" in str(error)
    assert "set_num_threads expects a positive integer" in str(error)
    assert children() - before == set()


def test_follower_dying_inside_the_group_set_up_fails_from_pretrained(hf_dirs, monkeypatch):
    """The followers are told to use a network interface that does not exist, so rank 1 dies inside
    gloo's set-up after announcing itself, while rank 0's set-up waits for it: rank 0 must say so at
    once, not when its set-up gives up (made longer than the deadline here)."""
    monkeypatch.setattr(tp_module, "CONNECT_TIMEOUT", timedelta(seconds=2 * DEADLINE))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "no-such-nic0")  # the followers inherit it
    connect = engine_module.connect

    def connect_on_any_interface(device, rank, world, store):
        monkeypatch.delenv("GLOO_SOCKET_IFNAME")  # rank 0 connects after the followers started
        return connect(device, rank, world, store)

    monkeypatch.setattr(engine_module, "connect", connect_on_any_interface)
    before = children()

    error = within_deadline(lambda: Engine.from_pretrained(hf_dirs["pre_ln"], tp=2, num_threads=1), DEADLINE / 2)

    assert isinstance(error, RuntimeError)
    assert "rank 1 exited with code 1" in str(error)
    assert "Unable to find address for: no-such-nic0" in str(error)  # the follower's own error
    assert children() - before == set()


def test_follower_killed_mid_generation_fails_generation(hf_dirs):
    before = children()
    engine = Engine.from_pretrained(hf_dirs["pre_ln"], tp=4, num_threads=1)
    followers = engine._followers.processes
    victim = followers[1]  # rank 2: rank 0 is not its only peer

    def kill_rank_2(event) -> None:
        if victim.poll() is None:
            victim.kill()

    requests = [Request(p, SamplingParams(max_tokens=50, ignore_eos=True)) for p in PROMPTS]
    error = within_deadline(lambda: engine.complete(requests, on_token=kill_rank_2))

    assert isinstance(error, RuntimeError)
    assert "rank 2 exited with code -9 (SIGKILL)" in str(error)
    assert all(process.poll() is not None for process in followers)  # ranks 1 and 3 were stopped too
    # the engine stays failed, with the same explanation, rather than waiting for its dead ranks
    with pytest.raises(RuntimeError, match="rank 2 exited"):
        engine.generate([PROMPTS[0]], max_new_tokens=3)
    assert within_deadline(engine.close) is None
    assert children() - before == set()


def test_follower_killed_while_serving_fails_every_waiting_request(hf_dirs):
    before = children()
    engine = Engine.from_pretrained(hf_dirs["pre_ln"], tp=2, num_threads=1)
    victim = engine._followers.processes[0]
    engine.serve()
    started = threading.Event()

    def kill_rank_1(event) -> None:
        started.set()
        if victim.poll() is None:
            victim.kill()

    running = engine.submit(Request(PROMPTS[0], SamplingParams(max_tokens=100, ignore_eos=True)), on_token=kill_rank_1)
    assert started.wait(DEADLINE)
    queued = [engine.submit(Request(p, SamplingParams(max_tokens=5))) for p in PROMPTS[1:]]

    for future in [running, *queued]:
        error = within_deadline(future.result)
        assert isinstance(error, RuntimeError) and "rank 1 exited with code -9 (SIGKILL)" in str(error)
    with pytest.raises(RuntimeError, match="stopped serving: tensor-parallel rank 1 exited"):
        engine.submit(Request(PROMPTS[0], SamplingParams(max_tokens=3)))
    assert within_deadline(engine.close) is None
    assert children() - before == set()


def test_group_set_up_gives_up_on_a_peer_that_never_joins(monkeypatch):
    """What rank 0 sees when a follower dies between announcing itself and joining the group."""
    monkeypatch.setattr(tp_module, "CONNECT_TIMEOUT", timedelta(seconds=2))
    store = tp_module.rendezvous(0, 2, "127.0.0.1", tp_module.free_port())
    error = within_deadline(lambda: tp_module.connect(torch.device("cpu"), 0, 2, store))
    assert isinstance(error, RuntimeError)


SLOW_PEER = """
import sys, time
from datetime import timedelta
import torch
from inference_worker.engine import tp
tp.CONNECT_TIMEOUT = timedelta(seconds=2)
store = tp.rendezvous(1, 2, "127.0.0.1", int(sys.argv[1]))
store.set("connecting", "1")  # as a follower announces itself, so the set-up clock starts here
group = tp.connect(torch.device("cpu"), 1, 2, store)
time.sleep(6)  # three times the set-up timeout before its first collective
print(group.all_reduce(torch.full((2,), 5.0)).tolist())
group.release()
tp.exit_rank(0)
"""


def test_collectives_wait_for_a_slow_peer_longer_than_the_set_up_does(monkeypatch):
    monkeypatch.setattr(tp_module, "CONNECT_TIMEOUT", timedelta(seconds=2))
    port = tp_module.free_port()
    store = tp_module.rendezvous(0, 2, "127.0.0.1", port)
    peer = subprocess.Popen([sys.executable, "-c", SLOW_PEER, str(port)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    store.wait(["connecting"], timedelta(seconds=DEADLINE))  # the peer has started Python and torch
    group = tp_module.connect(torch.device("cpu"), 0, 2, store)
    assert group.all_reduce(torch.ones(2)).tolist() == [6.0, 6.0]
    assert peer.communicate(timeout=DEADLINE)[0].strip() == "[6.0, 6.0]"
    assert peer.returncode == 0
    group.release()
