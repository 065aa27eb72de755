"""Remote inference: `robopolicy serve ARTIFACT` on a GPU host, `RemoteArtifact` on the robot computer.

ZeroMQ request/reply with msgpack messages (never pickle): arrays travel as
{"shape": [...], "data": float32 little-endian bytes}. Requests are {"op": "meta"} and
{"op": "run", "inputs": {name: array}}; replies carry "meta", or "output" and "server_ms", or
"error". The client imports numpy, zmq and msgpack only, so the robot computer needs no torch;
the runtime measures inference latency around `run`, so the round trip counts in its budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from robopolicy.runtime.artifact import ArtifactBase, load_artifact

log = logging.getLogger(__name__)
SCHEME = "tcp://"


def pack_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "data": array.tobytes()}


def unpack_array(message: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(message["data"], dtype="<f4").reshape(message["shape"])


@dataclass(frozen=True)
class ServeConfig:
    """`robopolicy serve ARTIFACT key=value ...`."""

    host: str = "127.0.0.1"  # 0.0.0.0 accepts other machines
    port: int = 5555
    threads: int | None = None  # CPU threads for inference (None: torch's or onnxruntime's default)


def serve(artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 5555, max_requests: int | None = None,
          threads: int | None = None) -> None:
    """Answer meta and run requests for one artifact until interrupted (or after `max_requests`)."""
    artifact = load_artifact(artifact_dir, threads)
    context = zmq.Context.instance()
    socket = context.socket(zmq.REP)
    socket.bind(f"{SCHEME}{host}:{port}")
    log.info("serving %s on %s%s:%d", artifact_dir, SCHEME, host, port)
    served = 0
    try:
        while max_requests is None or served < max_requests:
            raw = socket.recv()
            try:
                reply = _answer(artifact, msgpack.unpackb(raw, raw=False))
            except Exception as error:  # a malformed request must not take the server down
                log.warning("bad request: %s: %s", type(error).__name__, error)
                reply = {"error": f"{type(error).__name__}: {error}"}
            socket.send(msgpack.packb(reply, use_bin_type=True))
            served += 1
    finally:
        socket.close(linger=0)


def _answer(artifact: ArtifactBase, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "meta":
        return {"meta": artifact.meta}
    if op != "run":
        return {"error": f"unknown op {op!r}: use 'meta' or 'run'"}
    start = time.perf_counter()
    output = artifact.run({name: unpack_array(value) for name, value in request["inputs"].items()})
    return {"output": pack_array(output), "server_ms": 1000 * (time.perf_counter() - start)}


class RemoteArtifact(ArtifactBase):
    """An artifact served by `robopolicy serve`, called over the network like a local one."""

    def __init__(self, address: str, timeout_s: float = 5.0):
        if not address.startswith(SCHEME):
            raise ValueError(f"remote artifact address {address!r} must look like {SCHEME}HOST:PORT")
        self.address, self.timeout_ms = address, int(1000 * timeout_s)
        self._context = zmq.Context.instance()
        self._socket = self._connect()
        try:
            meta = self._request({"op": "meta"})["meta"]
        except BaseException:
            self._socket.close()
            raise
        super().__init__(address, meta)

    def _connect(self) -> zmq.Socket:
        socket = self._context.socket(zmq.REQ)
        socket.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        socket.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.address)
        return socket

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self._socket.send(msgpack.packb(message, use_bin_type=True))
            reply = msgpack.unpackb(self._socket.recv(), raw=False)
        except zmq.Again as error:
            self._socket.close()  # a REQ socket that missed its reply cannot send again
            self._socket = self._connect()
            raise TimeoutError(f"no reply from {self.address} within {self.timeout_ms} ms: "
                               "is `robopolicy serve` running there?") from error
        if "error" in reply:
            raise ValueError(f"{self.address}: {reply['error']}")
        return reply

    def _execute(self, arrays: list[np.ndarray]) -> np.ndarray:
        inputs = {name: pack_array(array) for name, array in zip(self.input_names, arrays, strict=True)}
        reply = self._request({"op": "run", "inputs": inputs})
        self.last_server_ms = reply["server_ms"]
        return unpack_array(reply["output"]).copy()

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RemoteArtifact:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def open_artifact(location: str | Path, threads: int | None = None) -> ArtifactBase:
    """A local artifact directory (run with `threads` CPU threads), or a served one at tcp://HOST:PORT."""
    if str(location).startswith(SCHEME):
        return RemoteArtifact(str(location))
    return load_artifact(location, threads)
