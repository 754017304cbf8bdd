"""Two training "nodes" on one machine: two torchrun launches of one process each that meet at 127.0.0.1,
as on two hosts (torchrun --nnodes=2 --node-rank=0|1), and a kill of both nodes at a chosen moment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
NODES = 2


def checkpoint_steps(folder: Path) -> dict[str, int] | None:
    """Global step of every checkpoint under ``folder`` by file name; None while one of them is still being written."""
    try:
        return {path.name: torch.load(path, map_location="cpu", weights_only=False)["global_step"]
                for path in folder.rglob("*.ckpt")}
    except Exception:  # a half-written file fails to load in many ways (zip, pickle, EOF)
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_nodes(script: Path, args: list[str], logs: Path) -> list[subprocess.Popen]:
    """Start node 0 and node 1 (one process each) running ``script args``; node r logs to ``logs/node<r>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    port = free_port()
    nodes = []
    for node in range(NODES):
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", "--nproc-per-node=1",
            f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", str(script), *args,
        ]
        with open(logs / f"node{node}.log", "w") as log:
            nodes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=logs))
    return nodes


def node_logs(logs: Path) -> list[str]:
    return [(logs / f"node{node}.log").read_text() for node in range(NODES)]


def wait_nodes(nodes: list[subprocess.Popen], logs: Path, timeout: float = 300) -> list[str]:
    """Wait for both nodes to finish; returns their logs; fails (after killing them) on a timeout or an error."""
    deadline = time.monotonic() + timeout
    try:
        codes = [node.wait(timeout=max(deadline - time.monotonic(), 1)) for node in nodes]
    except subprocess.TimeoutExpired:
        kill(nodes)
        raise AssertionError(f"the nodes ran past {timeout} s:\n" + "\n".join(log[-3000:] for log in node_logs(logs)))
    outputs = node_logs(logs)
    assert codes == [0] * NODES, "\n".join(f"node {n} exit {c}:\n{out[-4000:]}" for n, (c, out) in enumerate(zip(codes, outputs)))
    return outputs


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc; None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def node_processes(node: subprocess.Popen) -> list[int]:
    """The torchrun agent and its workers (torchrun starts each worker in a session of its own)."""
    workers = []
    for entry in Path("/proc").glob("[0-9]*"):
        state = process_state(int(entry.name))
        if state is not None and state[1] == node.pid:
            workers.append(int(entry.name))
    return [node.pid, *workers]


def signal_nodes(nodes: list[subprocess.Popen], sig: signal.Signals) -> list[int]:
    pids = [pid for node in nodes for pid in node_processes(node)]
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def stop_nodes(nodes: list[subprocess.Popen], timeout: float = 10) -> None:
    """SIGSTOP every process of the nodes and wait until each one is stopped (or has ended), so no file changes after."""
    pids = signal_nodes(nodes, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while any((process_state(pid) or ("X",))[0] not in "TtZX" for pid in pids):
        assert time.monotonic() < deadline, "the nodes did not stop on SIGSTOP"
        time.sleep(0.01)


def kill(nodes: list[subprocess.Popen]) -> None:
    signal_nodes(nodes, signal.SIGKILL)
    for node in nodes:
        node.wait()


def kill_nodes_when(nodes: list[subprocess.Popen], logs: Path, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL every process of both nodes (a preemption) as soon as ``ready()`` holds. The nodes are stopped
    and ``ready()`` asked again first, so that the kill never lands while a checkpoint is half written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(node.poll() is not None for node in nodes):
            kill(nodes)
            raise AssertionError("a node ended before the kill:\n" + "\n".join(log[-3000:] for log in node_logs(logs)))
        if ready():
            stop_nodes(nodes)
            if ready():
                kill(nodes)
                return
            signal_nodes(nodes, signal.SIGCONT)
        time.sleep(0.1)
    kill(nodes)
    raise AssertionError(f"not ready to kill within {timeout} s:\n" + "\n".join(log[-3000:] for log in node_logs(logs)))
