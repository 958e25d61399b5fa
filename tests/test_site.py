"""The interactive leaderboard page (``leaderboard/site/index.html``, ``matcv.leaderboard.site``): written by
``matcv leaderboard`` from run records, self-contained, escaped, and working in headless Chromium (tabs, sorting,
model pages, CSV export, no console errors)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from matcv.leaderboard.rebuild import site_dir, write_all_leaderboards
from matcv.leaderboard.site import dataset_title, model_page_id

TASK = "siteprobe"  # no task YAML: the tables read their metric and direction from the records
SCORES = {"panels-3ce423fab26ec970": {"alpha": 0.9, "beta": 0.7, "<b>gamma</b>": 0.5},
          "nasa-superalloy": {"alpha": 0.6, "beta": 0.8, "<b>gamma</b>": 0.4, "delta": 0.95}}
CARD = Path(__file__).parents[1] / "leaderboard" / "cards" / "segmentation" / "unet.yaml"


def _record(dataset: str, model: str, fold: int, dice: float, fit_s: float) -> dict:
    return {"key": f"{model}|{fold}|{dataset}", "task": TASK, "dataset": dataset, "profile": "quick",
            "model": model, "fold": fold, "status": "ok", "config_hash": "cfg", "fold_manifest_sha256": "a" * 64,
            "fold_manifest": "folds.json", "data_sha256": "b" * 64, "metrics": {"dice": dice},
            "durations": {"fit_s": fit_s, "test_s": 0.1, "total_s": fit_s + 0.1}}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    runs, out, cards = tmp / "runs", tmp / "results", tmp / "cards"
    for dataset, models in SCORES.items():
        folder = runs / TASK / dataset / "quick"
        folder.mkdir(parents=True)
        lines = [_record(dataset, m, fold, s + 0.01 * fold, 10.0 * (i + 1))
                 for i, (m, s) in enumerate(models.items()) for fold in range(3)]
        (folder / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    figure = runs / TASK / "nasa-superalloy" / "quick" / "alpha" / "fold-0" / "test_examples.png"
    figure.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 1600, 3), dtype=np.uint8)).save(figure)
    card = yaml.safe_load(CARD.read_text())
    card.update(name="alpha", task=TASK, authors=["A. Author <script>"], code="https://example.org/alpha")
    (cards / TASK).mkdir(parents=True)
    (cards / TASK / "alpha.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    write_all_leaderboards(runs, out, submissions_dir=None, cards_dir=cards)
    page = site_dir(out) / "index.html"
    assert page.is_file()
    return {"page": page, "text": page.read_text(encoding="utf-8"), "tmp": tmp}


def test_page_is_self_contained_escaped_and_holds_every_section(site):
    text = site["text"]
    assert not re.search(r"""<script[^>]+src=["']?https?:""", text)  # libraries inlined, nothing fetched
    assert "connect-src 'none'" in text
    assert "&lt;b&gt;gamma&lt;/b&gt;" in text and "<b>gamma</b>" not in text
    assert "A. Author &lt;script&gt;" in text and 'href="https://doi.org/10.1007/978-3-319-24574-4_28"' in text
    assert dataset_title(TASK, "nasa-superalloy") == "NASA Ni-superalloy (Stuckner et al. 2022)"
    assert "NASA Ni-superalloy (Stuckner et al. 2022) (quick)" in text
    assert "<code>panels-3ce423fab26ec970</code>" in text  # the hash stays visible as provenance
    assert "Across benchmarks: siteprobe" in text and "Critical-difference diagram" in text
    assert "Report: <code>siteprobe__nasa-superalloy__quick.md</code>" in text
    assert f'id="{model_page_id(TASK, "alpha")}"' in text
    figure = re.search(r'<img alt="test_examples.png" src="data:image/png;base64,([^"]+)"', text)
    assert figure is not None  # the run's example figure, downscaled
    with Image.open(BytesIO(base64.b64decode(figure.group(1)))) as image:
        assert image.width == 480
    assert "could not be shown" not in text


def _chromium_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (`make browser` installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    return chromium, sync_api


def test_page_works_in_headless_chromium(site):
    chromium, sync_api = _chromium_or_skip()
    board = "#board-" + _board_slug(site["text"], "nasa-superalloy")
    other = "#board-" + _board_slug(site["text"], "panels-3ce423fab26ec970")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            problems = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(site["page"].resolve().as_uri())
            page.wait_for_selector(f"{board} table.dataTable", state="attached", timeout=20_000)
            assert page.locator("section.home").is_visible()

            page.click(f'nav a[href="{board}"]')  # tabs: one benchmark shown, the others hidden
            assert page.locator(board).is_visible() and not page.locator(other).is_visible()
            assert not page.locator("section.home").is_visible()

            table = page.locator(f'{board} table.dataTable[id^="table-"]')
            models = lambda: table.locator("tbody tr td:nth-child(2)").all_inner_texts()  # noqa: E731
            assert models() == ["delta", "beta", "alpha", "<b>gamma</b>"]  # ranked
            header = table.locator("thead th", has_text="dice mean")
            header.click()
            sync_api.expect(header).to_have_class(re.compile("dt-ordering-asc"))
            assert models() == ["<b>gamma</b>", "alpha", "beta", "delta"]  # ascending
            page.wait_for_timeout(400)  # two clicks in a row would be a double click
            header.click()
            sync_api.expect(header).to_have_class(re.compile("dt-ordering-desc"))
            assert models() == ["delta", "beta", "alpha", "<b>gamma</b>"]

            with page.expect_download() as download:  # the table's CSV button
                page.locator(f"{board} .dt-buttons button", has_text="CSV").first.click()
            csv = Path(download.value.path()).read_text(encoding="utf-8-sig")
            lines = csv.strip().splitlines()
            assert "model" in lines[0] and "dice mean" in lines[0] and len(lines) == 5
            assert lines[1].split(",")[1].strip('"') == "delta"

            table.locator("a.model-link", has_text="alpha").click()  # the model's page
            model = page.locator(f"#{model_page_id(TASK, 'alpha')}")
            assert model.is_visible() and not page.locator(board).is_visible()
            assert "A. Author <script>" in model.inner_text() and "0.6000 0.6100 0.6200" in model.inner_text()
            assert model.locator("img").count() == 1
            assert problems == [], problems
        finally:
            browser.close()


def _board_slug(text: str, dataset: str) -> str:
    found = re.search(rf'id="board-({TASK}__{re.escape(dataset)}__quick-[0-9a-f]{{6}})"', text)
    assert found is not None, dataset
    return found.group(1)
