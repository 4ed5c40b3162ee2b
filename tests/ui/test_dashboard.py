"""The dashboard end to end: headless Chromium against real `dotrec serve` processes (see conftest)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.api.live_server import LiveServer
from tests.ui.ui_support import PHONE, UI_API_KEY, Ui

pytestmark = pytest.mark.slow

K = 10
RECOMMENDATIONS = "#recommendations > li[data-movie-id]"


def recommended_ids(page: Any) -> list[int]:
    return [
        int(i) for i in page.locator(RECOMMENDATIONS).evaluate_all("rows => rows.map(r => r.dataset.movieId)")
    ]


def wait_for_list(page: Any, strategy: str) -> list[int]:
    page.wait_for_selector(f'#recommendations[data-strategy="{strategy}"] > li[data-movie-id]')
    return recommended_ids(page)


def rate_first_recommendation(page: Any, value: str = "5") -> int:
    row = page.locator(RECOMMENDATIONS).first
    movie_id = int(row.get_attribute("data-movie-id"))
    row.locator("select[name=rating]").select_option(value)
    row.get_by_role("button", name="Rate").click()
    return movie_id


def test_a_user_page_shows_ten_recommendations_and_why(ui: Ui, server: LiveServer) -> None:
    expected = server.client.get("/recommendations/1", params={"k": K}).json()
    page = ui.open("/ui/users/1")
    ids = wait_for_list(page, expected["strategy"])
    assert ids == [item["movie_id"] for item in expected["items"]]
    assert page.locator("#strategy").inner_text() == expected["strategy"]
    first = page.locator(RECOMMENDATIONS).first
    assert expected["items"][0]["title"] in first.inner_text()

    # their ratings, newest first, a page at a time
    ratings = server.client.get("/users/1/ratings", params={"limit": 20}).json()
    page.wait_for_selector("#ratings > li[data-movie-id]")
    shown = page.locator("#ratings > li[data-movie-id]").evaluate_all(
        "rows => rows.map(r => +r.dataset.movieId)"
    )
    assert shown == [r["movie_id"] for r in ratings["items"]]
    assert f"({ratings['total']})" in page.locator("#ratings-total").inner_text()
    if ratings["total"] > 20:
        page.locator("#ratings-pager").get_by_role("button", name="Older").click()
        second = server.client.get("/users/1/ratings", params={"limit": 20, "offset": 20}).json()
        page.wait_for_selector(f'#ratings > li[data-movie-id="{second["items"][0]["movie_id"]}"]')

    # why: the prediction's parts, the factors that weigh most, the rated movies most like it
    first.locator("summary", has_text="Why?").click()
    body = first.locator(".why-body")
    body.locator("table.parts").wait_for()
    text = body.inner_text()
    assert "user bias" in text and "movie bias" in text and "Factors that contribute most" in text
    assert body.locator("ul.factors > li").count() == 3
    explained = server.client.get(f"/predict/1/{ids[0]}", params={"explain": "true"}).json()
    assert f"Predicted {explained['rating']:.2f}" in text
    like = body.locator("li[data-movie-id]")
    rated = {
        r["movie_id"] for r in server.client.get("/users/1/ratings", params={"limit": 1000}).json()["items"]
    }
    assert like.count() > 0 or "None of the user's rated movies" in text
    assert {int(i) for i in like.evaluate_all("rows => rows.map(r => r.dataset.movieId)")} <= rated
    ui.screenshot("user")


def test_rating_through_the_page_folds_a_new_user_in(ui: Ui, server: LiveServer) -> None:
    new_user = 990_001
    page = ui.open(f"/ui/?user={new_user}")
    popular = wait_for_list(page, "popular")
    assert len(popular) == K
    page.evaluate("window.notReloaded = true")

    rated = rate_first_recommendation(page, "5")
    folded = wait_for_list(page, "fold_in")
    assert len(folded) == K and rated not in folded
    assert page.evaluate("window.notReloaded") is True, "the page reloaded"
    page.wait_for_selector(f'#ratings > li[data-movie-id="{rated}"]')
    stored = server.client.get(f"/users/{new_user}/ratings").json()["items"]
    assert [(r["movie_id"], r["rating"]) for r in stored] == [(rated, 5.0)]
    timing = page.evaluate("performance.getEntriesByName('dotrec:rating-to-recommendations').length")
    assert timing == 1

    # any movie, found by title: the second rating also leaves the list
    page.fill("#search-text", "a")
    page.locator("#search-form").get_by_role("button", name="Search").click()
    page.wait_for_selector("#search-results > li[data-movie-id]")
    candidates = page.locator("#search-results > li[data-movie-id]")
    row = next(
        candidates.nth(i)
        for i in range(candidates.count())
        if int(candidates.nth(i).get_attribute("data-movie-id")) != rated
    )
    second = int(row.get_attribute("data-movie-id"))
    row.locator("select[name=rating]").select_option("1.5")
    row.get_by_role("button", name="Rate").click()
    page.wait_for_selector(f'#ratings > li[data-movie-id="{second}"]')
    page.wait_for_function(
        "n => performance.getEntriesByName('dotrec:rating-to-recommendations').length === n", arg=2
    )
    after = wait_for_list(page, "fold_in")
    assert len(after) == K and not {rated, second} & set(after)
    ui.screenshot("user-after-rating")


def test_the_api_key_is_asked_for_once_and_sent(ui: Ui, keyed_server: LiveServer) -> None:
    assert keyed_server.client.get("/ui/config.json").json()["auth"] == "on"
    new_user = 990_002
    page = ui.open(f"/ui/users/{new_user}", keyed_server)
    wait_for_list(page, "popular")
    dialog = page.locator("#api-key-dialog")
    assert not dialog.is_visible()

    rated = rate_first_recommendation(page)
    dialog.wait_for(state="visible")
    ui.screenshot("api-key-prompt")
    page.fill("#api-key-input", UI_API_KEY)
    dialog.get_by_role("button", name="Use this key").click()
    folded = wait_for_list(page, "fold_in")
    assert rated not in folded
    assert page.evaluate("sessionStorage.getItem('dotrec.apiKey')") == UI_API_KEY
    assert page.evaluate("localStorage.length") == 0

    # asked once: the next rating goes straight through
    second = rate_first_recommendation(page, "2")
    page.wait_for_selector(f'#ratings > li[data-movie-id="{second}"]')
    assert not dialog.is_visible()
    assert not {rated, second} & set(wait_for_list(page, "fold_in"))
    stored = keyed_server.client.get(f"/users/{new_user}/ratings").json()["total"]
    assert stored == 2


def test_a_refused_key_is_asked_for_again(ui: Ui, keyed_server: LiveServer) -> None:
    ui.allow("status of 403")  # the browser logs the refused request itself
    page = ui.open("/ui/users/990003", keyed_server)
    wait_for_list(page, "popular")
    rated = rate_first_recommendation(page)
    dialog = page.locator("#api-key-dialog")
    dialog.wait_for(state="visible")
    page.fill("#api-key-input", "wrong")
    dialog.get_by_role("button", name="Use this key").click()
    page.wait_for_function("document.getElementById('api-key-why').textContent.includes('refused')")
    dialog.wait_for(state="visible")
    page.fill("#api-key-input", UI_API_KEY)
    dialog.get_by_role("button", name="Use this key").click()
    assert rated not in wait_for_list(page, "fold_in")


def test_cancelling_the_key_stores_nothing(ui: Ui, keyed_server: LiveServer) -> None:
    page = ui.open("/ui/users/990004", keyed_server)
    wait_for_list(page, "popular")
    rate_first_recommendation(page)
    dialog = page.locator("#api-key-dialog")
    dialog.wait_for(state="visible")
    dialog.get_by_role("button", name="Cancel").click()
    page.wait_for_function("document.getElementById('rec-status').textContent.startsWith('Not stored')")
    assert keyed_server.client.get("/users/990004/ratings").json()["total"] == 0


def point_on_canvas(page: Any, movie_id: int | None = None) -> dict:
    """Page coordinates and data of a point of the map (movie_id's, else the rightmost)."""
    return page.evaluate(
        """movieId => {
            const canvas = document.getElementById('map-canvas');
            const chart = Chart.getChart(canvas);
            const all = chart.data.datasets[0].data;
            let index = 0;
            all.forEach((p, i) => {
                if (movieId === null ? p.x > all[index].x : p.id === movieId) index = i;
            });
            const element = chart.getDatasetMeta(0).data[index];
            const box = canvas.getBoundingClientRect();
            const {id, title} = all[index];
            return {x: box.left + element.x, y: box.top + element.y, id, title};
        }""",
        movie_id,
    )


def map_groups(page: Any) -> dict[str, int]:
    return page.evaluate(
        """() => Object.fromEntries(Chart.getChart('map-canvas')
            .data.datasets.map(d => [d.group, d.data.length]))"""
    )


def test_the_map_highlights_hovers_zooms_and_opens_a_movie(ui: Ui, server: LiveServer) -> None:
    model = server.client.get("/model").json()
    page = ui.open("/ui/map?user=1")
    page.wait_for_selector("#map-canvas[data-ready]")
    total = server.client.get("/users/1/ratings").json()["total"]
    page.wait_for_function("() => Chart.getChart('map-canvas').data.datasets.length >= 4")
    groups = map_groups(page)
    assert groups["all"] == model["n_movies"]
    assert groups["rated"] == total and groups["recommended"] == K
    assert page.locator("#map-recommended > li[data-movie-id]").count() == K

    # search to highlight (the matches are listed too: the keyboard's way to them)
    page.fill("#map-search", "the")
    page.wait_for_function("() => document.querySelectorAll('#matches > li[data-movie-id]').length > 0")
    titles = page.locator("#matches > li[data-movie-id]").all_inner_texts()
    assert all("the" in t.lower() for t in titles)
    assert map_groups(page)["matches"] >= len(titles)

    # zoom from the keyboard, and back
    scale = "() => { const x = Chart.getChart('map-canvas').scales.x; return x.max - x.min }"
    width = page.evaluate(scale)
    page.focus("#map-canvas")
    page.keyboard.press("+")
    assert page.evaluate(scale) < width
    page.keyboard.press("0")
    assert page.evaluate(scale) == pytest.approx(width)
    ui.screenshot("map")

    # hover for the title, click to open it
    point = point_on_canvas(page)
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function("t => document.getElementById('map-hover').textContent === t", arg=point["title"])
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(re.compile(rf"/ui/movies/{point['id']}$"))
    page.wait_for_selector("#map-canvas[data-ready]")


def test_a_movie_page(ui: Ui, server: LiveServer) -> None:
    movie = server.client.get("/movies/1").json()
    stats = server.client.get("/ui/movies/1/stats.json").json()
    similar = server.client.get("/movies/1/similar", params={"k": 10}).json()["items"]
    page = ui.open("/ui/movies/1")
    page.wait_for_function(
        "t => document.getElementById('movie-title').textContent === t", arg=movie["title"]
    )
    assert page.locator("#movie-genres").inner_text() == " · ".join(movie["genres"])
    page.wait_for_selector("#movie-facts dt")
    facts = page.locator("#movie-facts").inner_text()
    assert f"{stats['ratings']:,}" in facts and f"{stats['mean_rating']:.2f}" in facts
    page.wait_for_selector("#similar > li[data-movie-id]")
    shown = page.locator("#similar > li[data-movie-id]").evaluate_all(
        "rows => rows.map(r => +r.dataset.movieId)"
    )
    assert shown == [s["movie_id"] for s in similar]
    page.wait_for_selector("#map-canvas[data-ready]")
    page.wait_for_function("() => Chart.getChart('map-canvas').data.datasets.length >= 3")
    assert map_groups(page)["focus"] == 1 and map_groups(page)["similar"] == len(similar)
    ui.screenshot("movie")


def test_the_model_page(ui: Ui, server: LiveServer) -> None:
    model = server.client.get("/model").json()
    page = ui.open("/ui/model")
    page.wait_for_selector("#curves[data-ready]")
    facts = page.locator("#model-facts").inner_text()
    assert model["version"] in facts and model["created_at"] in facts
    metrics = page.locator("#metrics").inner_text()
    assert f"{model['metrics']['rmse']:.4f}" in metrics
    assert f"{model['metrics']['bias_only_rmse']:.4f}" in metrics
    assert f"{model['metrics']['global_mean_rmse']:.4f}" in metrics
    assert page.locator("#history tbody tr").count() == model["hyper_parameters"]["epochs"]
    assert model["data_fingerprint"]["sha256"] in page.locator("#data").inner_text()
    assert "weight_decay" in page.locator("#hyper").inner_text()
    ui.screenshot("model")


def test_search_by_title_and_genre(ui: Ui, server: LiveServer) -> None:
    page = ui.open("/ui/")
    page.fill("#search-text", "the")
    page.wait_for_selector("#search-results > li[data-movie-id]")
    page.select_option("#search-genre", "Drama")
    expected = server.client.get("/movies", params={"search": "the", "genre": "Drama", "limit": 10}).json()
    first = expected["items"][0]["movie_id"]
    page.wait_for_function(
        "n => document.getElementById('search-status').textContent.startsWith(n + ' ')", arg=expected["total"]
    )
    shown = page.locator("#search-results > li[data-movie-id]").evaluate_all(
        "rows => rows.map(r => +r.dataset.movieId)"
    )
    assert shown[0] == first and shown == [m["movie_id"] for m in expected["items"]]
    ui.screenshot("search")
    # open a user from the start page
    page.fill("#user-input", "2")
    page.locator("#user-form").get_by_role("button", name="Open").click()
    page.wait_for_url(re.compile(r"/ui/\?user=2$"))
    wait_for_list(page, "model")


@pytest.mark.parametrize(
    "path", ["/ui/users/1", "/ui/movies/1", "/ui/map?user=1", "/ui/model", "/ui/?search=the"]
)
def test_pages_fit_a_phone(make_ui: Any, path: str) -> None:
    ui = make_ui(PHONE)
    page = ui.open(path)
    page.wait_for_load_state("networkidle")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], f"{path} is {width} px wide at {PHONE['width']} px"
    name = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")
    ui.screenshot(f"phone-{name}")


