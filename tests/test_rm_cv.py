"""bench/rm_cv.py's split: folds by prompt (no prompt on both sides), every row tested once."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rm_cv():
    spec = importlib.util.spec_from_file_location("rm_cv", ROOT / "bench" / "rm_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hh(prompt: str, good: str, bad: str) -> dict:
    head = f"\n\nHuman: {prompt}\n\nAssistant:"
    return {"chosen": f"{head} {good}", "rejected": f"{head} {bad}"}


def test_folds_split_by_prompt_and_cover_every_row(tmp_path):
    rm_cv = _rm_cv()
    rows = []
    for p in range(23):  # some prompts have several pairs: they must stay together
        rows += [_hh(f"question {p}", f"fine answer {i}", f"rude answer {i}") for i in range(1 + p % 3)]
    rows.append({"prompt": "a pairs-format prompt", "chosen": "yes", "rejected": "no"})
    rows.append({"prompt": "a pairs-format prompt", "chosen": "sure", "rejected": "never"})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    splits = rm_cv.split_folds(data, 4, seed=0, out=tmp_path / "splits")

    tested = []
    for train_file, test_file, n_train, n_test in splits:
        train = [json.loads(l) for l in train_file.read_text().splitlines()]
        test = [json.loads(l) for l in test_file.read_text().splitlines()]
        assert (len(train), len(test)) == (n_train, n_test) and n_train + n_test == len(rows)
        test_prompts = {rm_cv.prompt_key(r) for r in test}
        assert not test_prompts & {rm_cv.prompt_key(r) for r in train}
        tested += test
    assert sorted(map(json.dumps, tested)) == sorted(map(json.dumps, rows))
    sizes = [n_test for _, _, _, n_test in splits]
    assert max(sizes) - min(sizes) <= 3  # rows dealt evenly, up to one group (<= 3 rows)


def test_the_split_depends_only_on_the_data_and_the_seed(tmp_path):
    rm_cv = _rm_cv()
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(_hh(f"q{p}", "a", "b")) + "\n" for p in range(10)))
    first = [t.read_text() for _, t, _, _ in rm_cv.split_folds(data, 3, 0, tmp_path / "a")]
    again = [t.read_text() for _, t, _, _ in rm_cv.split_folds(data, 3, 0, tmp_path / "b")]
    other = [t.read_text() for _, t, _, _ in rm_cv.split_folds(data, 3, 1, tmp_path / "c")]
    assert first == again and first != other
