"""A griffe extension for the docs site: rendr's docstrings use Sphinx roles
(``:class:`~rendr.Conn```, ``:meth:`dial```, ``:func:`listen```...), which Markdown
would show as they are.  Each becomes an *optional* mkdocs-autorefs cross-reference:
a link where the target is documented on the site, plain code where it is not (the
standard library, anyio...), so an unknown target is never a warning.  reST's
literal-block marker (a paragraph ending in ``::``) becomes a plain colon: the
indented block after it is already a Markdown code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL_ALONE = re.compile(r"^[ \t]*::[ \t]*$", re.MULTILINE)
_LITERAL_END = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`(~?)([^`<>]+)`")


def _identifier(obj: griffe.Object, target: str) -> str:
    """The full dotted path ``target`` most likely means, seen from ``obj``."""
    target = target.strip().rstrip("()")
    if target.startswith("."):
        target = target.lstrip(".")
    elif "." in target and target.split(".", 1)[0] not in obj.module.members:
        return target  # already a full path (rendr.X, asyncio.X, anyio.X...)
    scope: griffe.Object | None = obj if obj.is_class else obj.parent
    while scope is not None:  # the nearest class or module that has the name
        if target.split(".", 1)[0] in scope.members:
            return f"{scope.path}.{target}"
        scope = scope.parent
    return f"{obj.module.path}.{target}"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring (see the module)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        if "::" in docstring.value:
            text = _LITERAL_ALONE.sub("", docstring.value)
            docstring.value = _LITERAL_END.sub(r"\1:", text)
        if ":`" not in docstring.value:
            return

        def replace(match: re.Match[str]) -> str:
            short, target = match.group(1), match.group(2)
            identifier = _identifier(obj, target)
            title = target.rsplit(".", 1)[-1] if short else target
            return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

        docstring.value = _ROLE.sub(replace, docstring.value)
