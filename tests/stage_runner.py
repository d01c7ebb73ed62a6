"""Run several CLI commands in one process (or one `accelerate launch` world), in order.

    python tests/stage_runner.py PLAN.json     # PLAN: a JSON list of argument lists for app.py

Starting torch, transformers and a process group once for every stage instead of once per
stage keeps tests/test_accelerate_stages.py within its time budget. The first command that
fails ends the run with its exit status (torchrun then stops the other ranks).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app  # noqa: E402


def main() -> None:
    for args in json.loads(Path(sys.argv[1]).read_text()):
        status = app.main(args)
        if status:
            print(f"stage_runner: {' '.join(args[:2])} exited {status}", file=sys.stderr)
            sys.exit(status)
        _wait_for_every_rank()


def _wait_for_every_rank() -> None:
    """Rank 0 ingests a run into the store after training; the next stage may open that store
    (read-only) only when it has: one command per launch gets this from the launch itself."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main()