def test_rating_from_the_keyboard(ui: Ui, server: LiveServer) -> None:
    page = ui.open("/ui/users/990005")
    popular = wait_for_list(page, "popular")
    select = page.locator(RECOMMENDATIONS).first.locator("select[name=rating]")
    for _ in range(40):
        page.keyboard.press("Tab")
        if select.evaluate("s => s === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the first recommendation's rating control")
    page.keyboard.press("ArrowDown")  # the first value below "rate…": the top of the scale
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    folded = wait_for_list(page, "fold_in")
    assert popular[0] not in folded
    assert server.client.get("/users/990005/ratings").json()["items"][0]["movie_id"] == popular[0]


def test_a_score_is_shown_when_the_items_have_one(ui: Ui) -> None:
    """`score` is coming to GET /recommendations items: the page shows it when it is there."""

    def with_scores(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        for rank, item in enumerate(body["items"]):
            item["score"] = 9.5 - rank
        route.fulfill(response=response, json=body)

    ui.page.route(re.compile(r"/recommendations/\d+"), with_scores)
    page = ui.open("/ui/users/1")
    wait_for_list(page, "model")
    scores = page.locator(f"{RECOMMENDATIONS} .score").all_inner_texts()
    assert scores == [f"score {9.5 - rank:.3f}" for rank in range(K)]
