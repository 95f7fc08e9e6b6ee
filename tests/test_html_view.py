"""`graph --format html` and `diff --format html`, opened in headless Chromium.

The pages are written by the real CLI and read in a real browser (tests/browser.py). What a
page must show is taken from `resgraph summary`, `resgraph diff` and the IR, never from the
page's own code. Without chromium or Playwright these tests fail: CI installs both (.ci/run).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium, open_file, screenshot, unfold_to
from conftest import REPO, SPECS, run_cli
from PIL import Image, ImageStat
from playwright.sync_api import BrowserContext, expect

from resgraph.html_view.compare import Changed, changes
from resgraph.html_view.render import script_json
from resgraph.pipeline import compile_spec

R50 = SPECS / "resnet50.yaml"
R50_V15 = SPECS / "resnet50_v1_5.yaml"
HOSTILE_TEXT = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
HOSTILE_FILE = "<img src=x onerror=window.pwned=3>.yaml"
HOSTILE_SPEC = f"""\
name: hostile
description: {json.dumps(HOSTILE_TEXT)}
input: {{channels: 3, height: 16, width: 16}}
shortcut: A
stem:
  - conv: {{name: conv1, out: 8, kernel: 3}}
  - bn: {{name: bn1}}
  - relu
block: basic
stages:
  - {{blocks: 1, width: 8}}
  - {{blocks: 1, width: 16, stride: 2}}
head: {{classes: 10}}
"""


def _write(tmp: Path, name: str, *args: str) -> Path:
    out = tmp / name
    result = run_cli(*args, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pages")
    hostile = tmp / HOSTILE_FILE
    hostile.write_text(HOSTILE_SPEC, encoding="utf-8")
    return {
        "r50": _write(tmp, "r50.html", "graph", str(R50), "--format", "html"),
        "diff": _write(tmp, "diff.html", "diff", str(R50), str(R50_V15), "--format", "html"),
        "hostile": _write(tmp, "hostile.html", "graph", str(hostile), "--format", "html"),
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with chromium() as context:
        yield context


def test_page_loads_offline_without_errors(browser: BrowserContext, pages: dict[str, Path]) -> None:
    for name in ("r50", "diff"):
        opened = open_file(browser, pages[name])
        assert opened.requests == [opened.url], name
        assert opened.errors == [], name
        assert opened.page.title().startswith("resnet50")


def test_every_graph_node_is_in_the_dom(browser: BrowserContext, pages: dict[str, Path]) -> None:
    graph = compile_spec(R50).graph
    page = open_file(browser, pages["r50"]).page
    names = page.eval_on_selector_all("[data-node]", "els => els.map(e => e.dataset.node)")
    assert len(names) == graph.number_of_nodes()
    assert set(names) == set(graph.nodes)


def test_page_opens_folded_and_unfolds_a_stage_then_a_block(
    browser: BrowserContext, pages: dict[str, Path]
) -> None:
    network = compile_spec(R50).network
    page = open_file(browser, pages["r50"]).page
    parts = page.locator("[data-part]")
    assert parts.evaluate_all("els => els.map(e => e.dataset.part)") == [
        "stem",
        *(s.name for s in network.stages),
        "head",
    ]
    assert parts.evaluate_all("els => els.filter(e => e.open).length") == 0
    layer1 = network.stages[0]
    for stage in network.stages:  # each folded stage says its block count
        box = page.locator(f'[data-part="{stage.name}"] > summary')
        expect(box).to_contain_text(f"{len(stage.blocks)} x ")
    first = network.blocks[layer1.blocks[0]]
    expect(page.locator(f'[data-block="{first.name}"]')).to_be_hidden()

    page.locator('[data-part="layer1"] > summary').click()
    for block in layer1.blocks:
        expect(page.locator(f'[data-block="{block}"] > details > summary')).to_be_visible()
    expect(page.locator(f'[data-node="{first.nodes[0]}"]')).to_be_hidden()

    page.locator(f'[data-block="{first.name}"] > details > summary').click()
    for node in first.nodes:
        expect(page.locator(f'[data-node="{node}"]')).to_be_visible()
    expect(page.locator(f'[data-node="{layer1.blocks[1]}.conv1"]')).to_be_hidden()


@functools.cache
def _summary() -> list[str]:
    result = run_cli("summary", str(R50))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _summary_row(name: str) -> list[str]:
    """`resgraph summary`'s cells for `name`: output, params, MACs, RF, jump, activation."""
    line = next(line for line in _summary() if line.split()[0] == name)
    cells = line.split()
    return [*cells[2:7], " ".join(cells[7:])]


