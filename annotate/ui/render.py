"""Untrusted model text → safe HTML: Markdown with code blocks, never a live tag or script.

Responses and prompts come from models and import files, so they may hold ``<script>``,
``<img onerror=…>``, ``javascript:`` links or any raw HTML. We do not rely on a component's
default sanitiser: markdown-it renders with raw HTML *disabled* (every ``<`` in the text
becomes ``&lt;``), links are kept only for http(s)/mailto, images are not rendered at all
(no request leaves the annotator's browser), and ``$ { }`` are written as character
references so no front-end template syntax survives either. Whatever reaches ``gr.HTML`` is
markup we produced.
"""
from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

_SAFE_LINK = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)
_TEMPLATE_CHARS = str.maketrans({"$": "&#36;", "{": "&#123;", "}": "&#125;", "`": "&#96;"})


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url.strip()))

    # markdown-it binds a render rule to its renderer, so the rule gets the renderer first
    # (a four-argument rule raised TypeError on every link and blanked the annotator's view)
    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        tokens[idx].attrSet("target", "_blank")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


_MD = _markdown()


def markdown_html(text: str) -> str:
    """Markdown → HTML with every piece of raw HTML in ``text`` shown as text."""
    return _MD.render(text or "").translate(_TEMPLATE_CHARS)


def escape(text: object) -> str:
    """Plain text → HTML text (for ids, names and other short strings)."""
    return html.escape(str(text), quote=True).translate(_TEMPLATE_CHARS)


def bilingual(en: str, zh: str) -> str:
    """A phrase in both languages; CSS shows the one matching the page's language."""
    return f'<span class="l-en">{escape(en)}</span><span class="l-zh">{escape(zh)}</span>'


ROLE_NAMES = {"system": ("System", "系统"), "user": ("User", "用户"),
              "assistant": ("Assistant", "助手")}


def chat_html(messages: list[dict]) -> str:
    """The prompt as a chat: one bubble per turn, the last user turn is the one answered."""
    parts = ['<div class="ps-chat">']
    for m in messages:
        role = m.get("role", "user")
        en, zh = ROLE_NAMES.get(role, (role, role))
        parts.append(f'<div class="ps-turn ps-{escape(role)}"><div class="ps-role">'
                     f'{bilingual(en, zh)}</div><div class="ps-md">{markdown_html(m.get("content", ""))}'
                     f'</div></div>')
    parts.append("</div>")
    return "".join(parts)


def response_html(letter: str, text: str) -> str:
    return (f'<div class="ps-card"><div class="ps-letter">{escape(letter)}</div>'
            f'<div class="ps-md">{markdown_html(text)}</div></div>')


def progress_html(done_today: int, done_total: int, left: int) -> str:
    """Done today, done in total, left in the queue, and a bar of done / (done + left)."""
    total = done_total + left
    pct = 100.0 * done_total / total if total else 100.0
    return (f'<div class="ps-progress"><div class="ps-bar"><div class="ps-fill" '
            f'style="width:{pct:.1f}%"></div></div><div class="ps-counts">'
            f'<span id="ps-done-today">{bilingual("today", "今天")} <b>{int(done_today)}</b></span>'
            f'<span id="ps-done-total">{bilingual("done", "已完成")} <b>{int(done_total)}</b></span>'
            f'<span id="ps-left">{bilingual("left in queue", "队列剩余")} <b>{int(left)}</b></span>'
            f'</div></div>')


def message_html(en: str, zh: str, kind: str = "info") -> str:
    return f'<div class="ps-msg ps-{escape(kind)}">{bilingual(en, zh)}</div>'
