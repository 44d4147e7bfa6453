"""index.html in a real headless Chromium (Debian's, driven by Playwright): it loads from disk with no
console errors, every benchmark section is there, and clicking a column header reorders the rows.
A screenshot is written to the test's temporary folder (or ``$LITBENCH_TEST_ARTIFACTS``, to keep it);
nothing is written into the repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from leaderboard.build import build_leaderboard

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SPEC = {"metrics": {"primary": "acc", "higher_is_better": {"acc": True, "loss": False}},
        "claims": [{"id": "beats-b", "text": "a beats b", "metric": "acc", "method": "a", "baseline": "b"}]}


@pytest.fixture
def chromium_page():
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI needs Debian's chromium (apt-get install chromium) for the browser test")
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def test_leaderboard_page_in_chromium(chromium_page, write_run, results_dir: Path, tmp_path: Path) -> None:
    for benchmark in ("alpha", "beta"):
        for seed in range(3):
            for method, role, acc in (("a", "proposed", 0.9), ("b", "baseline", 0.5), ("c", "baseline", 0.7)):
                write_run(benchmark=benchmark, method=method, role=role, seed=seed,
                          metrics={"acc": acc + 0.01 * seed, "loss": 1 - acc}, cost={"fit_s": 1.0 + seed}, spec=SPEC)
    write_run(benchmark="alpha", method="c", role="baseline", seed=3, error_type="RuntimeError", spec=SPEC)
    page_path = build_leaderboard(results_dir, tmp_path / "out")["html"]

    page = chromium_page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(page_path.resolve().as_uri())
    assert problems == []
    assert page.locator("section.benchmark").count() == 2
    assert page.locator("#bench-alpha").is_visible() and page.locator("#bench-beta").is_visible()
    assert "1 failed" in page.locator("#bench-alpha").inner_text()  # failed runs are visible, not hidden
    assert all(url.startswith("file://") for url in requests)  # nothing but the page itself is fetched
    # the forest plot of every claim, and one per benchmark; results before any wall-time or perf table
    assert page.locator("#all-claims svg.forest").is_visible()
    assert page.locator("#bench-alpha svg.forest g.forest-row").count() == 1
    results_top = page.locator("#bench-alpha table.sortable").first.bounding_box()["y"]
    assert results_top < page.locator("#costs").bounding_box()["y"]
    # wide tables scroll inside their box: the page itself never scrolls sideways at 1400 px
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    table = page.locator("#bench-alpha table.sortable").first
    methods = lambda: [row.strip() for row in table.locator("tbody tr td:first-child").all_inner_texts()]  # noqa: E731
    header = table.locator("thead th", has_text="acc ↑")
    header.click()
    assert methods()[0].startswith("b") and methods()[-1].startswith("a")  # ascending accuracy: b, c, a
    header.click()
    assert methods()[0].startswith("a")  # descending
    assert header.get_attribute("aria-sort") == "descending"

    artifacts = Path(os.environ.get("LITBENCH_TEST_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "leaderboard.png"), full_page=True)
    assert (artifacts / "leaderboard.png").stat().st_size > 10_000
    assert problems == []