def test_clicking_a_node_shows_what_summary_prints(
    browser: BrowserContext, pages: dict[str, Path]
) -> None:
    node = compile_spec(R50).network.nodes["layer1.0.conv1"]
    output, params, macs, rf, jump, activation = _summary_row(node.name)
    page = open_file(browser, pages["r50"]).page
    unfold_to(page, node.name)
    page.locator(f'[data-node="{node.name}"]').click()
    panel = page.locator("#details")
    expect(panel.locator("h2")).to_have_text(node.name)
    shown = {
        "op": node.op,
        "output": output,
        "params": params,
        "MACs": macs,
        "receptive field": rf,
        "jump": jump,
        "activation": activation,
    }
    for field, value in shown.items():
        expect(panel.locator(f'dd[data-field="{field}"]')).to_have_text(value)
    assert node.loc is not None
    expect(panel.locator('dd[data-field="spec"]')).to_contain_text(
        f"{node.loc.file}:{node.loc.line}:"
    )
    attributes = panel.locator('dd[data-field="attributes"]')
    expect(attributes).to_contain_text(f"kernel={node.attrs.kernel}")
    (source,) = node.inputs
    inputs = panel.locator('dd[data-field="inputs"]')
    expect(inputs).to_have_text(f"{source} ({_summary_row(source)[0]})")


def test_search_finds_a_folded_node(browser: BrowserContext, pages: dict[str, Path]) -> None:
    page = open_file(browser, pages["r50"]).page
    target = page.locator('[data-node="layer3.4.conv2"]')
    expect(target).to_be_hidden()
    page.locator("#search").fill("layer3.4.conv")
    results = page.locator("#results button")
    expect(results).to_have_text(["layer3.4.conv1", "layer3.4.conv2", "layer3.4.conv3"])
    results.nth(1).click()
    expect(target).to_be_visible()
    expect(target).to_be_in_viewport()
    expect(page.locator("#details h2")).to_have_text("layer3.4.conv2")
    page.locator("#search").fill("fc")
    page.locator("#search").press("Enter")
    expect(page.locator('[data-node="fc"]')).to_be_visible()
    expect(page.locator("#details h2")).to_have_text("fc")


def test_shortcuts_are_drawn_as_the_paper_draws_them(
    browser: BrowserContext, pages: dict[str, Path]
) -> None:
    networks = {"r50": compile_spec(R50).network}
    networks["hostile"] = compile_spec(pages["hostile"].parent / HOSTILE_FILE).network
    styles = {"identity": "solid", "zero_pad": "solid", "projection": "dashed"}
    seen = set()
    for name, network in networks.items():
        page = open_file(browser, pages[name]).page
        for block in network.blocks.values():
            arc = page.locator(f'[data-block="{block.name}"] > .arc')
            style = arc.evaluate("e => getComputedStyle(e).borderTopStyle")
            assert style == styles[block.shortcut.kind], (block.name, block.shortcut.kind)
            marker = arc.locator(".option")
            expect(marker).to_have_count(int(block.shortcut.kind == "zero_pad"))
            seen.add(block.shortcut.kind)
    assert seen == set(styles)


def test_cost_bars_show_each_parts_share(browser: BrowserContext, pages: dict[str, Path]) -> None:
    graph = compile_spec(R50).graph
    stages = dict(graph.graph["stages"])
    page = open_file(browser, pages["r50"]).page
    for what in ("params", "macs"):
        share = {}
        for stage, blocks in stages.items():
            nodes = [n for n, d in graph.nodes(data=True) if d.get("block") in blocks]
            share[stage] = sum(graph.nodes[n][what] for n in nodes) / graph.graph[what]
            label = page.locator(f'[data-part="{stage}"] .fill.{what} >> xpath=../../span[3]')
            expect(label).to_have_text(f"{100 * share[stage]:.1f}%")
        widest = max(share, key=share.__getitem__)
        bar = page.locator(f'[data-part="{widest}"] .fill.{what}')
        assert bar.evaluate("e => parseFloat(e.style.width)") == 100


