"""Untrusted Markdown renders as safe HTML: links work, nothing runs, no request leaves."""
import pytest

from annotate.ui.render import chat_html, markdown_html, response_html


def test_http_and_mailto_links_render_as_safe_anchors():
    # this raised TypeError in the link renderer and blanked the annotator's whole view
    out = markdown_html("See [the docs](https://example.com) or [mail](mailto:a@b.c).")
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow" target="_blank">' \
           'the docs</a>' in out
    assert 'href="mailto:a@b.c"' in out


@pytest.mark.parametrize("text, forbidden", [
    ("[x](javascript:alert(1))", "href=\"javascript"),
    ("[x](data:text/html,<script>alert(1)</script>)", "<script"),
    ("![img](https://example.com/a.png)", "<img"),
    ('<img src=x onerror="alert(1)">', "<img"),
    ("<script>alert(1)</script>", "<script"),
    ('<a href="https://e.com" onclick="alert(1)">x</a>', "<a "),
    ("```html\n<script>alert(1)</script>\n```", "<script"),
    ("| a | b |\n|---|---|\n| <b onmouseover=alert(1)>x</b> | ${1+1} |", "<b "),
    ("<iframe src='https://e.com'></iframe>", "<iframe"),
    ("{{constructor.constructor('alert(1)')()}}", "{{"),
])
def test_markdown_of_every_kind_never_yields_live_markup(text, forbidden):
    for html in (markdown_html(text), response_html("A", text),
                 chat_html([{"role": "user", "content": text}])):
        assert forbidden not in html, html


def test_tables_and_code_still_render():
    out = markdown_html("| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nx < y\n```")
    assert "<table>" in out and "<td>1</td>" in out
    assert "<code>x &lt; y\n</code>" in out
