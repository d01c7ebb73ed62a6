"""The Models page's pictures, drawn on the server: the lineage as a small SVG (every text in it
escaped here) and the rounds dashboard as a matplotlib PNG (an <img> of base64 data: no text
of ours or of a model's reaches the page as markup)."""
from __future__ import annotations

import base64
import io
from collections import defaultdict

from .render import bilingual, escape

COLUMNS = (("labels", "标注"), ("reward models", "奖励模型"), ("policies", "策略"),
           ("candidates", "候选"))
BOX_W, BOX_H, GAP_X, GAP_Y, TOP = 190, 44, 60, 14, 34
COLOURS = ("#e8f0fe", "#fef3e0", "#e6f4ea", "#f3e8fd")


def _cut(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n - 1] + "…"


def lineage_svg(graph: dict) -> str:
    """Four columns (labels → reward models → policies → candidates), a box per node, an
    arrow per edge. Empty graph: a sentence saying what fills it."""
    if not graph["nodes"]:
        return ('<div class="ps-msg">' + bilingual(
            "No models yet: train a reward model or a policy, and it appears here with the labels "
            "it learned from.", "还没有模型：训练奖励模型或策略后，这里会显示它及其所用的标注。")
                + "</div>")
    rows = defaultdict(list)
    for node in graph["nodes"]:
        rows[node["column"]].append(node)
    pos = {}
    for column, nodes in rows.items():
        for i, node in enumerate(nodes):
            pos[node["id"]] = (10 + column * (BOX_W + GAP_X), TOP + i * (BOX_H + GAP_Y))
    width = 10 + len(COLUMNS) * (BOX_W + GAP_X)
    height = TOP + max(len(n) for n in rows.values()) * (BOX_H + GAP_Y) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ps-lineage" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
             'font-size="12"><defs><marker id="ps-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>']
    for column, (en, zh) in enumerate(COLUMNS):
        x = 10 + column * (BOX_W + GAP_X)
        parts.append(f'<text x="{x}" y="18" font-weight="bold">{escape(en)} · {escape(zh)}</text>')
    for src, dst in graph["edges"]:
        if src in pos and dst in pos:
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            parts.append(f'<line x1="{x1 + BOX_W}" y1="{y1 + BOX_H / 2}" x2="{x2}" '
                         f'y2="{y2 + BOX_H / 2}" stroke="#666" marker-end="url(#ps-arrow)"/>')
    for node in graph["nodes"]:
        x, y = pos[node["id"]]
        parts.append(f'<g class="ps-node"><title>{escape(node["label"])}</title>'
                     f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                     f'fill="{COLOURS[node["column"]]}" stroke="#999"/>'
                     f'<text x="{x + 8}" y="{y + 18}">{escape(_cut(node["label"]))}</text>'
                     f'<text x="{x + 8}" y="{y + 35}" fill="#555">{escape(_cut(node["detail"]))}</text></g>')
    parts.append("</svg>")
    return '<div class="ps-lineage-wrap" style="overflow-x:auto">' + "".join(parts) + "</div>"


def rounds_png(rounds: list[dict]) -> str:
    """Per round: human labels collected (bars, left axis) and agreement, reward-model
    accuracy and policy win rate (lines, 0–1 on the right axis), as an <img>."""
    if not rounds:
        return ('<div class="ps-msg">' + bilingual("No rounds yet: import or generate tasks.",
                                                   "还没有轮次：请导入或生成任务。") + "</div>")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    xs = [r["round"] for r in rounds]
    fig = Figure(figsize=(7, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.bar(xs, [r["human_labels"] for r in rounds], color="#c6dafc", label="human labels")
    ax.set_xlabel("round")
    ax.set_ylabel("labels")
    ax.set_xticks(xs)
    right = ax.twinx()
    for key, colour, name in (("agreement", "#9334e6", "agreement (alpha)"),
                              ("rm_accuracy", "#e37400", "RM held-out accuracy"),
                              ("win_rate", "#188038", "policy win rate")):
        points = [(r["round"], r[key]) for r in rounds if r[key] is not None]
        if points:   # one point is drawn as a marker, so a first round shows at once
            right.plot(*zip(*points), marker="o", color=colour, label=name)
    lowest = min([0.0] + [r["agreement"] for r in rounds if r["agreement"] is not None])
    right.set_ylim(lowest - 0.05 if lowest < 0 else 0, 1.05)   # alpha can be below 0
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))   # room for the legend below the axes
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img class="ps-rounds-plot" alt="rounds" src="data:image/png;base64,{data}" '
            'style="max-width:100%"/>')