def test_diff_page_marks_the_blocks_that_changed(
    browser: BrowserContext, pages: dict[str, Path]
) -> None:
    a, b = compile_spec(R50).network, compile_spec(R50_V15).network

    def differs(block: str) -> bool:
        return any(
            (vars(a.nodes[n].attrs), a.nodes[n].shape) != (vars(b.nodes[n].attrs), b.nodes[n].shape)
            for n in a.blocks[block].nodes
        )

    expected = {name for name in a.blocks if differs(name)}
    assert expected  # the v1.5 stride moves within each downsampling block
    page = open_file(browser, pages["diff"]).page
    for side in ("a", "b"):
        marked = page.locator(f'[data-network="{side}"] .block.changed').evaluate_all(
            "els => els.map(e => e.dataset.block)"
        )
        assert set(marked) == expected, side

    report = run_cli("diff", str(R50), str(R50_V15))
    expect(page.locator("pre.report")).to_have_text(report.stdout.rstrip("\n"))
    parts = json.loads(run_cli("diff", str(R50), str(R50_V15), "--json").stdout)["parts"]
    changed = {p["name"] for p in parts if p["changes"]}
    for side in ("a", "b"):
        marked = page.locator(f'[data-network="{side}"] .part.changed').evaluate_all(
            "els => els.map(e => e.dataset.part)"
        )
        assert set(marked) == changed, side
    note = page.locator('[data-network="a"] [data-part="layer2"] .note')
    expect(note).to_have_text("changed: stride_on conv1 -> conv2")

    page.locator('[data-network="a"] [data-part="layer2"] > summary').click()  # both unfold
    expect(page.locator('[data-network="b"] [data-block="layer2.0"]')).to_be_visible()


def test_hostile_spec_text_is_shown_not_executed(
    browser: BrowserContext, pages: dict[str, Path]
) -> None:
    opened = open_file(browser, pages["hostile"])
    page = opened.page
    assert opened.requests == [opened.url]  # an executed <img src=x> would have asked for x
    assert page.evaluate("typeof window.pwned") == "undefined"
    expect(page.locator(".description")).to_have_text(HOSTILE_TEXT)
    expect(page.locator(".source")).to_contain_text(HOSTILE_FILE)
    page.locator('[data-node="input"]').click()
    expect(page.locator('dd[data-field="spec"]')).to_contain_text(HOSTILE_FILE)
    assert page.locator("script").count() == 2  # the page's data and its own script
    policy = page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
    assert policy is not None and "default-src 'none'" in policy
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert opened.errors == []


def test_readme_screenshot_is_not_blank(browser: BrowserContext, pages: dict[str, Path]) -> None:
    png = pages["r50"].with_suffix(".png")
    opened = screenshot(browser, pages["r50"], png)
    assert opened.errors == []
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    assert min(ImageStat.Stat(image.convert("L")).stddev) > 20
    assert len(image.getcolors(1 << 20) or ()) > 100  # text, boxes, bars: not a flat fill
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/figures/resnet50_html.png" in readme
    assert Image.open(REPO / "docs/figures/resnet50_html.png").size == image.size


def test_resnet152_page_is_one_small_self_contained_file(tmp_path: Path) -> None:
    page = _write(tmp_path, "r152.html", "graph", "resnet152", "--format", "html")
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 512 * 1024  # the issue asks for "well under 1 MB"
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|https?:", text, re.IGNORECASE)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = run_cli("graph", str(R50), "--format", "html", "-o", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is a folder" in result.stderr
    result = run_cli("diff", str(R50), str(tmp_path / "missing.yaml"), "--format", "html")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = run_cli("diff", str(R50), str(R50_V15), "--json", "--format", "html")
    assert result.returncode == 2


def test_data_block_cannot_end_its_script_element() -> None:
    hostile = {"text": "</script><!-- <script> & \u2028", "n": [1, 2]}
    embedded = str(script_json(hostile))
    assert not set("<>&") & set(embedded)
    assert json.loads(embedded) == hostile


def test_compare_marks_only_what_differs() -> None:
    a = compile_spec("resnet18").network
    same_a, same_b = changes(a, compile_spec("resnet18").network)
    assert same_a == same_b == Changed()
    b = compile_spec("resnet18", ["stages.3.blocks=3"]).network
    changed_a, changed_b = changes(a, b)
    assert changed_a == Changed()
    assert changed_b.blocks == {"layer4.2"}
    assert changed_b.nodes == set(b.blocks["layer4.2"].nodes)
