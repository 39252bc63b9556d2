"""A MkDocs hook: the docstrings' Sphinx roles rendered as links to the reference.

smoothapi's docstrings cross-reference with Sphinx roles (``:class:`~smoothapi.RedisStore```).
mkdocstrings renders docstrings as Markdown, where a role would show as the literal text
``:class:`` before a code span.  This hook turns each ``:role:`<code>target</code>`` of a
rendered page into the code span alone, linked through mkdocs-autorefs when the target is
documented on the site (an optional reference: no warning when it is not).  ``~`` keeps the
last name only, as in Sphinx.
"""

from __future__ import annotations

import html
import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _replace(match: re.Match[str]) -> str:
    tilde, target, call = match.group(1), match.group(2), match.group(3) or ""
    shown = (target.rsplit(".", 1)[-1] if tilde else target) + call
    return (
        f'<autoref identifier="{html.escape(target)}" optional>'
        f"<code>{html.escape(shown)}</code></autoref>"
    )


def on_page_content(html_text: str, **_kwargs: Any) -> str:
    return _ROLE.sub(_replace, html_text)
