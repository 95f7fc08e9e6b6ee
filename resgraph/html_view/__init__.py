"""The network as one self-contained, interactive HTML page (`graph --format html`), and two
networks side by side (`diff --format html`)."""

from __future__ import annotations

from resgraph.html_view.render import diff_page, graph_page

__all__ = ["diff_page", "graph_page"]
