"""The docs cannot drift from the command line: docs/cli.md is the parser's own --help, every
option has help text, and every command line in README.md and docs/*.md uses only options
its command has (for `train KIND`/`eval KIND`: options that apply to that KIND)."""
import re
import shlex
from pathlib import Path

import pytest

from cli import build_parser, docs, stages

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# how a command line starts in the docs: `prefstudio CMD`, `python app.py CMD`, `-m app CMD`
COMMAND = re.compile(r"(?:^|[\s`$(])(?:prefstudio|app\.py|-m app)\s+([a-z]+)(?=\s|$)(.*)")


def subparsers():
    return build_parser()._subparsers._group_actions[0].choices


def options_of(command: str) -> set[str]:
    return {s for a in subparsers()[command]._actions for s in a.option_strings}


def command_lines(path: Path):
    """(line number, command, rest of the line, refused) for every prefstudio command line,
    joining lines continued with a backslash; refused: the transcript shows it refused (the
    next line is `prefstudio COMMAND: ...`), as an example of what a stage does not take."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        for span in re.findall(r"`([^`]+)`", line) if "`" in line else [line]:
            m = COMMAND.search(span)
            if m and m.group(1) in subparsers():
                after = lines[i + 1].strip() if i + 1 < len(lines) else ""
                yield (start, m.group(1), m.group(2).split("#")[0],
                       after.startswith(f"prefstudio {m.group(1)}: "))
        i += 1


def test_the_cli_reference_is_the_parsers_own_help():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == docs.render(), \
        "docs/cli.md is out of date: run python -m cli.docs"


def test_every_option_of_every_command_has_help_and_is_in_the_reference():
    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, parser in subparsers().items():
        for action in parser._actions:
            for flag in action.option_strings:
                assert action.help, f"prefstudio {name} {flag}: no help text"
                assert re.search(rf"{re.escape(flag)}\b", reference), f"{name} {flag}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_option_exists(path):
    wrong = []
    for line_no, command, rest, refused in command_lines(path):
        known = options_of(command)
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        table = {"train": stages.TRAIN, "eval": stages.EVAL}.get(command)
        kinds = stages.TRAIN_KINDS if command == "train" else stages.EVAL_KINDS
        kind = words[0] if words and table is not None and words[0] in kinds and not refused \
            else None
        for word in words:
            flag = word.split("=")[0].strip("[]|")
            if not flag.startswith("--"):
                continue
            if flag not in known:
                wrong.append(f"{path.name}:{line_no}: prefstudio {command} has no {flag}")
            elif kind and flag in {o.flag for opts in table.values() for o in opts} \
                    and not stages.applies(table, flag, kind):
                wrong.append(f"{path.name}:{line_no}: {flag} does not apply to {command} {kind}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_finds_a_wrong_option(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("    $ prefstudio train sft --beta 0.1 \\\n        --no-such-option 3\n"
                   "Run `prefstudio export pairs --out x.jsonl` to export.\n")
    found = list(command_lines(doc))
    assert [(n, c, refused) for n, c, _, refused in found] == [(1, "train", False),
                                                               (3, "export", False)]
    with pytest.raises(AssertionError, match=r"no --no-such-option[\s\S]*--beta does not apply"):
        test_every_documented_option_exists(doc)


# options of other programs that the docs name in passing (accelerate launch)
FOREIGN = {"--multi_gpu", "--num_processes", "--cpu"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_option_named_in_prose_exists(path):
    known = {s for p in subparsers().values() for a in p._actions for s in a.option_strings}
    wrong = [f"{path.name}:{n}: {flag}"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for span in re.findall(r"`([^`]+)`", line)
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", span)
             if flag not in known | FOREIGN]
    assert not wrong, "no prefstudio command has:\n" + "\n".join(wrong)
