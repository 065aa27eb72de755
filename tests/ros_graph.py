"""A real ROS graph for tests: a ROS 1 master (`roscore` on a free loopback port) or a ROS 2 DDS
domain of its own (a fresh ROS_DOMAIN_ID, DDS confined to the loopback interface), so tests
cannot hear each other or the network."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.needs import require
from tests.network import free_port

LOOPBACK_DDS = ("<CycloneDDS><Domain><General><Interfaces><NetworkInterface name='lo'/></Interfaces>"
                "</General></Domain></CycloneDDS>")
# domain ids for this test session: spread by process id, so two sessions on one machine rarely meet
_DOMAIN_IDS = itertools.count(1 + os.getpid() % 100)
ROS_VERSIONS = [pytest.param(1, marks=pytest.mark.ros, id="ros1"), pytest.param(2, marks=pytest.mark.ros2, id="ros2")]


def require_ros(ros: int) -> None:
    """Skip (fail, in CI) a test of ROS `ros` whose client library is missing."""
    require("ros" if ros == 1 else "ros2")


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


def dds_environment() -> dict[str, str]:
    """The environment of ROS 2 nodes on a domain of their own, on loopback only."""
    return {**os.environ, "ROS_DOMAIN_ID": str(next(_DOMAIN_IDS) % 230 + 1), "CYCLONEDDS_URI": LOOPBACK_DDS}


@contextmanager
def running_graph(ros: int) -> Iterator[dict[str, str]]:
    """A ROS 1 master or a ROS 2 domain; yields the environment its nodes run in."""
    require_ros(ros)
    if ros == 1:
        with running_roscore() as env:
            yield env
    else:
        yield dds_environment()


def _ros1_publishers(env: dict[str, str]) -> set[str]:
    master = xmlrpc.client.ServerProxy(env["ROS_MASTER_URI"])
    return {topic for topic, _ in master.getSystemState("/test")[2][0]}


class DdsPublications:
    """The topics DDS publishers announce on the environment's domain (ROS 2's graph, seen from this process)."""

    def __init__(self, env: dict[str, str]):
        from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
        from cyclonedds.domain import Domain, DomainParticipant

        domain_id = int(env["ROS_DOMAIN_ID"])
        self._domain = Domain(domain_id, config=env["CYCLONEDDS_URI"])
        self._participant = DomainParticipant(domain_id)
        self._reader = BuiltinDataReader(self._participant, BuiltinTopicDcpsPublication)
        self.topics: set[str] = set()

    def __call__(self) -> set[str]:
        self.topics |= {sample.topic_name.removeprefix("rt") for sample in self._reader.take(N=256)}
        return self.topics


def wait_for_topic(env: dict[str, str], topic: str, process: subprocess.Popen, log: Path,
                   timeout: float = 120.0) -> None:
    """Wait until some node publishes `topic` (while `process`, the node expected to, is alive; its stderr in `log`)."""
    publishers = DdsPublications(env) if "ROS_DOMAIN_ID" in env else lambda: _ros1_publishers(env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if topic in publishers():
            return
        if process.poll() is not None:
            raise RuntimeError(f"the node meant to publish {topic} exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"nothing published {topic} within {timeout} s")
