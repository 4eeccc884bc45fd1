"""A multi-node Ray cluster on this machine, for the node-loss tests: a head and worker
nodes started with ``ray start`` (each its own raylet, object store and workers, as on
separate hosts), and a worker killed as a host dies (SIGKILL to its whole process group).

The test process may already be a Ray driver of another cluster (the session's Serve),
so everything that talks to this cluster runs in a driver subprocess:
``python -m tests.utils.ray_cluster deploy|placement ADDRESS [CONFIG]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.utils.redis_server import free_port

RAY = Path(sys.executable).with_name("ray")
START_BUDGET_S = 120  # one node joining, on a slow 2-core machine
# `ray start` gives its raylet a fixed 30 s to register with the GCS; on a loaded
# machine that can pass, and the node exits: it is started again, this many times
START_ATTEMPTS = 3
OBJECT_STORE_BYTES = 256 * 1024 * 1024  # per node: three nodes share this machine's memory


class RayCluster:
    """Nodes started with ``ray start --block`` in their own sessions; ``kill`` takes one
    down with everything it runs, ``stop`` takes all down."""

    def __init__(self) -> None:
        # short: Ray's socket paths under the temp dir must fit the 107-byte limit
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.node_ids: list[str] = []  # Ray's id of each node, in start order
        self.env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[2]),  # replicas import deployments.*
            "RAY_AUTH_MODE": "disabled",  # a loopback test cluster: no token to share
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def start_head(self, num_cpus: int, resources: dict[str, float] | None = None) -> None:
        self._start(["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--ray-client-server-port", str(free_port())],
                    num_cpus, resources or {})  # fmt: skip

    def add_worker(self, num_cpus: int, resources: dict[str, float]) -> int:
        """Start a worker node and wait until it has joined; its index (``kill``,
        ``node_ids``)."""
        self._start(["--address", self.address], num_cpus, resources)
        return len(self.nodes) - 1

    def kill(self, index: int) -> None:
        """The node's host dies: SIGKILL to its raylet, object store and workers at once."""
        os.killpg(self.nodes[index].pid, signal.SIGKILL)
        self.nodes[index].wait(30)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def driver(self, *args: str, timeout_s: float = 600) -> Any:
        """Run a driver command on the cluster; the JSON it prints."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.utils.ray_cluster", *args, self.address],
            env=self.env, capture_output=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"driver {args[0]} failed: {done.stderr.decode()[-3000:]}")
        return json.loads(done.stdout.decode().strip().splitlines()[-1])

    def _start(self, role: list[str], num_cpus: int, resources: dict[str, float]) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            if self._start_once(role, num_cpus, resources, last=attempt == START_ATTEMPTS):
                return
            failed = self.nodes.pop()
            with contextlib.suppress(ProcessLookupError):  # what it left running
                os.killpg(failed.pid, signal.SIGKILL)
            time.sleep(5)  # let the load that timed it out pass

    def _start_once(
        self, role: list[str], num_cpus: int, resources: dict[str, float], last: bool
    ) -> bool:
        """Start one node and wait until it has joined; False when its process exited
        during startup and ``last`` is not set (the caller starts it again)."""
        ports = [
            (flag, str(free_port())) for flag in (
                "--node-manager-port", "--object-manager-port", "--metrics-export-port",
                "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                "--runtime-env-agent-port",
            )
        ]  # fmt: skip
        before = len(self.nodes)
        log = open(self.temp_dir / f"node-{before}.log", "ab")  # noqa: SIM115 (the node's)
        self.nodes.append(subprocess.Popen(
            [str(RAY), "start", *role, "--block", "--node-ip-address", "127.0.0.1",
             "--num-cpus", str(num_cpus), "--resources", json.dumps(resources),
             "--object-store-memory", str(OBJECT_STORE_BYTES), "--temp-dir",
             str(self.temp_dir), *[part for pair in ports for part in pair]],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
        deadline = time.monotonic() + START_BUDGET_S
        while True:  # nodes start one at a time: two raylets starting at once can collide
            time.sleep(1)
            if self.nodes[-1].poll() is not None:
                assert not last, (self.temp_dir / f"node-{before}.log").read_text()
                return False
            try:
                joined = [n["id"] for n in self.driver("nodes", timeout_s=60) if n["alive"]]
                if len(joined) > before:
                    (new,) = set(joined) - set(self.node_ids)
                    self.node_ids.append(new)
                    return True
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            assert time.monotonic() < deadline, f"node {before} did not join in time"


def _nodes() -> list[dict[str, Any]]:
    import ray

    return [
        {"id": node["NodeID"], "alive": node["Alive"], "resources": node["Resources"]}
        for node in ray.nodes()
    ]


def _placement() -> dict[str, Any]:
    """The alive nodes and, per Serve deployment, the nodes its live replicas run on."""
    from ray._private import state

    replicas: dict[str, list[str]] = {}
    for actor in state.actors().values():
        name = str(actor.get("ActorClassName", ""))
        if name.startswith("ServeReplica:") and actor.get("State") == "ALIVE":
            deployment = name.rsplit(":", 1)[-1]
            replicas.setdefault(deployment, []).append(actor["Address"]["NodeID"])
    return {"nodes": _nodes(), "replicas": replicas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["nodes", "placement", "deploy"])
    parser.add_argument("config", nargs="?", type=Path)
    parser.add_argument("address")
    args = parser.parse_args()
    import ray

    ray.init(address=args.address, namespace="serve", log_to_driver=False)
    if args.command == "deploy":
        from deployments import local

        local.deploy(json.loads(args.config.read_text()), timeout_s=540)
        result: Any = {"deployed": True}
    else:
        result = _nodes() if args.command == "nodes" else _placement()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
