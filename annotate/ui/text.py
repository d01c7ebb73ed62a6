"""What the studio says (English and Chinese), how it looks (CSS) and its browser glue (JS).

Static texts (labels, buttons, tabs) go through ``gr.I18n``, which translates in the browser.
Gradio picks the browser's language at start; the studio's own switch (English / 中文) calls
the front end's ``changeLocale`` and remembers the choice in ``localStorage``. Texts the server
renders into HTML carry both languages and CSS shows the one matching ``<html lang>``,
which the front end updates on every switch.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

STRINGS: dict[str, tuple[str, str]] = {
    "title": ("## prefstudio — annotation studio", "## prefstudio — 标注工作台"),
    "language": ("Language", "语言"),
    "tab_annotate": ("Annotate", "标注"),
    "tab_mine": ("My labels", "我的标注"),
    "tab_import": ("Import", "导入"),
    "tab_browse": ("Browse & export", "浏览与导出"),
    "tab_agreement": ("Agreement", "一致性"),
    "tab_users": ("Users & overlap", "用户与重叠"),
    "tab_jobs": ("Jobs", "作业"),
    "prompt": ("Conversation", "对话"),
    "which_better": ("Which response is better?", "哪个回答更好？"),
    "a_better": ("A is better", "A 更好"),
    "tie": ("Tie", "一样好"),
    "b_better": ("B is better", "B 更好"),
    "margin": ("By how much?", "好多少？"),
    "m_significantly": ("Significantly better", "明显更好"),
    "m_better": ("Better", "更好"),
    "m_slightly": ("Slightly better", "稍好"),
    "m_negligibly": ("Negligibly better / unsure", "几乎一样 / 不确定"),
    "rank": ("Rank", "名次"),
    "rationale": ("Rationale (optional)", "理由（可选）"),
    "submit": ("Submit ⏎", "提交 ⏎"),
    "skip": ("Skip (s)", "跳过 (s)"),
    "undo": ("Undo my last label (u)", "撤销上一条标注 (u)"),
    "cancel_edit": ("Cancel edit", "取消编辑"),
    "refresh": ("Refresh", "刷新"),
    "edit": ("Edit this label", "编辑这条标注"),
    "label_id": ("Label id", "标注 ID"),
    "shortcuts": ("Keyboard shortcuts", "键盘快捷键"),
    "shortcuts_md": (
        "**Pairwise:** `a` A is better · `b` B is better · `t` tie · `1`–`4` margin "
        "(significantly … negligibly). **Ranking:** `a`–`i` pick a response, then `1`–`9` its "
        "rank (the next response is picked for you). **Everywhere:** `Enter` submit · `s` skip "
        "· `u` undo my last label. Shortcuts are off while typing in a text box.",
        "**成对比较：** `a` A 更好 · `b` B 更好 · `t` 一样好 · `1`–`4` 差距（明显 … 几乎一样）。"
        "**排序：** `a`–`i` 选择回答，再按 `1`–`9` 设定名次（自动跳到下一个回答）。"
        "**通用：** `Enter` 提交 · `s` 跳过 · `u` 撤销上一条标注。在文本框中输入时快捷键不生效。"),
    "import_file": ("Import file (JSONL, CSV, Parquet)", "导入文件（JSONL、CSV、Parquet）"),
    "format": ("Format", "格式"),
    "round": ("Round", "轮次"),
    "required_labels": ("Annotators per new task", "每个新标注任务的标注人数"),
    "do_import": ("Import", "导入"),
    "result": ("Result", "结果"),
    "table": ("Table", "表"),
    "contains": ("Text contains", "文本包含"),
    "source": ("Source", "来源"),
    "annotator": ("Annotator", "标注者"),
    "kind": ("Kind", "类型"),
    "min_agreement": ("Minimum agreement", "最低一致性"),
    "show": ("Show", "显示"),
    "export_pairs": ("Download pairs (TRL format)", "下载偏好对（TRL 格式）"),
    "pairs_file": ("Pairs file", "偏好对文件"),
    "compute": ("Compute", "计算"),
    "overall": ("Overall", "总体"),
    "per_annotator": ("Per annotator", "按标注者"),
    "per_task": ("Per task", "按标注任务"),
    "users": ("Users", "用户"),
    "name": ("Name", "用户名"),
    "role": ("Role", "角色"),
    "password": ("Password (8+ characters)", "密码（至少 8 个字符）"),
    "add_user": ("Add user", "添加用户"),
    "set_role": ("Set role", "设置角色"),
    "set_password": ("Set password", "设置密码"),
    "overlap": ("Annotators per task (overlap)", "每个标注任务的标注人数（重叠）"),
    "overlap_round": ("Only round (empty = all tasks)", "仅限轮次（留空 = 所有标注任务）"),
    "set_overlap": ("Set overlap", "设置重叠"),
    "job_kind": ("Job", "作业类型"),
    "job_options": ("Advanced: extra command-line flags", "高级：额外的命令行参数"),
    "advanced": ("Advanced", "高级"),
    "preset": ("Preset", "预设"),
    "start_job": ("Start", "开始"),
    "stop_job": ("Stop", "停止"),
    "resume_job": ("Resume", "继续"),
    "runs": ("Runs", "运行记录"),
    "run_id": ("Run", "运行"),
    "run_detail": ("Status and lineage", "状态与血缘"),
    "run_command": ("Command (run it in a terminal or under accelerate launch)",
                    "命令（可在终端或 accelerate launch 下运行）"),
    "run_log": ("Last lines", "最后几行输出"),
    "run_samples": ("Policy vs reference", "策略与参考模型对比"),
    "loss_plot": ("Loss", "损失"),
    "reward_plot": ("Reward", "奖励"),
    "start_annotating": ("Start annotating", "开始标注"),
    "next_task": ("Next task", "下一个标注任务"),
    "kl_plot": ("KL", "KL 散度"),
    "accuracy_plot": ("Accuracy", "准确率"),
    "f_base": ("Base model", "基础模型"),
    "f_model": ("Model (policy)", "模型（策略）"),
    "f_rm": ("Reward model", "奖励模型"),
    "f_judge": ("Judge", "评审"),
    "f_prompts": ("Prompts", "提示集"),
    "f_label_rounds": ("Label rounds (e.g. 0,1)", "标注轮次（如 0,1）"),
    "f_principle": ("Principle", "原则"),
    "f_max_steps": ("Steps", "步数"),
    "f_batch_size": ("Batch size", "批大小"),
    "f_lr": ("Learning rate", "学习率"),
    "f_lora_r": ("LoRA rank r", "LoRA 秩 r"),
    "f_beta": ("β", "β"),
    "f_k": ("K (samples per prompt)", "K（每个提示的样本数）"),
    "f_max_new_tokens": ("Max new tokens", "最大生成长度"),
    "f_limit": ("At most N (prompts / tasks)", "最多 N 个（提示 / 标注任务）"),
    "f_max_prompts": ("At most N prompts", "最多 N 个提示"),
}

# Terms: an annotation *task* is 标注任务 and a training / generation *job* is 作业 (训练作业),
# so the two never share 任务 alone.

# Column headers of the admin's tables (Browse, Users, Agreement) and My labels, in Chinese;
# a column not listed keeps its English name.
COLUMNS_ZH: dict[str, str] = {
    "id": "ID", "task_id": "标注任务", "task": "标注任务", "kind": "类型", "k": "回答数",
    "round": "轮次", "needs": "所需人数", "labels": "标注数", "human_labels": "人工标注",
    "ai_labels": "AI 标注", "annotator": "标注者", "source": "来源", "judge": "评审模型",
    "ranking": "排序", "margin": "差距", "margin_level": "差距", "rationale": "理由",
    "created_at": "创建时间", "when": "时间", "label": "标注", "label_id": "标注 ID",
    "text": "文本", "prompt": "提示", "prompt_id": "提示 ID", "response_id": "回答 ID",
    "model": "模型", "chosen": "较好回答", "rejected": "较差回答", "agreement": "一致性",
    "n_labels": "标注数", "name": "用户名", "role": "角色", "done_today": "今日完成",
    "done_total": "累计完成", "left": "剩余", "last_label": "最近标注", "compared": "可比较数",
    "agreement_with_majority": "与多数一致率", "labels_per_hour": "每小时标注数",
    "median_seconds_per_label": "每条标注秒数（中位数）", "directions": "方向数",
    "observed_agreement": "观测一致性", "superseded": "已被替换", "duration_ms": "用时（毫秒）",
    "human": "人工", "ai": "AI", "tags": "标签", "tasks": "标注任务数", "run_id": "运行",
    "ms": "用时（毫秒）", "superseded_by": "被替换为", "votes_chosen": "支持较好票",
    "votes_rejected": "支持较差票", "soft_prob": "软概率", "rank_gap": "名次差",
    "chosen_id": "较好回答 ID", "rejected_id": "较差回答 ID", "label_ids": "标注 ID",
}

# Messages the studio shows (its own and the store's), English pattern → Chinese. A message
# not listed is shown in English in both languages.
MESSAGES_ZH: list[tuple[str, str]] = [
    (r"choose A, B or tie first", "请先选择 A 更好、一样好或 B 更好"),
    (r"choose by how much the better response is better", "请选择更好的回答好多少"),
    (r"give every response a rank \(missing: (.*)\)", r"请给每个回答一个名次（缺少：\1）"),
    (r"there is no task on screen; reload the page", "屏幕上没有标注任务，请刷新页面"),
    (r"you have no label to undo", "没有可撤销的标注"),
    (r"pick one of your labels first", "请先选择一条您的标注"),
    (r"passwords need at least 8 characters", "密码至少需要 8 个字符"),
    (r"user names are 1-64 letters, digits or _ \. @ -", "用户名为 1–64 个字母、数字或 _ . @ -"),
    (r"user '(.*)' already exists", r"用户 '\1' 已存在"),
    (r"unknown user '(.*)'", r"未知用户 '\1'"),
    (r"refusing to remove the last admin", "不能移除最后一个管理员"),
    (r"no tasks in round (.*)", r"第 \1 轮没有标注任务"),
    (r"there are no AI labels yet(.*)", r"还没有 AI 标注\1"),
    (r"there are no labels yet(.*)", r"还没有标注\1"),
    (r"'(.*)' is not a number", r"'\1' 不是数字"),
    (r"only admins may do this", "只有管理员可以这样做"),
]


def message_zh(en: str) -> str:
    """The Chinese of a message the studio shows, or the English when it has none."""
    import re
    for pattern, zh in MESSAGES_ZH:
        match = re.fullmatch(pattern, en)
        if match:
            return match.expand(zh)
    return en


def bilingual_message(en: str) -> str:
    """A message as HTML in both languages (escaped; CSS shows the page's language)."""
    from .render import bilingual
    return bilingual(en, message_zh(en))


# The Models page and the held-out controls of Browse (annotate/ui/models.py).
STRINGS.update({
    "tab_models": ("Models & rounds", "模型与轮次"),
    "models_refresh": ("Refresh", "刷新"),
    "models_table": ("Reward models and policies", "奖励模型与策略"),
    "lineage": ("Lineage: labels → reward model → policy → next round's candidates",
                "血缘：标注 → 奖励模型 → 策略 → 下一轮候选"),
    "rounds_table": ("Rounds", "各轮统计"),
    "rounds_plot": ("Rounds: agreement, reward-model accuracy, win rate", "各轮：一致性、奖励模型准确率、胜率"),
    "model_pick": ("Model run", "模型运行"),
    "show_labels": ("Labels it was trained on", "训练所用标注"),
    "trained_labels": ("Training labels", "训练标注"),
    "download_adapter": ("Download adapter (.zip)", "下载适配器（.zip）"),
    "adapter_file": ("Adapter", "适配器"),
    "use_as_judge": ("Use as judge", "用作评审"),
    "next_round": ("Start next round from this policy", "用此策略开始下一轮"),
    "candidates_k": ("Candidates per prompt (K)", "每个提示的候选数（K）"),
    "prompt_set": ("Prompts", "提示集"),
    "action_result": ("Result", "结果"),
    "policy_a": ("Policy A", "策略 A"),
    "policy_b": ("Policy B", "策略 B"),
    "compare": ("Compare answers", "对比回答"),
    "comparison": ("The two policies' answers to the same prompts", "两个策略对相同提示的回答"),
    "held_out_ids": ("Prompt ids (click prompts rows to add)", "提示 id（点击提示行添加）"),
    "held_out_mark": ("Held out", "留出"),
    "held_out_apply": ("Mark / unmark held-out prompts", "标记 / 取消留出提示"),
})


class Texts(gr.I18n):
    """gr.I18n whose keys carry a ``ps_`` prefix: the front end translates any displayed string
    that equals a key, so a key like ``annotator`` would also rename the dropdown *value*
    ``annotator`` (and the server would then refuse the translated value)."""

    PREFIX = "ps_"

    def __call__(self, key: str):
        return super().__call__(self.PREFIX + key)


def i18n() -> Texts:
    en = {Texts.PREFIX + k: v[0] for k, v in STRINGS.items()}
    zh = {Texts.PREFIX + k: v[1] for k, v in STRINGS.items()}
    return Texts(en=en, zh=zh, **{"zh-CN": zh, "zh-TW": zh})


CSS = """
html[lang^="zh"] .l-en, html:not([lang^="zh"]) .l-zh { display: none; }
.ps-chat { display: flex; flex-direction: column; gap: 8px; }
.ps-turn { border-radius: 10px; padding: 8px 12px; max-width: 92%; }
.ps-user { background: var(--color-accent-soft); align-self: flex-end; }
.ps-assistant { background: var(--background-fill-secondary); align-self: flex-start; }
.ps-system { background: var(--background-fill-secondary); font-style: italic; }
.ps-role { font-size: 0.8em; opacity: 0.7; margin-bottom: 2px; }
.ps-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;
           height: 100%; overflow-wrap: anywhere; }
.ps-letter { font-weight: 700; font-size: 1.1em; margin-bottom: 4px; }
.ps-md pre { background: var(--code-background-fill, #f4f4f5); padding: 8px; border-radius: 6px;
             overflow-x: auto; white-space: pre; }
.ps-md code { font-family: var(--font-mono); }
.ps-progress { display: flex; flex-direction: column; gap: 4px; }
.ps-bar { height: 10px; background: var(--background-fill-secondary); border-radius: 5px; overflow: hidden; }
.ps-fill { height: 100%; background: var(--color-accent); }
.ps-counts { display: flex; gap: 18px; font-size: 0.9em; }
.ps-msg { padding: 6px 10px; border-radius: 6px; }
.ps-info { background: var(--background-fill-secondary); }
.ps-edit { background: #fff3cd; color: #664d03; }
.ps-done { background: #d1e7dd; color: #0f5132; }
#ps-logout { align-self: center; }
.ps-me { opacity: 0.75; }
.ps-summary td { padding: 4px 12px 4px 0; }
.ps-error { color: #b02a37; }
.ps-selected { outline: 3px solid var(--color-accent); border-radius: 10px; }
/* Gradio's toast titles are plain English text: show them in the page's language instead */
.toast-title { font-size: 0 !important; }
.toast-title::before { font-size: var(--text-lg); }
.toast-title.info::before { content: "Info"; }
.toast-title.warning::before { content: "Not done"; }
.toast-title.error::before { content: "Error"; }
html[lang^="zh"] .toast-title.info::before { content: "提示"; }
html[lang^="zh"] .toast-title.warning::before { content: "未完成"; }
html[lang^="zh"] .toast-title.error::before { content: "错误"; }
"""

_ASSETS = Path(gr.__file__).parent / "templates" / "frontend" / "assets"


def core_module_name() -> str:
    """The hashed file name of Gradio's front-end core module (it exports ``changeLocale``)."""
    found = sorted(p.name for p in _ASSETS.glob("core-*.js"))
    return found[0] if found else ""


HEAD_JS = """
<script>
(() => {
  const CORE = "%(core)s";
  const LANG_KEY = "prefstudio-lang";
  window.prefstudioSetLang = async (code) => {
    if (!code) return;
    localStorage.setItem(LANG_KEY, code);
    const root = ((window.gradio_config && window.gradio_config.root) || location.origin).replace(/\\/$/, "");
    try {
      const core = await import(root + "/assets/" + CORE);
      await core.changeLocale(code);
    } catch (err) {
      console.warn("prefstudio: language switch failed, use Settings in the footer", err);
    }
  };
  window.prefstudioStoredLang = () => localStorage.getItem(LANG_KEY) || "";

  // Gradio translates a tab's title only while the tab is rendered, so titles of tabs not on
  // screen would keep the old language: set them whenever the page or its language changes.
  const TABS = %(tabs)s;
  const relabelTabs = () => {
    const zh = (document.documentElement.lang || "").startsWith("zh");
    document.querySelectorAll("[role=tab][data-tab-id]").forEach((button) => {
      const names = TABS[button.dataset.tabId];
      const node = names && [...button.childNodes].find((n) => n.nodeType === Node.TEXT_NODE);
      if (node && node.nodeValue !== names[+zh]) node.nodeValue = names[+zh];
    });
  };
  new MutationObserver(relabelTabs).observe(document.documentElement,
    {subtree: true, childList: true, attributes: true, attributeFilter: ["lang"]});

  // Keyboard shortcuts: click the same controls a mouse would, so the server sees no difference.
  // Response letters follow the visible cards in page order (A = first card shown).
  let picked = 0;
  const visible = (el) => el && el.offsetParent !== null;
  const cards = () => [...document.querySelectorAll(".ps-slot")].filter(visible);
  const clickRadio = (root, value) => {
    const input = root && root.querySelector(`input[type=radio][value="${value}"]`);
    if (input) { input.click(); return true; }
    return false;
  };
  const clickButton = (id) => { const b = document.getElementById(id); if (visible(b)) b.click(); };
  const highlight = () => cards().forEach((el, i) => el.classList.toggle("ps-selected", i === picked));
  let shownTask = "";
  new MutationObserver(() => {  // a new task on screen: start again at response A
    const info = document.getElementById("ps-task-info");
    const now = info ? info.textContent : "";
    if (now !== shownTask) { shownTask = now; picked = 0; highlight(); }
  }).observe(document.documentElement, {subtree: true, childList: true});
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable ||
              (t.tagName === "INPUT" && t.type !== "radio"))) return;
    if (!visible(document.getElementById("ps-submit")) && !visible(document.getElementById("ps-skip"))) return;
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    const pairwise = visible(document.getElementById("ps-choice"));
    const choice = document.getElementById("ps-choice"), margin = document.getElementById("ps-margin");
    let handled = true;
    if (key === "Enter") clickButton("ps-submit");
    else if (key === "s") clickButton("ps-skip");
    else if (key === "u") clickButton("ps-undo");
    else if (pairwise && key === "a") clickRadio(choice, "A");
    else if (pairwise && key === "b") clickRadio(choice, "B");
    else if (pairwise && key === "t") clickRadio(choice, "tie");
    else if (pairwise && key >= "1" && key <= "4" && key.length === 1)
      clickRadio(margin, ["significantly", "better", "slightly", "negligibly"][+key - 1]);
    else if (!pairwise && key.length === 1 && key >= "a" && key <= "i" && key.charCodeAt(0) - 97 < cards().length) {
      picked = key.charCodeAt(0) - 97; highlight();
    } else if (!pairwise && key.length === 1 && key >= "1" && key <= "9") {
      const all = cards();
      if (clickRadio(all[picked] && all[picked].querySelector(".ps-rank"), key)) {
        if (picked + 1 < all.length) picked += 1;
        highlight();
      }
    } else handled = false;
    if (handled) ev.preventDefault();
  });
})();
</script>
"""


# Column headers of tables marked ``ps-i18n-table`` follow the page's language: the server
# sends English column names (API clients read them) and this swaps the header text in place,
# again whenever the table or the language changes.
TABLE_HEADERS_JS = """
<script>
(() => {
  const ZH = %(columns)s;
  const EN = Object.fromEntries(Object.entries(ZH).map(([en, zh]) => [zh, en]));
  const relabel = () => {
    const map = (document.documentElement.lang || "").startsWith("zh") ? ZH : EN;
    document.querySelectorAll(".ps-i18n-table th").forEach((th) => {
      const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeValue.trim();
        if (map[text] && map[text] !== text) node.nodeValue = map[text];
      }
    });
  };
  new MutationObserver(relabel).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["lang"]});
})();
</script>
"""


def head() -> str:
    tabs = {key[len("tab_"):]: list(names) for key, names in STRINGS.items() if key.startswith("tab_")}
    return (HEAD_JS % {"core": core_module_name(), "tabs": json.dumps(tabs, ensure_ascii=False)}
            + TABLE_HEADERS_JS % {"columns": json.dumps(COLUMNS_ZH, ensure_ascii=False)})


# Runs once the app is mounted: re-apply a language chosen earlier, and report it so the
# switch shows the right value.
ON_LOAD_JS = """() => {
  const stored = window.prefstudioStoredLang();
  if (stored) { window.prefstudioSetLang(stored); return stored; }
  return (document.documentElement.lang || "").startsWith("zh") ? "zh-CN" : "en";
}"""
SET_LANG_JS = "(code) => { window.prefstudioSetLang(code); }"
