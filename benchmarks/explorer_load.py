"""How fast the explorer is on a full KeypointNet import: time to first view and to switch model.

Serves a store (``--db``, e.g. one filled by ``kpengine db import --data ../shared/data/keypointnet``,
all 15 categories, 7,232 models) and drives the explorer page in headless Chromium (Debian's, via
Playwright, software WebGL). For each category:

* first view: a fresh page opened on ``/explore?category=C`` until the first model is drawn
  (``document.body.dataset.shown`` set), measured by the page's own clock from navigation start;
* switch: ``j`` (next model in the list) until the next model is drawn, ``--switches`` times;
* the explorer's list and summary endpoints alone (server time over loopback).

Prints a Markdown table of medians; JSON with every sample on ``--json``.

    .venv/bin/python benchmarks/explorer_load.py --db sqlite:///kpengine-store/full.db
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

from kpengine.server import ServerConfig, create_app
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store

CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def _get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url) as res:
        res.read()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="database URL of an imported store")
    ap.add_argument("--categories", default="airplane,chair,table,bathtub")
    ap.add_argument("--repeats", type=int, default=3, help="fresh page loads per category")
    ap.add_argument("--switches", type=int, default=5, help="model switches per category")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    store = open_store(args.db)
    results: dict[str, dict[str, list[float]]] = {}
    with serve_in_thread(create_app(ServerConfig(store=store))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        n_total = sum(c["n_models"] for c in json.load(urllib.request.urlopen(f"{url}/api/categories")))
        for cat in args.categories.split(","):
            r: dict[str, list[float]] = {"first": [], "switch": [], "list_api": [], "summary_api": []}
            for _ in range(args.repeats):
                r["list_api"].append(_get(f"{url}/api/explore/categories/{cat}/models"))
                r["summary_api"].append(_get(f"{url}/api/explore/categories/{cat}/summary"))
                page = browser.new_page(viewport={"width": 1400, "height": 850})
                page.goto(f"{url}/explore?category={cat}&geo=")  # the whole list, as on a large category
                page.wait_for_function("!!document.body.dataset.shown", timeout=120000)
                r["first"].append(page.evaluate("performance.now()") / 1000)
                page.close()
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.goto(f"{url}/explore?category={cat}&geo=")
            page.wait_for_function("!!document.body.dataset.shown", timeout=120000)
            for _ in range(args.switches):
                before = page.evaluate("document.body.dataset.shown")
                t = time.perf_counter()
                page.keyboard.press("j")
                page.wait_for_function(
                    f"document.body.dataset.shown && document.body.dataset.shown !== {json.dumps(before)}",
                    timeout=120000,
                )
                r["switch"].append(time.perf_counter() - t)
            page.close()
            results[cat] = r
        browser.close()
    store.dispose()
    print(f"store: {n_total} models; medians over {args.repeats} loads and {args.switches} switches\n")
    print("| category | first view (s) | switch model (s) | list API (s) | summary API (s) |")
    print("|---|---|---|---|---|")
    for cat, r in results.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(
            f"| {cat} | {med['first']:.2f} | {med['switch']:.2f} | {med['list_api']:.3f} | {med['summary_api']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n_models": n_total, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
