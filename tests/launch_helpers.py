"""Starting a script under `accelerate launch` with N CPU processes, on a free port."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it), for torchrun's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(processes: int) -> list[str]:
    """The command prefix that runs a script with ``processes`` CPU processes.

    `accelerate launch --cpu` (accelerate 1.15) starts ONE process and leaves the others to
    mpirun; `--multi_gpu` starts them through torchrun, and on a machine without a GPU the
    harness's Accelerator(cpu=True) joins them with gloo: N CPU processes, one model.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port())]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
