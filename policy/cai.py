"""Constitutional AI's supervised stage, SL-CAI (Bai et al. 2022, "Constitutional AI:
Harmlessness from AI Feedback", §3).

For each prompt the policy answers; then, ``revisions`` times, it is shown a principle drawn
from the principles file (the judges' file, ``data/principles.md`` by default) and asked to
critique its last answer against it, then to revise that answer in the light of its critique:

    user: PROMPT                      → assistant: ANSWER
    user: critique request(principle) → assistant: CRITIQUE
    user: revision request(principle) → assistant: REVISION   (the next step critiques this)

Every answer, critique and revision goes into the run folder's ``responses.jsonl`` as a
response to the prompt, its ``gen_params["cai"]`` saying what it is: ``step`` (answer,
critique, revision), ``revision`` (1..N), ``parent`` (the id of the response it critiques or
revises), ``critique`` (a revision's critique id), ``principle``. The answer and its revisions
form one task (pairwise for one revision, a ranking for more), so people and judges can label
revision against original in the studio like any other candidates. Critiques stay out of
tasks: they are the model's notes, not answers. Then the policy is fine-tuned (the SFT loss)
on each prompt followed by its final revision: the SL-CAI model. The RL-CAI stage is
prefstudio's existing path: an AI judge labels the tasks, a reward model learns from the
labels, and ``train ppo|rloo|rs|dpo`` optimise against it (docs/policy.md).

The critique and the revision are written with the same policy that is then trained (the
paper samples them from a helpful RLHF model); a run continuing from an RLHF'd policy with
``--model`` is the paper's set-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

from annotate import store
from annotate.judges.principles import Principle, load_principles, principle_for_task

from .candidates import model_identity
from .generate import SamplingParams, generate
from .sft import build_examples, collate, sft_steps
from .train_utils import PolicyRun, PolicySettings, load_for_training

CRITIQUE_REQUEST = ("Here is a principle for good responses: {principle}\n"
                    "Identify specific ways in which your last response falls short of this "
                    "principle.")
REVISION_REQUEST = ("Rewrite your last response so that it follows the principle "
                    "({principle}) and fixes what your critique found. Reply with the "
                    "rewritten response only.")
MAX_REVISIONS = 8   # the answer and its revisions make one task of at most 9 responses


@dataclass
class CAIConfig(PolicySettings):
    lr: float = 2e-4
    max_steps: int = 50
    revisions: int = 1                 # critique → revision steps per answer
    principles: str | None = None      # principles file (default data/principles.md)
    round: int = 0                     # annotation round of the answer-vs-revisions tasks
    max_len: int = 1024                # tokens per (prompt + revision) chat for fine-tuning
    sample_batch_size: int = 16        # sequences per generate() call
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(
        max_new_tokens=128, temperature=0.7, top_p=0.95))

    def check(self) -> None:
        super().check()
        if not 1 <= self.revisions <= MAX_REVISIONS:
            raise ValueError(f"revisions must be between 1 and {MAX_REVISIONS} (an answer and "
                             f"its revisions make one task of at most 9), not {self.revisions}")
        if self.round < 0:
            raise ValueError("round must be >= 0")


# --- the critique → revision loop -------------------------------------------------------------

@dataclass
class Chain:
    """One prompt's answer and its revisions so far."""
    messages: list[dict]
    current: str                       # the text the next step critiques
    current_id: str
    index: int                         # the prompt's position (SFT chats keep prompt order)
    texts: set[str] = field(default_factory=set)   # recorded texts (a response appears once)
    records: list[dict] = field(default_factory=list)
    revised: bool = False

    @property
    def prompt_id(self) -> str:
        return store.prompt_id(self.messages)

    @classmethod
    def start(cls, messages: list[dict], answer: str, index: int) -> "Chain":
        return cls(messages, answer, store.response_id(store.prompt_id(messages), answer), index)


