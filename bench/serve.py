"""`robopolicy serve` under load: requests/s and p50/p99 latency for 1, 4 and 16 clients on loopback, with
stacking (max_batch=64) and without (max_batch=1) side by side, and the server's memory after its largest
accepted message and after a 500 MiB one it must drop.

Each client is a thread that sends batch-1 requests (random inputs) back to back for `--seconds`. The server
is `robopolicy serve` in its own process with `--threads` inference threads (1). Run:
.venv/bin/python -m bench.serve ARTIFACT [--seconds 15] [--threads 1]; prints JSON. ARTIFACT: e.g. the quickstart's
checkpoint exported with `robopolicy export runs/quickstart/train/checkpoints/last out=DIR`.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from robopolicy.runtime.remote import RemoteArtifact, pack_array

CLIENT_COUNTS = (1, 4, 16)


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, in MiB (from /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: round(int(fields[key].split()[0]) / 1024, 1) for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(artifact: str, max_batch: int, threads: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "robopolicy.cli", "serve", artifact, f"port={port}",
                                f"threads={threads}", f"max_batch={max_batch}"], stderr=subprocess.DEVNULL)
    address = f"tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            RemoteArtifact(address, timeout_s=2).close()
            return process, address
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def load(address: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads each sending batch-1 requests for `seconds`: requests/s and latency percentiles."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        with RemoteArtifact(address, timeout_s=60) as artifact:
            rng = np.random.default_rng(index)
            inputs = {s["name"]: rng.standard_normal((1, *s["shape"])).astype(np.float32)
                      for s in artifact.meta["inputs"]}
            barrier.wait()
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop:
                start = time.perf_counter()
                artifact.run(inputs)
                latencies[index].append(1000 * (time.perf_counter() - start))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = np.concatenate([np.asarray(x) for x in latencies])
    return {"requests_per_s": round(len(every) / seconds, 1), "p50_ms": round(float(np.percentile(every, 50)), 1),
            "p99_ms": round(float(np.percentile(every, 99)), 1)}


def memory_after_large_messages(artifact: str) -> dict[str, object]:
    """RSS after the largest request max_batch allows, and after a 500 MiB message (dropped by ZeroMQ)."""
    process, address = start_server(artifact, 64)
    try:
        with RemoteArtifact(address, timeout_s=60) as probe:
            meta = probe.meta
        idle = rss_mb(process.pid)
        rng = np.random.default_rng(0)
        inputs = {s["name"]: pack_array(rng.standard_normal((64, *s["shape"]))) for s in meta["inputs"]}
        largest = msgpack.packb({"op": "run", "inputs": inputs}, use_bin_type=True)
        context = zmq.Context.instance()
        for message, name in ((largest, "largest_accepted"), (bytes(500 * 1024**2), "dropped_500mib")):
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.RCVTIMEO, 20000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            sock.send(message)
            try:
                reply = msgpack.unpackb(sock.recv(), raw=False)
                outcome = "error" if "error" in reply else "answered"
            except zmq.Again:
                outcome = "dropped"
            sock.close()
            idle[name] = {"message_mb": round(len(message) / 1024**2, 2), "outcome": outcome, **rss_mb(process.pid)}
        return idle
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1, help="the server's inference threads")
    args = parser.parse_args()
    results: dict[str, object] = {"artifact": args.artifact, "seconds_per_point": args.seconds,
                                  "server_threads": args.threads}
    for max_batch in (64, 1):
        process, address = start_server(args.artifact, max_batch, args.threads)
        try:
            results[f"max_batch_{max_batch}"] = {f"clients_{n}": load(address, n, args.seconds) for n in CLIENT_COUNTS}
        finally:
            process.terminate()
            process.wait(10)
    stacked, single = results["max_batch_64"], results["max_batch_1"]
    results["stacked_over_unstacked_requests_per_s"] = {
        key: round(stacked[key]["requests_per_s"] / single[key]["requests_per_s"], 2) for key in stacked}
    results["memory_mb"] = memory_after_large_messages(args.artifact)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
