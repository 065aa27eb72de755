"""A real ROS 1 master for tests: `roscore` on a free loopback port, stopped by its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.network import free_port


@contextmanager
def running_roscore(timeout: float = 30.0) -> Iterator[dict[str, str]]:
    """Start roscore; yield the environment a ROS node needs to reach it."""
    port = free_port()
    env = {**os.environ, "ROS_MASTER_URI": f"http://127.0.0.1:{port}", "ROS_IP": "127.0.0.1",
           "ROS_HOME": os.environ.get("ROS_HOME", "/tmp/robopolicy-ros")}
    process = subprocess.Popen(["roscore", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        master = xmlrpc.client.ServerProxy(env["ROS_MASTER_URI"])
        deadline = time.monotonic() + timeout
        while True:
            try:
                if master.getSystemState("/test")[0] == 1:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"roscore did not start on port {port}: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        yield env
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_topic(env: dict[str, str], topic: str, process: subprocess.Popen, log: Path,
                   timeout: float = 120.0) -> None:
    """Wait until some node publishes `topic` (while `process`, the node expected to, is alive; its stderr in `log`)."""
    master = xmlrpc.client.ServerProxy(env["ROS_MASTER_URI"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publishers = dict(master.getSystemState("/test")[2][0])
        if topic in publishers:
            return
        if process.poll() is not None:
            raise RuntimeError(f"the node meant to publish {topic} exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"nothing published {topic} within {timeout} s")
