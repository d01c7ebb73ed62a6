"""``export pairs|rankings --format hf``: Parquet shards plus a dataset card that
``datasets.load_dataset(DIR)`` reads as it is (issue 16)."""
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from annotate import formats, store
from annotate.formats import hf
from formats_helpers import write_jsonl
from interchange_data import RANKINGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def labelled(db, tmp_path):
    formats.import_file(db, write_jsonl(tmp_path / "labels.jsonl", RANKINGS), source="team")
    formats.import_file(db, write_jsonl(tmp_path / "hh.jsonl", [
        {"prompt": "Is water wet?", "chosen": "Yes.", "rejected": "No."}]), source="hh-rlhf")
    return db


def front_matter(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("what", ["pairs", "rankings"])
def test_load_dataset_reads_the_folder_as_it_is(labelled, tmp_path, monkeypatch, what):
    monkeypatch.setattr(hf, "ROWS_PER_SHARD", 3)   # several shards, as a large export has
    out = tmp_path / f"{what}-hf"
    result = formats.export(labelled, what, out, fmt="hf")
    expected = formats.export(labelled, what, tmp_path / f"{what}.parquet")["rows"]
    assert result["rows"] == expected and result["shards"] == -(-expected // 3) > 1
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))["train"]
    assert loaded.num_rows == expected
    reference = datasets.load_dataset("parquet", data_files=str(tmp_path / f"{what}.parquet"),
                                      cache_dir=str(tmp_path / "cache"))["train"]
    assert sorted(map(repr, loaded)) == sorted(map(repr, reference))   # the same rows, typed alike
    card = front_matter(out)
    assert [f["name"] for f in card["dataset_info"]["features"]] == loaded.column_names
    assert card["configs"][0]["data_files"][0]["path"].startswith("data/train-")


def test_a_folder_exported_again_loads_its_new_rows(labelled, tmp_path):
    """datasets caches by the card's data_files pattern: the shard names change with the rows."""
    cache = str(tmp_path / "cache")
    first = formats.export(labelled, "pairs", tmp_path / "a" / "prefs", fmt="hf")["rows"]
    assert datasets.load_dataset(str(tmp_path / "a" / "prefs"), cache_dir=cache)["train"].num_rows == first
    fewer = formats.export(labelled, "pairs", tmp_path / "b" / "prefs", fmt="hf", min_agreement=1)["rows"]
    assert fewer < first
    assert datasets.load_dataset(str(tmp_path / "b" / "prefs"), cache_dir=cache)["train"].num_rows == fewer


def test_the_card_names_sources_licences_and_label_counts(labelled, tmp_path):
    out = tmp_path / "pairs-hf"
    formats.export(labelled, "pairs", out, fmt="hf")
    text = (out / "README.md").read_text()
    assert "| hh-rlhf | 1 | mit |" in text
    assert "| team | 3 | unknown: check the original data |" in text
    assert front_matter(out)["license"] == "other"   # one source's licence is unknown
    pairs = store.pairs(labelled)
    assert f"{sum(p['n_labels'] for p in pairs)} labels" in text
    out2 = tmp_path / "rankings-hf"
    formats.export(labelled, "rankings", out2, fmt="hf")
    assert "8 labels by 5 annotators; 2 of them hold ties." in (out2 / "README.md").read_text()


def test_the_cli_writes_the_folder_and_refuses_other_exports(labelled, tmp_path):
    labelled.close()
    db = str(tmp_path / "test.duckdb")
    out = tmp_path / "hf-out"
    run = lambda *a: subprocess.run([sys.executable, "app.py", "export", *a, "--db", db],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
    done = run("pairs", "--format", "hf", "--out", str(out))
    assert done.returncode == 0 and done.stdout.startswith("wrote 6 pairs rows to"), done.stderr
    done = run("labels", "--format", "hf", "--out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "prefstudio export: hf-out: --format hf exports pairs or rankings, not labels"
