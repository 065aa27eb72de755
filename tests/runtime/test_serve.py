"""`robopolicy serve` against bad clients: it answers or drops anything and keeps serving; keys off loopback;
concurrent requests stacked into one model call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from robopolicy.runtime.artifact import load_artifact
from robopolicy.runtime.remote import RemoteArtifact, pack_array
from robopolicy.runtime.serve import InferenceServer, ServeConfig, keygen
from tests.network import free_port

FUZZ_SEED = 0


def valid_inputs(artifact, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s["name"]: rng.standard_normal((rows, *s["shape"])).astype(np.float32) for s in artifact.meta["inputs"]}


def run_message(inputs: dict[str, np.ndarray]) -> bytes:
    return msgpack.packb({"op": "run", "inputs": {k: pack_array(v) for k, v in inputs.items()}}, use_bin_type=True)


class Client:
    """One REQ socket per message, so a dropped message cannot wedge the next."""

    def __init__(self, address: str, timeout_ms: int = 5000):
        self.context, self.address, self.timeout_ms = zmq.Context.instance(), address, timeout_ms

    def send(self, frames: list[bytes], timeout_ms: int | None = None) -> dict | None:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms or self.timeout_ms)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            sock.send_multipart(frames)
            return msgpack.unpackb(sock.recv(), raw=False)
        except zmq.Again:
            return None
        finally:
            sock.close()


def random_object(rng: np.random.Generator, depth: int = 0):
    """A random msgpack-able value, often shaped like a request."""
    kind = rng.integers(9 if depth < 3 else 5)
    if kind == 0:
        return int(rng.integers(-(2**40), 2**40))
    if kind == 1:
        return float(rng.choice([np.nan, np.inf, -1e30, rng.standard_normal()]))
    if kind == 2:
        return rng.bytes(int(rng.integers(0, 64)))
    if kind == 3:
        return rng.choice(["run", "meta", "inputs", "shape", "data", "noise", ""])
    if kind == 4:
        return None
    if kind == 5:
        return [random_object(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    if kind == 6:
        return {"shape": [int(n) for n in rng.integers(-2, 40, rng.integers(0, 4))], "data": rng.bytes(64)}
    if kind == 7:
        return {"op": "run", "inputs": {str(random_object(rng, depth + 1)): random_object(rng, depth + 1)}}
    return {str(random_object(rng, depth + 1)): random_object(rng, depth + 1) for _ in range(rng.integers(0, 3))}


def fuzz_messages(artifact, rng: np.random.Generator, n: int) -> list[list[bytes]]:
    """Random bytes, random msgpack, truncated and multipart requests, and valid ones with non-finite values."""
    valid = run_message(valid_inputs(artifact, 2))
    messages = []
    for index in range(n):
        kind = index % 5
        if kind == 0:
            messages.append([rng.bytes(int(rng.integers(0, 2000)))])
        elif kind == 1:
            messages.append([msgpack.packb(random_object(rng), use_bin_type=True)])
        elif kind == 2:
            messages.append([valid[: int(rng.integers(0, len(valid)))]])
        elif kind == 3:
            messages.append([valid, rng.bytes(int(rng.integers(0, 10)))][: int(rng.integers(2, 3))] + [b"x"])
        else:
            inputs = valid_inputs(artifact, 2, seed=index)
            name = artifact.obs_inputs[index % len(artifact.obs_inputs)]["name"]
            inputs[name].flat[int(rng.integers(inputs[name].size))] = rng.choice([np.nan, np.inf, -np.inf])
            messages.append([run_message(inputs)])
    return messages


@pytest.fixture
def server_process(state_artifact):
    """`robopolicy serve` as its own process, so a crash shows as an exit, not a dead test runner."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "robopolicy.cli", "serve", str(state_artifact), f"port={port}",
                                "threads=1"], stderr=subprocess.DEVNULL)
    client = Client(f"tcp://127.0.0.1:{port}", timeout_ms=30000)
    assert "meta" in client.send([msgpack.packb({"op": "meta"})]), "the server did not start"
    yield process, client, port
    process.terminate()
    process.wait(10)


