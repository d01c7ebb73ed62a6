"""Small pieces every view uses: the caller's name, turning store errors into UI errors."""
from __future__ import annotations

import functools
import html
import inspect

import anyio
import gradio as gr
import pandas as pd

from ..store import StoreError


def username(request: gr.Request | None) -> str | None:
    """The logged-in user Gradio attached to this request (None when there is none)."""
    return getattr(request, "username", None) if request is not None else None


async def claim_next_view(studio, user: str) -> dict | None:
    """``studio.next_task`` for handlers on the event loop: the claim is in memory, the texts
    usually too (else the database is read in a worker thread). None when nothing is left."""
    task_id = studio.claim_next(user)
    if task_id is None:
        return None
    view = studio.cached_task_view(user, task_id)
    if view is None:
        view = await anyio.to_thread.run_sync(studio.task_view, user, task_id)
    return view


def private(name: str) -> dict:
    """Event options of a UI-only handler: hidden from the API docs, under a ``ui_`` name so it
    never takes a public endpoint's name. (Still reachable over HTTP: it checks roles too.)"""
    return {"api_visibility": "private", "api_name": f"ui_{name}"}


def _on_store_error(fn, handle):
    """``fn`` (sync or ``async def``) with a StoreError it raises given to ``handle(err)``,
    whose return value (or exception) stands for the handler's."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except StoreError as err:
                return handle(err)
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StoreError as err:
            return handle(err)
    return wrapper


def _ui_error(err: StoreError) -> gr.Error:
    return gr.Error(html.escape(str(err), quote=False), print_exception=False)


def shows_errors(fn):
    """Report a refused or invalid action as one line in the UI / to the API client.

    The message is HTML-escaped (Gradio renders error text as HTML, and messages can quote
    file contents or ids a caller chose). Works for ``async def`` handlers too.
    """
    def handle(err: StoreError):
        raise _ui_error(err) from None
    return _on_store_error(fn, handle)


def keeps_view(fn):
    """Like ``shows_errors`` for handlers of views a person is using: a refused action shows
    one warning toast (in the page's language) and leaves every output as it was.

    Raising ``gr.Error`` would mark all the handler's outputs as errored (a red badge over each
    until a reload), hiding the task or the table the person was working on. A refusal because
    of the caller's role still raises: that is not a person using the page.
    """
    from .service import Refused
    from .text import bilingual_message

    def handle(err: StoreError):
        if isinstance(err, Refused):
            raise _ui_error(err) from None
        gr.Warning(bilingual_message(str(err)), duration=6, title="")
        return gr.skip()  # one skip() leaves every output unchanged
    return _on_store_error(fn, handle)


def notify(en: str, zh: str, duration: float = 3) -> None:
    """An info toast in the page's language (both texts sent, CSS shows one)."""
    from .render import bilingual
    gr.Info(bilingual(en, zh), duration=duration, title="")


def frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows → a DataFrame of strings and numbers that gr.Dataframe shows as plain text."""
    df = pd.DataFrame(rows, columns=columns)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(_cell)
    return df


def _cell(value) -> str:
    """A ranking [[a], [b, c]] reads 'a > b = c'; other lists 'a, b'; None is empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):
            return " > ".join(" = ".join(map(str, g)) for g in value)
        return ", ".join(map(str, value))
    return str(value)
