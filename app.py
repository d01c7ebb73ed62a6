"""prefstudio: the Gradio app (``python app.py``) and the ``prefstudio`` command line.

The entry point only: the commands live in the ``cli`` package (one module per command).
"""
from __future__ import annotations

import os

# Offline by default: no code path may reach a model hub or send telemetry. Set before any
# library that reads these is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys

from cli import main
from cli.common import SAMPLE_PROJECT  # noqa: F401  (tests and tools find the sample here)

if __name__ == "__main__":
    if len(sys.argv) == 1:  # `python app.py` starts the studio, like `prefstudio serve`
        sys.argv.append("serve")
    sys.exit(main())