def test_the_server_answers_every_bad_message_and_keeps_serving(state_artifact, server_process):
    process, client, port = server_process
    artifact = load_artifact(state_artifact)
    rng = np.random.default_rng(FUZZ_SEED)
    messages = fuzz_messages(artifact, rng, 1000)
    start = time.monotonic()
    replies = [client.send(frames) for frames in messages]
    garbage = []
    for _ in range(30):  # raw TCP: random bytes, and a ZMTP greeting followed by garbage; left open
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(rng.choice([b"", b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" + bytes(16)]) + rng.bytes(500))
        garbage.append(connection)
    oversized = client.send([rng.bytes(64 * 1024**2)], timeout_ms=2000)
    inputs = valid_inputs(artifact, 3, seed=7)
    answer = client.send([run_message(inputs)], timeout_ms=5000)
    elapsed = time.monotonic() - start
    for connection in garbage:
        connection.close()
    assert process.poll() is None, f"the server exited with {process.returncode}"
    missing = [i for i, reply in enumerate(replies) if reply is None]
    assert not missing, f"no reply to fuzz messages {missing[:10]}"
    accepted = [i for i, reply in enumerate(replies) if "error" not in reply]
    assert not accepted, f"messages {accepted[:10]} were answered as valid: {replies[accepted[0]]}"
    non_finite = [replies[i]["error"] for i in range(4, len(messages), 5)]
    assert all("NaN or infinite" in error for error in non_finite), non_finite[:3]
    assert oversized is None, "a message over max_message_mb must be dropped unread"
    assert answer is not None and "output" in answer, f"no answer to a valid request after the fuzz: {answer}"
    np.testing.assert_array_equal(np.frombuffer(answer["output"]["data"], "<f4").reshape(answer["output"]["shape"]),
                                  artifact.run(inputs))
    assert elapsed < 120, f"{len(messages)} messages took {elapsed:.0f} s"


@pytest.fixture
def serve_in_thread():
    """Start InferenceServers in this process (options as ServeConfig's); each is stopped after the test."""
    running = []

    def start(artifact_dir: Path, **options) -> tuple[InferenceServer, str]:
        port = free_port()
        server = InferenceServer(load_artifact(artifact_dir, threads=1), ServeConfig(port=port, **options))
        thread = threading.Thread(target=server.serve, kwargs={"poll_ms": 20}, daemon=True)
        thread.start()
        running.append((server, thread))
        return server, f"tcp://127.0.0.1:{port}"

    yield start
    for server, thread in running:
        server.stopping.set()
        thread.join(10)


def test_requests_waiting_together_run_as_one_stacked_call_and_each_gets_its_rows(state_artifact, serve_in_thread):
    server, address = serve_in_thread(state_artifact)
    local = load_artifact(state_artifact, threads=1)
    clients = [RemoteArtifact(address, timeout_s=30) for _ in range(8)]
    inputs = [valid_inputs(local, 1 + i % 3, seed=i) for i in range(8)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(8)

    def call(index: int) -> None:
        barrier.wait()
        results[index] = clients[index].run(inputs[index])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index in range(8):
        np.testing.assert_allclose(results[index], local.run(inputs[index]), rtol=1e-5, atol=1e-5,
                                   err_msg=f"client {index}: stacked rows differ only by float rounding")
    assert server.stats["model_calls"] < 8, f"8 waiting requests took {server.stats['model_calls']} model calls"
    for client in clients:
        client.close()


def test_limits_refuse_large_batches_and_stop_long_runs(state_artifact, serve_in_thread):
    _, address = serve_in_thread(state_artifact, max_batch=4, request_timeout_s=1e-4)
    client = Client(address)
    local = load_artifact(state_artifact)
    too_many = client.send([run_message(valid_inputs(local, 5))])
    assert "max_batch=4" in too_many["error"], too_many
    slow = client.send([run_message(valid_inputs(local, 4))])
    assert "busy" in slow["error"] or "longer than" in slow["error"], slow


def test_off_loopback_needs_keys_and_only_known_clients_get_in(state_artifact, tmp_path, serve_in_thread):
    with pytest.raises(ValueError, match="keygen"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", insecure=True).insecure
    keys = keygen(tmp_path / "keys")
    assert oct(Path(keys["server_secret"]).stat().st_mode & 0o777) == "0o600"
    stranger = tmp_path / "stranger"
    keygen(stranger)
    (stranger / "server.key").write_bytes((tmp_path / "keys" / "server.key").read_bytes())
    _, address = serve_in_thread(state_artifact, keys=str(tmp_path / "keys"))
    with RemoteArtifact(address, timeout_s=10, keys=tmp_path / "keys") as client:
        local = load_artifact(state_artifact)
        inputs = valid_inputs(local, 1)
        np.testing.assert_array_equal(client.run(inputs), local.run(inputs))
    with pytest.raises(TimeoutError):
        RemoteArtifact(address, timeout_s=1)  # no keys: the CURVE handshake never completes
    with pytest.raises(TimeoutError):
        RemoteArtifact(address, timeout_s=1, keys=stranger)  # the server's public key, but an unknown client key


def test_bad_ports_are_errors_not_other_ports(state_artifact):
    with pytest.raises(ValueError, match="port=99999"):
        ServeConfig(port=99999)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(ValueError, match="(?s)cannot listen.*another port"):
            InferenceServer(load_artifact(state_artifact), ServeConfig(port=holder.getsockname()[1]))


def test_a_client_on_another_process_reads_its_answer_even_when_others_misbehave(state_artifact, server_process):
    _, client, _ = server_process
    context = zmq.Context.instance()
    rude = context.socket(zmq.DEALER)  # no REQ envelope, then never reads its replies
    rude.setsockopt(zmq.LINGER, 0)
    rude.connect(client.address)
    for _ in range(50):
        rude.send_multipart([os.urandom(32)])
    local = load_artifact(state_artifact)
    inputs = valid_inputs(local, 1, seed=3)
    answer = client.send([run_message(inputs)])
    rude.close()
    np.testing.assert_array_equal(np.frombuffer(answer["output"]["data"], "<f4").reshape(answer["output"]["shape"]),
                                  local.run(inputs))