def critique_and_revise(model, tok, prompts: Sequence[Sequence[dict]],
                        principles: Sequence[Principle], config: CAIConfig,
                        identity: tuple[str, str | None],
                        indices: Sequence[int] | None = None) -> tuple[list[dict], list[tuple]]:
    """Answer, critique and revise distinct ``prompts`` (at ``indices`` of the whole set);
    returns (responses.jsonl records, (index, SFT chat) of each revised prompt: the prompt
    followed by its final revision)."""
    indices = list(range(len(prompts))) if indices is None else list(indices)
    model_name, adapter = identity

    def sample(step: int, conversations: list[list[dict]]) -> list[dict]:
        seed = None if config.seed is None else config.seed * 1000 + step
        params = SamplingParams(**{**config.sampling.as_dict(), "seed": seed})
        out = generate(model, tok, conversations, params, k=1,
                       batch_size=config.sample_batch_size, progress=False)
        return [{"text": row[0]["text"], "gen_params": {**params.as_dict(),
                                                        "finished": row[0]["finished"]}}
                for row in out]

    chains = []
    for index, messages, answer in zip(indices, prompts, sample(0, [list(p) for p in prompts])):
        if not answer["text"]:
            continue                   # nothing to critique (the store holds no empty text)
        chain = Chain.start(store.check_messages(list(messages)), answer["text"], index)
        _record(chain, answer, {"step": "answer"}, model_name, adapter, config.round, task=True)
        chains.append(chain)
    for revision in range(1, config.revisions + 1):
        # one principle per step, drawn reproducibly from the response it revises (the paper
        # samples a principle of its constitution per step)
        drawn = [principle_for_task(principles, None, f"{c.current_id}:{revision}") for c in chains]
        asked = [c.messages + [{"role": "assistant", "content": c.current},
                               {"role": "user", "content": CRITIQUE_REQUEST.format(principle=p.text)}]
                 for c, p in zip(chains, drawn)]
        critiques = sample(2 * revision - 1, asked)
        asked = [a + [{"role": "assistant", "content": c["text"]},
                      {"role": "user", "content": REVISION_REQUEST.format(principle=p.text)}]
                 for a, c, p in zip(asked, critiques, drawn)]
        for chain, p, critique, revised in zip(chains, drawn, critiques, sample(2 * revision, asked)):
            lineage = {"revision": revision, "parent": chain.current_id, "principle": p.name}
            critique_id = _record(chain, critique, {"step": "critique", **lineage},
                                  model_name, adapter, config.round, task=False)
            new_id = _record(chain, revised, {"step": "revision", "critique": critique_id,
                                              **lineage}, model_name, adapter, config.round,
                             task=True)
            if new_id is not None:
                chain.current, chain.current_id, chain.revised = revised["text"], new_id, True
    records = [r for c in chains for r in c.records]
    chats = [(c.index, c.messages + [{"role": "assistant", "content": c.current}])
             for c in chains if c.revised]
    return records, chats


def _record(chain: Chain, sampled: dict, cai: dict, model: str, adapter: str | None,
            round: int, task: bool) -> str | None:
    """Add a sampled text to the chain's records; its response id, or None when it is empty
    or repeats a text the chain already holds (one response, recorded once)."""
    text = sampled["text"]
    if not text or text in chain.texts:
        return None
    chain.texts.add(text)
    record = {"prompt": chain.messages, "text": text, "model": model, "adapter": adapter,
              "gen_params": {**sampled["gen_params"], "cai": cai}}
    if task:   # the answer and its revisions share a group: one task once the run is done
        record.update(group=chain.prompt_id, round=round)
    chain.records.append(record)
    return store.response_id(chain.prompt_id, text)


# --- training ---------------------------------------------------------------------------------

def train_cai(config: CAIConfig, prompts: Sequence[Sequence[dict]], out_dir: str | Path, *,
              parents: Sequence[str] = ()) -> Path:
    """Critique → revision on every prompt, recorded for the store; then SFT on the final
    revisions (SL-CAI). A resumed run keeps the revisions it made and only trains on."""
    config.check()
    principles = load_principles(config.principles)   # a bad file is refused before loading
    # one chain (and one task) per distinct prompt
    prompts = list({store.prompt_id(store.check_messages(list(p))): list(p) for p in prompts}.values())
    if not prompts:
        raise ValueError("no prompts")
    from accelerate.utils import gather_object
    model, tok = load_for_training(config)
    with PolicyRun(config, out_dir, "cai", model, tok, parents=parents) as run:
        chats = run.state.get("chats")
        if chats is None:   # each process revises its share of the prompts; all train on all
            acc = run.accelerator
            mine = list(range(acc.process_index, len(prompts), acc.num_processes))
            records, indexed = critique_and_revise(run.unwrapped, tok, [prompts[i] for i in mine],
                                                   principles, config,
                                                   model_identity(config.model), mine)
            records = gather_object(records)
            chats = [chat for _, chat in sorted(gather_object(indexed), key=lambda x: x[0])]
            run.log.record("responses", records)
            steps = [r["gen_params"]["cai"]["step"] for r in records]
            run.metric(answers=steps.count("answer"), critiques=steps.count("critique"),
                       revisions=steps.count("revision"), revised_prompts=len(chats), force=True)
            run.log.log(f"{len(prompts)} prompts: {steps.count('revision')} revisions of "
                        f"{steps.count('answer')} answers; SFT on {len(chats)} final revisions")
            if not chats:
                raise ValueError("no revisions to train on: every revision was empty or "
                                 "repeated its answer (raise --max-new-tokens?)")
            run.state["chats"] = chats
            run.save_checkpoint()
        examples = build_examples(tok, chats, config.max_len, last_turn_only=True)
        batches = run.batches(examples, partial(collate, pad_id=tok.pad_token_id))
        total = sft_steps(run, batches, run.total_steps)
        return run.finish(final_loss=total, revised_prompts=len(chats))
