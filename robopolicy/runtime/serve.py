"""`robopolicy serve ARTIFACT`: answer inference requests over ZeroMQ (the wire format is in runtime.remote).

One ROUTER socket and one loop: every request that waits while the model runs is read, checked
and stacked into one model call (up to `max_batch` rows), and each client gets its own rows
back. Nothing a client sends stops the server: multipart, garbage, oversized (dropped by ZeroMQ
at `max_message_mb`), too large a batch, non-finite inputs and runs past `request_timeout_s`
each get an error reply. Off loopback the socket needs CURVE keys from `robopolicy serve keygen`
(or `insecure=true`), and only clients whose public keys lie in the keys directory get in.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from robopolicy.runtime.artifact import Artifact, load_artifact
from robopolicy.runtime.remote import CLIENT_KEY, SCHEME, SERVER_KEY, key_file, pack_array, unpack_array

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServeConfig:
    """`robopolicy serve ARTIFACT key=value ...`."""

    host: str = "127.0.0.1"  # another address (0.0.0.0: every interface) needs keys= or insecure=true
    port: int = 5555
    threads: int | None = None  # CPU threads for inference (None: torch's or onnxruntime's default)
    trusted: bool = False  # allow a TorchScript artifact (it runs code from the file when loaded)
    keys: str | None = None  # the directory from `robopolicy serve keygen`: CURVE encryption, known clients only
    insecure: bool = False  # serve off loopback without keys (anyone who reaches the port can use it)
    max_batch: int = 64  # rows per model call, all stacked requests together; a larger request is refused
    max_message_mb: float | None = None  # larger messages are dropped unread (default: max_batch rows + 1 MiB)
    request_timeout_s: float = 10.0  # a request older than this is refused, and longer ONNX runs are stopped

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is not a TCP port\n  fix: use a port in 1-65535 (default 5555)")
        if self.max_batch < 1 or self.request_timeout_s <= 0 or (self.max_message_mb or 1) <= 0:
            raise ValueError("max_batch, request_timeout_s and max_message_mb must be positive")
        if not is_loopback(self.host) and not self.keys and not self.insecure:
            raise ValueError(f"host={self.host} accepts other machines, so the server needs keys\n  fix: make them "
                             "with `robopolicy serve keygen out=DIR` and pass keys=DIR (clients: keys=DIR with the "
                             "server's public key), or pass insecure=true on a network you trust")


@dataclass(frozen=True)
class KeygenConfig:
    """`robopolicy serve keygen key=value ...`."""

    out: str = "serve_keys"  # the directory for server.key(_secret) and client.key(_secret)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keygen(out: str | Path) -> dict[str, str]:
    """Make the CURVE key pairs of a server and one client in `out`; returns their paths."""
    out = Path(out)
    if any(out.glob("*.key*")):
        raise FileExistsError(f"{out} already holds keys; remove them or choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in (SERVER_KEY, CLIENT_KEY):
        public, secret = zmq.auth.create_certificates(out, name)
        Path(secret).chmod(0o600)
        paths[name], paths[f"{name}_secret"] = public, secret
    log.info("keys in %s: serve with keys=%s; copy %s.key and %s.key_secret to the robot computer and pass keys= "
             "there; more clients: put their public .key files in %s", out, out, SERVER_KEY, CLIENT_KEY, out)
    return paths


@dataclass(eq=False)
class Request:
    """One client's run request: where to reply, when it came, and its inputs in program order."""

    envelope: list[bytes]
    arrived: float
    arrays: list[np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.arrays[0])


