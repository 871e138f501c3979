"""report.html and `analyze --html`: self-contained pages with the numbers of the run or of the analysis, and
(where Chromium is installed) rendered by a real browser: the page loads, its images decode, every group has
its row and its cell in the strip."""
import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from onnxoto import graph, groups
from onnxoto.cli import main
from onnxoto.prune import prune
from onnxoto.report.analysis_html import analysis_html, reason_kind
from onnxoto.report.html import report_html
from onnxoto.report.prune import report_json, write_report

sys.path.insert(0, os.path.dirname(__file__))
from edge_helpers import Net  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "onnxoto", "data")
MODELS = os.path.join(ROOT, "models")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def deep_resnet(blocks=150, width=8, blocked_every=10):
    """A generated network of hundreds of layers: residual blocks, every tenth behind an operator without a
    rule (DepthToSpace/SpaceToDepth), so prunable and blocked groups alternate along it."""
    net = Net()
    x = net.conv(net.input("x", ("N", 3, 8, 8)), 3, width)
    for k in range(blocks):
        if k % blocked_every == blocked_every - 1:
            x = net.op("SpaceToDepth", [net.op("DepthToSpace", [x], blocksize=2)], blocksize=2)
        h = net.op("Relu", [net.conv(x, width, width)])
        x = net.op("Relu", [net.op("Add", [x, net.conv(h, width, width)])])
    return net.model(net.op("ReduceMean", [x], axes=[2, 3], keepdims=0))


@pytest.fixture(scope="module")
def pruned_report(tmp_path_factory):
    """A real prune run of the bundled ResNet (256 images, 2 epochs) and its report folder."""
    folder = tmp_path_factory.mktemp("report")
    for name, n in (("train", 256), ("test", 128)):
        with np.load(os.path.join(DATA, f"fmnist_{name}.npz"), allow_pickle=False) as d:
            np.savez(folder / f"{name}.npz", x=d["x"][:n], labels=d["labels"][:n])
    result = prune(os.path.join(DATA, "fmnist_resnet.onnx"), str(folder / "train.npz"), str(folder / "small.onnx"),
                   val=str(folder / "test.npz"), epochs=2, batch_size=32, target_flops=0.4, round_to=4,
                   log=lambda line: None)
    write_report(result, str(folder))
    return folder, result


