"""Remote inference, the robot computer's side: `RemoteArtifact` calls `robopolicy serve` (runtime.serve).

ZeroMQ request/reply with msgpack messages (never pickle): arrays travel as
{"shape": [...], "data": float32 little-endian bytes}. Requests are {"op": "meta"} and
{"op": "run", "inputs": {name: array}}; replies carry "meta", or "output" and "server_ms", or
"error". The client imports numpy, zmq and msgpack only, so the robot computer needs no torch;
the runtime measures inference latency around `run`, so the round trip counts in its budget.
A server off loopback encrypts and authenticates with ZeroMQ CURVE: the client then needs the
keys directory from `robopolicy serve keygen` (the server's public key and a client key pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth

from robopolicy.runtime.artifact import ArtifactBase, load_artifact

SCHEME = "tcp://"
SERVER_KEY, CLIENT_KEY = "server", "client"


def pack_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "data": array.tobytes()}


def unpack_array(message: Any, name: str = "array") -> np.ndarray:
    """The float32 array a packed message holds; ValueError naming `name` when it is not one."""
    if not isinstance(message, dict) or not isinstance(message.get("data"), bytes):
        raise ValueError(f"{name} must be {{'shape': [...], 'data': float32 bytes}}")
    shape = message.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"{name}: shape must be a list of non-negative integers, got {shape!r}")
    if 4 * int(np.prod(shape, dtype=np.int64)) != len(message["data"]):
        raise ValueError(f"{name}: {len(message['data'])} bytes do not hold float32 of shape {shape}")
    return np.frombuffer(message["data"], dtype="<f4").reshape(shape)


def key_file(keys: str | Path, name: str, secret: bool) -> Path:
    """keys/<name>.key or .key_secret, or a FileNotFoundError that says how to make it."""
    path = Path(keys) / f"{name}.key{'_secret' if secret else ''}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: make the keys with `robopolicy serve keygen out={keys}` and copy "
                                f"{SERVER_KEY}.key and {CLIENT_KEY}.key_secret to the robot computer")
    return path


class RemoteArtifact(ArtifactBase):
    """An artifact served by `robopolicy serve`, called over the network like a local one; `keys`: the directory
    from `robopolicy serve keygen` when the server uses CURVE (every server off loopback does)."""

    def __init__(self, address: str, timeout_s: float = 5.0, keys: str | Path | None = None):
        if not address.startswith(SCHEME):
            raise ValueError(f"remote artifact address {address!r} must look like {SCHEME}HOST:PORT")
        self.address, self.timeout_ms = address, int(1000 * timeout_s)
        self._curve = None
        if keys is not None:
            server_public, _ = zmq.auth.load_certificate(key_file(keys, SERVER_KEY, secret=False))
            self._curve = (server_public, *zmq.auth.load_certificate(key_file(keys, CLIENT_KEY, secret=True)))
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
        if self._curve is not None:
            socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = self._curve
        socket.connect(self.address)
        return socket

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self._socket.send(msgpack.packb(message, use_bin_type=True))
            reply = msgpack.unpackb(self._socket.recv(), raw=False)
        except zmq.Again as error:
            self._socket.close()  # a REQ socket that missed its reply cannot send again
            self._socket = self._connect()
            raise TimeoutError(f"no reply from {self.address} within {self.timeout_ms} ms: is `robopolicy serve` "
                               "running there (and, off loopback, are keys= the server's)?") from error
        if "error" in reply:
            raise ValueError(f"{self.address}: {reply['error']}")
        return reply

    def execute(self, arrays: list[np.ndarray], timeout_s: float | None = None) -> np.ndarray:
        inputs = {name: pack_array(array) for name, array in zip(self.input_names, arrays, strict=True)}
        reply = self._request({"op": "run", "inputs": inputs})
        self.last_server_ms = reply["server_ms"]
        return unpack_array(reply["output"], "output").copy()

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RemoteArtifact:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def open_artifact(location: str | Path, threads: int | None = None, trusted: bool = False,
                  keys: str | Path | None = None) -> ArtifactBase:
    """A local artifact directory (run with `threads` CPU threads; `trusted`: allow TorchScript), or a served one at
    tcp://HOST:PORT (`keys`: the CURVE keys directory)."""
    if str(location).startswith(SCHEME):
        return RemoteArtifact(str(location), keys=keys)
    return load_artifact(location, threads, trusted)
