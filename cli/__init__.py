"""The ``prefstudio`` command line: one module per command, each with ``add_parser(sub)`` and
``run(args)``; what they share is in ``common`` (workspace, store, output, errors), which
option applies to which training stage in ``stages``, and the one training-data loader in
``data``. ``app.py`` is the entry point (``prefstudio = "app:main"``, ``python app.py``).

Every command that fails on bad input exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib
import sys

from .common import CliError, Parser, add_common_options

# command name → module (``import`` is a Python keyword, hence ``import_``)
COMMANDS = {"serve": "serve", "import": "import_", "export": "export", "users": "users",
            "generate": "generate", "judge": "judge", "train": "train", "eval": "eval",
            "queue-order": "queue_order"}
DESCRIPTION = ("prefstudio: label LLM responses (people and AI judges), train reward models "
               "and policies on the labels")


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")


def build_parser() -> Parser:
    parser = Parser(prog="prefstudio", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        module.add_parser(sub)
        sp = sub.choices[name]
        sp.set_defaults(run=module.run)
        add_common_options(sp)
    return parser


def parse_command(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed exactly as ``prefstudio ARGV`` would be (abbreviations, ``--opt=value``),
    without running or exiting: argparse's complaint is raised as ValueError (one line). The
    studio checks a job's options with it before starting the job."""
    return _checking_parser().parse_args(argv)


@functools.lru_cache(maxsize=1)
def _checking_parser() -> Parser:
    """The CLI's parser, built once per process, raising instead of printing and exiting."""
    def refuse(message: str):
        raise ValueError(message)

    parser = build_parser()
    parsers = [parser]
    for p in parsers:   # every sub-command's parser too (it reports its own errors)
        p.error = refuse
        p.exit = lambda status=0, message=None: refuse(message or "help and exit are not options here")
        p.print_help = lambda file=None: None
        parsers += [c for a in p._actions if isinstance(a, argparse._SubParsersAction)
                    for c in a.choices.values()]
    return parser


def command_options(words: list[str]) -> list[dict]:
    """The options of ``prefstudio WORDS`` (e.g. ``["train", "rm"]``, ``["generate"]``) as the
    CLI's own parser defines them — flag, dest, default, type, choices, help — and, for
    ``train`` and ``eval``, only those ``stages`` says apply to the kind. The studio's job
    forms are built from this, so there is no second list of options."""
    return copy.deepcopy(_options_of(tuple(words)))


@functools.lru_cache(maxsize=None)
def _options_of(words: tuple[str, ...]) -> list[dict]:
    from . import stages
    parser = _checking_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sp = sub.choices[words[0]]
    table = {"train": stages.TRAIN, "eval": stages.EVAL}.get(words[0])
    applying = stages.applying(table, words[1]) if table else None
    options = []
    for action in sp._actions:
        flag = next((f for f in action.option_strings if f.startswith("--")), None)
        if flag is None or flag == "--help" or (applying is not None and flag not in applying
                                                and flag not in ("--db", "--json", "--out")):
            continue
        kind = ("flag" if action.nargs == 0 else
                getattr(action.type, "__name__", None) if action.type in (int, float) else "str")
        options.append({"flag": flag, "dest": action.dest, "default": action.default,
                        "type": kind, "choices": list(action.choices or []) or None,
                        "help": action.help or ""})
    return options


parse_command.options = command_options   # the studio gets the parser and its options as one


def _interrupt_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop, kill) stops a command the way Ctrl-C does: through
    KeyboardInterrupt, so every open store closes and checkpoints (no ``.wal`` left behind)
    instead of the process dying mid-write."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _quiet_library_noise() -> None:
    """Silence two library messages that are about prefstudio's own choices, not the user's
    input: peft asks transformers 5 a deprecated question (a FutureWarning on every LoRA
    model), and tokenizers warn when a text is longer than the model's limit — prefstudio
    tokenizes whole texts on purpose and cuts them to --max-length itself (prompts from the left)."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_on_sigterm()
    _quiet_library_noise()
    from annotate.store import StoreBusy, StoreError
    from harness.hub import ModelNotAvailable
    try:
        args.run(args)
    except (CliError, StoreError, StoreBusy, ModelNotAvailable) as err:
        print(f"prefstudio {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prefstudio {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