def embedded_pngs(page):
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def png_size(png):
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_report_html_is_one_file_with_the_runs_numbers_and_three_plots(pruned_report):
    folder, result = pruned_report
    page = (folder / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing loaded from elsewhere
    pngs = embedded_pngs(page)
    assert len(pngs) == 3  # dense/pruned side by side, the training curve, the kept widths
    assert all(w >= 400 and h >= 150 for w, h in map(png_size, pngs))
    data = json.loads((folder / "report.json").read_text())
    assert len(data["trace"]) == data["schedule"]["total"]  # a short run keeps every step
    assert data["schedule"]["start"] < data["schedule"]["end"] <= data["schedule"]["total"]
    for group in result.groups:  # the kept widths' table
        assert f"<td>{group['id']}</td><td>{group['layer']}</td><td>{group['channels']}</td>" \
               f"<td>{group['kept']}</td>" in page
    assert f"{result.pruned['metric']:.4f}" in page and f"{result.dense['params'] / 1e3:.2f}k" in page


def test_report_html_without_matplotlib_says_how_to_get_the_plots(pruned_report):
    folder, _ = pruned_report
    script = ("import json, sys; sys.modules['matplotlib'] = None\n"  # import matplotlib raises ImportError
              "from onnxoto.report.html import report_html\n"
              f"print(report_html(json.load(open({str(folder / 'report.json')!r}))))")
    page = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert embedded_pngs(page) == []
    assert page.count("pip install 'onnxoto[plot]'") == 1
    assert "<td>FLOPs</td>" in page  # the numbers are still there


@pytest.mark.parametrize("make", [lambda: graph.load(os.path.join(MODELS, "transformer_nnlayer.onnx")),
                                  lambda: graph.Model.from_proto(deep_resnet(), "deep_resnet")],
                         ids=["transformer_nnlayer", "deep_resnet"])
def test_analyze_html_lists_every_group_in_layer_order_with_its_state(make):
    analysis = groups.analyze(make())
    page = analysis_html(analysis)
    rows = re.findall(r'<tr id="g\d+" class="group"><td style="background:([^"]+)"></td><td>\d+</td>'
                      r'<td class="name" title="([^"]*)">[^<]*</td><td class="name" title="([^"]*)">', page)
    assert len(rows) == len(analysis.groups) == page.count('<a href="#g')
    position = {node.name: k for k, node in enumerate(analysis.model.proto.graph.node)}
    order = [position[layer] for _, layer, _ in rows]
    assert order == sorted(order)
    legend = dict((html.unescape(kind), colour) for colour, kind in
                  re.findall(r'<span><i style="background:([^"]+)"></i>([^<]*?) \(\d+\)</span>', page))
    by_id = {g.id: g for g in analysis.groups}
    for colour, _, gid in rows:  # prunable: a shade of green; blocked: the colour of its reason in the legend
        group = by_id[html.unescape(gid)]
        if group.prunable:
            assert colour.startswith("rgba(46, 139, 87,")
        else:
            assert colour == legend[reason_kind(group.reason)] and html.escape(group.reason) in page
    assert any(not g.prunable for g in analysis.groups) and any(g.prunable for g in analysis.groups)


def test_analyze_html_of_hundreds_of_layers(tmp_path):
    model = tmp_path / "deep.onnx"
    import onnx
    onnx.save(deep_resnet(), str(model))
    out = tmp_path / "deep.html"
    result = CliRunner().invoke(main, ["analyze", str(model), "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    analysis = groups.analyze(graph.load(str(model)))
    assert len(analysis.model.proto.graph.node) > 700 and len(analysis.groups) > 150
    assert (f"{len(analysis.model.proto.graph.node)} nodes" in page
            and f"{len(analysis.prunable)} of {len(analysis.groups)} groups prunable" in page)
    blocked_by_rule = sum(g.reason == "no rule for SpaceToDepth" for g in analysis.groups)
    assert blocked_by_rule == 15 and f"no rule for SpaceToDepth ({blocked_by_rule})" in page  # one per 10 blocks
    missing = CliRunner().invoke(main, ["analyze", str(model), "--html", str(tmp_path / "no" / "such.html")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


# --- in a real browser ----------------------------------------------------------------------------------

PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images], cells = [...document.querySelectorAll(".strip a")];
  document.body.setAttribute("data-probe", JSON.stringify({
    images: images.length, decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    rows: document.querySelectorAll("tr.group").length,
    cells: cells.filter(c => c.getBoundingClientRect().width > 0 && c.getBoundingClientRect().height > 0).length,
    overflow: document.documentElement.scrollWidth > window.innerWidth}));
});</script>"""


def render(page, tmp_path, width=1200):
    """(what the probe measured in Chromium, the screenshot's size)."""
    path = tmp_path / "page.html"
    path.write_text(page.replace("</body>", f"{PROBE}</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    probe = re.search(r'data-probe="([^"]+)"', dom)
    assert probe, dom[:500]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120)
    return json.loads(html.unescape(probe.group(1))), png_size(shot.read_bytes())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_renders_the_report_with_its_images(pruned_report, tmp_path):
    folder, _ = pruned_report
    probe, size = render((folder / "report.html").read_text(), tmp_path)
    assert probe["images"] == 3 and probe["decoded"] == 3
    assert not probe["overflow"] and size == (1200, 900)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_renders_every_group_of_a_large_analysis(tmp_path):
    analysis = groups.analyze(graph.Model.from_proto(deep_resnet(), "deep_resnet"))
    probe, _ = render(analysis_html(analysis), tmp_path)
    assert probe["rows"] == probe["cells"] == len(analysis.groups)
    assert not probe["overflow"]
