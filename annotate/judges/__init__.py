"""AI judges (RLAIF): one interface, three back ends, principles, both orders, soft labels.

    from annotate.judges import JudgeConfig, OpenAIJudge, run_judge, parse_judge_spec
    spec = parse_judge_spec("openai:http://127.0.0.1:8000/v1#my-model")
    judge = OpenAIJudge(spec, api_key_env="MY_KEY")
    run_judge(store.tasks_lacking_label(db, config.name), judge, config, RunLog(out, "judge", config.to_json()))

The local judge (``annotate.judges.local_judge.LocalJudge``, imported on its own because it
needs torch) gets a loaded (model, tokenizer); the reward-model judge (``RewardModelJudge``)
a scoring function. annotate never loads a model itself.
"""
from .aggregate import DEFAULT_MARGINS, combine_orders, margin_level, ranking_from_pairs
from .base import Judge, JudgeConfigError, JudgeError, JudgeSpec, Verdict, parse_judge_spec, public_url
from .job import (JudgeConfig, build_judge, judge_name, judge_store, read_task_snapshot, run_judge, shown_first,
                  write_task_snapshot)
from .openai_judge import OpenAIJudge
from .principles import Principle, PrinciplesError, load_principles, select_principle
from .prompt import Comparison, judge_messages, parse_verdict_text, verdict_from_logprobs
from .report import agreement_report
from .rm_judge import RewardModelJudge
