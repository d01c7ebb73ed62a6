"""The one training-data loader (cli/data.py): every stage that learns from labels honours
every label filter and reads the store read-only. Before it, `train sft|dpo` ignored
--source / --min-agreement / --label-rounds / --principle: "DPO on human labels" trained on
the AI labels too."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from annotate import store
from app import main
from cli import build_parser
from cli.data import preference_data

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["sun", "moon", "cat", "dog", "tree", "river"]


def labelled_store(path: Path) -> dict[str, set[str]]:
    """Six pairwise tasks labelled by people (round 0) and six by an AI judge (round 1, under
    the principle 'helpfulness'); returns the label ids of each source."""
    ids = {"human": set(), "ai": set()}
    with store.Store(path) as db:
        prompts, responses, tasks, labels = [], [], [], []
        for source, round_ in (("human", 0), ("ai", 1)):
            for w in WORDS:
                pr = store.prompt_row(f"tell me about the {w} ({source})")
                good = store.response_row(pr["id"], f"the {w} is great zebra")
                bad = store.response_row(pr["id"], f"the {w} is bad")
                task = store.task_row(pr["id"], [bad["id"], good["id"]], round=round_)
                extra = ({"source": "ai", "judge": "local:x", "soft_prob": 0.9,
                          "principle": "helpfulness"} if source == "ai" else {})
                label = store.label_row(task, f"{source}-annotator", [[good["id"]], [bad["id"]]],
                                        **extra)
                prompts.append(pr)
                responses += [good, bad]
                tasks.append(task)
                labels.append(label)
                ids[source].add(label["id"])
        store.add_prompts(db, prompts)
        store.add_responses(db, responses)
        store.add_tasks(db, tasks)
        store.add_labels(db, labels)
    return ids


@pytest.fixture
def labelled(tmp_path):
    path = tmp_path / "ws" / "prefstudio.duckdb"
    return path, labelled_store(path)


def recorded_inputs(out: Path) -> set[str]:
    return set(json.loads((out / "inputs.json").read_text()))


def test_dpo_on_human_labels_trains_on_the_human_pairs_only(labelled, tiny_policy, tmp_path):
    db_path, ids = labelled
    out = tmp_path / "dpo"
    assert main(["train", "dpo", "--db", str(db_path), "--source", "human",
                 "--model", str(tiny_policy), "--max-steps", "1", "--batch-size", "2",
                 "--max-length", "32", "--out", str(out), "--json"]) == 0
    assert recorded_inputs(out) == ids["human"]
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["pairs"] == len(WORDS)
    with store.Store(db_path, read_only=True) as db:   # the lineage went into the store too
        assert store.lineage(db, run["id"])["labels"] == len(WORDS)


def test_sft_honours_source_rounds_and_principle(labelled, tiny_policy, tmp_path):
    db_path, ids = labelled
    for argv in (["--source", "ai"], ["--label-rounds", "1"], ["--principle", "helpfulness"]):
        out = tmp_path / f"sft{argv[0]}"
        assert main(["train", "sft", "--db", str(db_path), *argv, "--model", str(tiny_policy),
                     "--max-steps", "1", "--max-length", "32", "--out", str(out)]) == 0
        assert recorded_inputs(out) == ids["ai"], argv


@pytest.mark.parametrize("kind", ["rm", "sft", "dpo"])
def test_every_stage_gets_the_same_filtered_pairs(labelled, kind):
    db_path, ids = labelled

    def label_ids(*filters):
        args = build_parser().parse_args(["train", kind, "--db", str(db_path), "--out", "o",
                                          *filters])
        return {lid for p in preference_data(args).pairs for lid in p.label_ids}

    assert label_ids() == ids["human"] | ids["ai"]
    assert label_ids("--source", "human") == label_ids("--label-rounds", "0") == ids["human"]
    assert label_ids("--source", "ai") == label_ids("--principle", "helpfulness") == ids["ai"]
    assert label_ids("--min-agreement", "0.5", "--source", "human") == ids["human"]


def test_no_pairs_after_the_filters_is_one_line(labelled, tmp_path, capsys):
    db_path, _ = labelled
    assert main(["train", "dpo", "--db", str(db_path), "--label-rounds", "7",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no preference pairs" in err and "--label-rounds" in err


def test_the_loader_reads_a_store_another_process_holds_read_only(labelled):
    """Several readers at once (as under `accelerate launch`): a read-write open would fail."""
    db_path, ids = labelled
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                               "from annotate import store; "
                               f"db = store.Store({str(db_path)!r}, read_only=True); "
                               "print('ready', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(store.StoreBusy):
            store.Store(db_path)
        args = build_parser().parse_args(["train", "dpo", "--db", str(db_path), "--out", "o",
                                          "--source", "human"])
        assert {lid for p in preference_data(args).pairs for lid in p.label_ids} == ids["human"]
    finally:
        holder.communicate("\n", timeout=60)


def test_a_chat_file_refuses_label_filters(tmp_path, capsys):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    assert main(["train", "sft", "--data", str(chats), "--source", "human",
                 "--out", str(tmp_path / "o")]) == 2
    assert "is a chat file; it has no labels to filter" in capsys.readouterr().err
