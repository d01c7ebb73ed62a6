"""Content ids must never change: a re-import of an old file has to find the old rows."""
import json

from annotate import store


def test_canonical_json_matches_the_json_module_for_every_code_point():
    reference = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    chars = [chr(c) for c in range(0x3000)] + [chr(c) for c in range(0xE000, 0x110000, 61)]
    for start in range(0, len(chars), 500):
        text = "".join(chars[start:start + 500])
        value = [{"role": "user", "content": text, "b": ['"\\/', None, 1]}]
        assert store.canonical_json(value) == reference(value)


def test_canonical_json_falls_back_for_what_orjson_refuses():
    assert store.canonical_json({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert store.canonical_json({1: "x"}) == '{"1":"x"}'


def test_content_ids_are_stable():
    # values computed with the first implementation (hashlib.update per part + 0x1f)
    assert store.content_id("prompt", '[{"content":"hi","role":"user"}]') == "174e9317bdc85588"
    messages = store.check_messages("hi")
    assert store.prompt_id(messages) == store.prompt_row("hi")["id"] == "174e9317bdc85588"
    assert store.response_id("p1", "text") == store.content_id("response", "p1", "text")
    assert store.task_id("pairwise", "p", ["b", "a"]) == store.task_id("pairwise", "p", ["a", "b"])
