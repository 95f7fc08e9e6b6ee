"""The page as text: templates/graph.html.jinja and diff.html.jinja over the view records.

Everything is inline (style, script, data) so the file works offline and as a CI artefact.
Spec text (descriptions, file names) only ever reaches the page escaped: as HTML text by
jinja's autoescape, or inside the JSON data block with `<`, `>` and `&` as \\u escapes. A
Content-Security-Policy allows no request at all and runs only the page's own script (by
its hash), so even a missed escape could not load or execute anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from resgraph.backends.pytorch.emit import templates_folder
from resgraph.design import diff, diff_text, note
from resgraph.html_view.compare import changes
from resgraph.html_view.model import FIELDS, NetworkView, network_view

if TYPE_CHECKING:
    from resgraph.pipeline import Compiled

SCRIPT = "html_view.js"
STYLE = "html_view.css"


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_folder())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _source(name: str) -> str:
    """A file under templates/ as it is, not rendered: the page's script and style."""
    env = _environment()
    assert env.loader is not None
    return env.loader.get_source(env, name)[0]


def script_json(data: Any) -> Markup:
    """JSON that cannot end its <script> element or open a comment or entity in it."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'"
    )


def _render(template: str, views: list[NetworkView], **context: Any) -> str:
    script = _source(SCRIPT)
    data = {
        "fields": list(FIELDS),
        "networks": {v.key: {"name": v.name, "nodes": v.details} for v in views},
    }
    return (
        _environment()
        .get_template(template)
        .render(
            views=views,
            csp=_csp(script),
            style=Markup(_source(STYLE)),
            script=Markup(script),
            data=script_json(data),
            **context,
        )
    )


def graph_page(compiled: Compiled) -> str:
    """One network, folded into stem, stages and head, every node a click away."""
    return _render("graph.html.jinja", [network_view(compiled)])


def diff_page(a: Compiled, b: Compiled) -> str:
    """Two networks side by side, changed stages and blocks marked, `resgraph diff`'s report
    on top."""
    notes = [note(d) for d in diff(a.graph, b.graph)]
    changed_a, changed_b = changes(a.network, b.network)
    views = [
        network_view(a, "a", changed_a, notes),
        network_view(b, "b", changed_b, notes),
    ]
    return _render("diff.html.jinja", views, report=diff_text(a.graph, b.graph))
