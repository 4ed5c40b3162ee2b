"""Benchmark of the dashboard in a real browser: time to the first recommendations on a user page,
time from a rating to the refreshed list, and the bytes a page costs, with and without a cache.

Headless Chromium (Debian's `chromium`, driven by Playwright) against `dotrec serve` on loopback.
The times are the page's own Performance API entries (user.js): the mark
"dotrec:recommendations-rendered" (startTime: ms since the navigation began) and the measure
"dotrec:rating-to-recommendations" (from the rating's submit to the new list on screen: the POST,
the GET of the list and the drawing). Page weight is the Resource Timing `transferSize` of the
document and of every request the page made until the network was idle (headers included; a
revalidated file costs its 304's headers).

    python bench/bench_ui.py             # ML-100K (../shared/data) imported and trained in a temp dir
    python bench/bench_ui.py --url http://127.0.0.1:8000 --user 1    # a server already running

Prints a Markdown table and writes the figures as JSON (--out, default bench/results/ui.json).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DOTREC = str(Path(sys.executable).with_name("dotrec"))
RENDERED = "dotrec:recommendations-rendered"
RATED = "dotrec:rating-to-recommendations"
NEW_USERS_FROM = 980_000
"""Ids of the new visitors the rating runs use (no data set has them)."""


def shared_archive(name: str) -> Path | None:
    folder = Path(os.environ.get("DOTREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = folder / f"{name}.tar.gz"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dotrec(env: dict[str, str], *args: str) -> None:
    subprocess.run([DOTREC, *args], env=env, check=True, capture_output=True, text=True, timeout=600)


@contextmanager
def built_server(folder: Path, epochs: int, dim: int) -> Iterator[str]:
    """ML-100K (else a synthetic set of its shape) imported and trained in `folder`, served."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder / 'dotrec.db'}",
        "MODELS_DIR": str(folder / "models"),
        "DATA_DIR": str(folder / "data"),
    }
    env.pop("API_KEY", None)
    source = shared_archive("ml-100k")
    if source is None:
        dotrec(env, "synth", str(folder / "synth"), "--like", "ml-100k")
        source = folder / "synth"
    print(f"importing {source} and training ({epochs} epochs, {dim} factors)...", file=sys.stderr)
    dotrec(env, "db", "upgrade")
    dotrec(env, "import", str(source), "--quiet")
    dotrec(env, "train", "--quiet", "--epochs", str(epochs), "--dim", str(dim))
    port = free_port()
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [DOTREC, "serve", "--port", str(port), "--log-level", "warning"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dotrec serve did not start:\n{(folder / 'serve.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def transferred(page: Any) -> dict[str, int]:
    """Bytes over the wire (transferSize) and decoded body bytes of the document and its requests."""
    return page.evaluate(
        """() => {
            const entries = [...performance.getEntriesByType('navigation'),
                             ...performance.getEntriesByType('resource')];
            return {
                requests: entries.length,
                transfer_bytes: entries.reduce((sum, e) => sum + e.transferSize, 0),
                body_bytes: entries.reduce((sum, e) => sum + e.decodedBodySize, 0),
            };
        }"""
    )


def first_render_ms(page: Any) -> float:
    page.wait_for_function(f"() => performance.getEntriesByName('{RENDERED}').length > 0")
    return page.evaluate(f"performance.getEntriesByName('{RENDERED}')[0].startTime")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "runs": len(values),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[max(0, round(0.9 * len(ordered)) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def measure(url: str, users: list[int], runs: int, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        errors: list[str] = []

        def new_page(context: Any) -> Any:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            return page

        # warm the server's one-time work (catalog views, the first fold-in) outside the figures
        context = browser.new_context()
        page = new_page(context)
        page.goto(f"{url}/ui/users/{users[0]}")
        first_render_ms(page)
        context.close()

        cold, warm, weight_cold, weight_warm = [], [], [], []
        for i in range(runs):
            user = users[i % len(users)]
            context = browser.new_context()  # an empty cache
            page = new_page(context)
            page.goto(f"{url}/ui/users/{user}")
            cold.append(first_render_ms(page))
            page.wait_for_load_state("networkidle")
            weight_cold.append(transferred(page))
            page.reload()  # the same tab again: files revalidated from the cache
            warm.append(first_render_ms(page))
            page.wait_for_load_state("networkidle")
            weight_warm.append(transferred(page))
            context.close()
        results["first_render_cold_cache"] = summary(cold)
        results["first_render_warm_cache"] = summary(warm)
        results["user_page_weight_cold"] = weight_cold[-1]
        results["user_page_weight_warm"] = weight_warm[-1]

        # new visitors: ids no earlier run of this benchmark used, should it be pointed at one server twice
        first_new = NEW_USERS_FROM + secrets.randbelow(1_000_000) * 1_000
        for label, pick in (("new_user", None), ("model_user", users)):
            times, strategies = [], set()
            for i in range(runs):
                user = first_new + i if pick is None else pick[i % len(pick)]
                context = browser.new_context()
                page = new_page(context)
                page.goto(f"{url}/ui/users/{user}")
                first_render_ms(page)
                row = page.locator("#recommendations > li[data-movie-id]").first
                row.locator("select[name=rating]").select_option(index=1)
                row.get_by_role("button", name="Rate").click()
                page.wait_for_function(f"() => performance.getEntriesByName('{RATED}').length > 0")
                times.append(page.evaluate(f"performance.getEntriesByName('{RATED}')[0].duration"))
                strategies.add(page.get_attribute("#recommendations", "data-strategy"))
                context.close()
            results[f"rating_to_list_{label}"] = summary(times) | {"strategies": sorted(strategies)}

        for name, path, ready in (
            ("map_page_weight", "/ui/map", "#map-canvas[data-ready]"),
            ("movie_page_weight", "/ui/movies/1", "#map-canvas[data-ready]"),
            ("model_page_weight", "/ui/model", "#curves[data-ready]"),
        ):
            context = browser.new_context()
            page = new_page(context)
            page.goto(url + path)
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
            cold_weight = transferred(page)
            page.reload()
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
            results[name] = {"cold": cold_weight, "warm": transferred(page)}
            context.close()
        browser.close()
    if errors:
        raise RuntimeError("the pages logged errors:\n" + "\n".join(errors))
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| what | runs | median | p90 | max |", "|---|---|---|---|---|"]
    for key, label in (
        ("first_render_cold_cache", "user page, first list on screen (empty cache)"),
        ("first_render_warm_cache", "user page, first list on screen (cached files)"),
        ("rating_to_list_new_user", "rating to new list, new visitor (popular -> fold_in)"),
        ("rating_to_list_model_user", "rating to new list, user in the model"),
    ):
        r = results[key]
        lines.append(f"| {label} | {r['runs']} | {r['median_ms']} ms | {r['p90_ms']} ms | {r['max_ms']} ms |")
    lines += ["", "| page | requests | transferred (empty cache) | transferred (cached) | bodies decoded |"]
    lines.append("|---|---|---|---|---|")
    weights = [("user page", results["user_page_weight_cold"], results["user_page_weight_warm"])]
    weights += [
        (key.removesuffix("_page_weight") + " page", results[key]["cold"], results[key]["warm"])
        for key in ("map_page_weight", "movie_page_weight", "model_page_weight")
    ]
    for label, cold, warm in weights:
        lines.append(
            f"| {label} | {cold['requests']} | {cold['transfer_bytes'] / 1024:.1f} KiB "
            f"| {warm['transfer_bytes'] / 1024:.1f} KiB | {cold['body_bytes'] / 1024:.1f} KiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", help="a running dotrec serve (default: ML-100K built and served in a temp dir)"
    )
    parser.add_argument("--user", type=int, action="append", help="model users to open (default 1..20)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--chromium", default=os.environ.get("DOTREC_CHROMIUM") or shutil.which("chromium"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ui.json")
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    users = args.user or list(range(1, 21))
    if args.url:
        results = measure(args.url.rstrip("/"), users, args.runs, args.chromium)
    else:
        with tempfile.TemporaryDirectory() as temp, built_server(Path(temp), args.epochs, args.dim) as url:
            results = measure(url, users, args.runs, args.chromium)
    chromium = subprocess.run([args.chromium, "--version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    results["machine"] = f"{os.cpu_count()} cores (load average after the run {load}), {chromium}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{results['machine']}; figures in {args.out}")


if __name__ == "__main__":
    main()
