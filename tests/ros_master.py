"""A real ROS 1 master for tests: `roscore` on a free loopback port, stopped by its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager

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