class InferenceServer:
    """The artifact behind a ROUTER socket: read what waits, answer meta and errors, run the rest stacked."""

    def __init__(self, artifact: Artifact, config: ServeConfig, context: zmq.Context | None = None):
        self.artifact, self.config = artifact, config
        self.context = context or zmq.Context()
        self.max_message_bytes = int(1024**2 * config.max_message_mb) if config.max_message_mb else (
            4 * config.max_batch * sum(int(np.prod(s["shape"])) for s in artifact.meta["inputs"]) + 1024**2)
        self.authenticator = self._start_authenticator() if config.keys else None
        self.socket = self._bind()
        self.stats = {"requests": 0, "errors": 0, "model_calls": 0}
        self.stopping = threading.Event()

    def _start_authenticator(self) -> ThreadAuthenticator:
        key_file(self.config.keys, CLIENT_KEY, secret=False)
        authenticator = ThreadAuthenticator(self.context)
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(self.config.keys))
        return authenticator

    def _bind(self) -> zmq.Socket:
        socket = self.context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.HANDSHAKE_IVL, 5000)
        if self.config.keys:
            public, secret = zmq.auth.load_certificate(key_file(self.config.keys, SERVER_KEY, secret=True))
            socket.curve_server, socket.curve_publickey, socket.curve_secretkey = True, public, secret
        try:
            socket.bind(f"{SCHEME}{self.config.host}:{self.config.port}")
        except zmq.ZMQError as error:
            socket.close()
            self._stop_authenticator()
            raise ValueError(f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror}\n  fix: choose "
                             "another port= (or stop the process that holds it)") from error
        return socket

    def serve(self, max_requests: int | None = None, poll_ms: int = 200) -> None:
        """Answer requests until interrupted, `stopping` is set, or `max_requests` have been answered."""
        try:
            while not self.stopping.is_set() and (max_requests is None or self.stats["requests"] < max_requests):
                if self.socket.poll(poll_ms):
                    self._answer_waiting(self._read_waiting())
        finally:
            self.close()

    def _read_waiting(self) -> list[Request]:
        """The messages waiting now (at most max_batch, so a flood of bad ones cannot starve the runs): meta and bad
        ones answered at once, run requests returned."""
        runs: list[Request] = []
        for _ in range(self.config.max_batch):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            envelope, body = split_envelope(frames)
            try:
                reply = self._read(body, envelope, runs)
            except Exception as error:  # whatever a client sends, the server goes on
                reply = {"error": f"{type(error).__name__}: {error}"}
            if reply is not None:
                self._reply(envelope, reply)
        return runs

    def _read(self, body: list[bytes], envelope: list[bytes], runs: list[Request]) -> dict[str, Any] | None:
        """The reply to a meta or bad request, or None after queueing a run request in `runs`."""
        if len(body) != 1:
            raise ValueError(f"a request is one msgpack frame, got {len(body)} frames")
        request = msgpack.unpackb(body[0], raw=False)
        op = request.get("op") if isinstance(request, dict) else None
        if op == "meta":
            return {"meta": self.artifact.meta}
        if op != "run":
            raise ValueError(f"unknown op {op!r}: a request is a map with op 'meta' or 'run'")
        if not isinstance(request.get("inputs"), dict):
            raise ValueError("a run request needs inputs: {name: {'shape': [...], 'data': float32 bytes}}")
        runs.append(Request(envelope, time.monotonic(), self._checked(request["inputs"])))
        return None

    def _checked(self, packed: dict[Any, Any]) -> list[np.ndarray]:
        """The request's inputs in program order, refused when too many rows or not finite."""
        arrays = self.artifact.prepare({str(name): unpack_array(value, f"input {name!r}")
                                        for name, value in packed.items()})
        if len(arrays[0]) > self.config.max_batch or any(len(a) != len(arrays[0]) for a in arrays):
            raise ValueError(f"a request holds 1 to max_batch={self.config.max_batch} rows, the same in every input; "
                             f"got {[len(a) for a in arrays]}")
        for name, array in zip(self.artifact.input_names, arrays, strict=True):
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                raise ValueError(f"input {name!r} holds NaN or infinite values (rows {np.flatnonzero(bad).tolist()}); "
                                 "check the sensor or its conversion")
        return arrays

    def _answer_waiting(self, runs: list[Request]) -> None:
        """Run the waiting requests in stacks of at most max_batch rows and reply to each."""
        for batch in stacks(runs, self.config.max_batch):
            fresh = []
            for request in batch:
                if time.monotonic() - request.arrived <= self.config.request_timeout_s:
                    fresh.append(request)
                else:
                    self._reply(request.envelope, {"error": "busy: the request waited over "
                                                            f"{self.config.request_timeout_s} s"})
            if fresh:
                self._run(fresh)

    def _run(self, batch: list[Request]) -> None:
        start = time.perf_counter()
        try:
            stacked = [np.concatenate(column) for column in zip(*(r.arrays for r in batch), strict=True)]
            output = self.artifact.execute(stacked, self.config.request_timeout_s)
        except Exception as error:  # a failed call fails its requests, not the server
            log.warning("model call failed: %s: %s", type(error).__name__, error)
            for request in batch:
                self._reply(request.envelope, {"error": f"{type(error).__name__}: {error}"})
            return
        self.stats["model_calls"] += 1
        server_ms = 1000 * (time.perf_counter() - start)
        offset = 0
        for request in batch:
            rows = output[offset : offset + request.rows]
            offset += request.rows
            if np.isfinite(rows).all():
                self._reply(request.envelope, {"output": pack_array(rows), "server_ms": server_ms,
                                               "batch_rows": len(output)})
            else:
                self._reply(request.envelope, {"error": "the policy gave non-finite actions for these inputs (values "
                                                        "far outside the training data?); nothing to execute"})

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        self.stats["requests"] += 1
        if "error" in reply:
            self.stats["errors"] += 1
            log.warning("refused a request: %s", reply["error"])
        try:
            self.socket.send_multipart([*envelope, msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK)
        except zmq.ZMQError as error:  # the client left or its queue is full: its reply is dropped
            log.debug("reply dropped: %s", error)

    def _stop_authenticator(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()

    def close(self) -> None:
        self.socket.close(linger=0)
        self._stop_authenticator()


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing frames up to the empty delimiter a REQ client adds, the message frames after it)."""
    for index in range(1, len(frames)):
        if not frames[index]:
            return frames[: index + 1], frames[index + 1 :]
    return frames[:1], frames[1:]


def stacks(requests: list[Request], max_rows: int) -> Iterator[list[Request]]:
    """The requests in arrival order, cut into consecutive groups of at most `max_rows` rows."""
    group: list[Request] = []
    rows = 0
    for request in requests:
        if group and rows + request.rows > max_rows:
            yield group
            group, rows = [], 0
        group.append(request)
        rows += request.rows
    if group:
        yield group


def serve(artifact_dir: str | Path, config: ServeConfig = ServeConfig(), max_requests: int | None = None) -> None:
    """Serve one artifact until interrupted (or after `max_requests` replies)."""
    server = InferenceServer(load_artifact(artifact_dir, config.threads, config.trusted), config)
    log.info("serving %s on %s%s:%d (%s; max_batch %d, messages up to %.1f MiB)", artifact_dir, SCHEME, config.host,
             config.port, "CURVE, known clients only" if config.keys else "no encryption", config.max_batch,
             server.max_message_bytes / 1024**2)
    server.serve(max_requests)
