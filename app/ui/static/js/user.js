// A user's page: recommendations (with why), rating any movie (the list refreshes through
// fold-in), and their ratings.
//
// Performance marks (read by bench/bench_ui.py): "dotrec:recommendations-rendered" each time a
// list is on screen, and the measure "dotrec:rating-to-recommendations" from a rating's submit
// to the new list on screen.

import { config, getJSON, postJSON } from "./api.js";
import {
  fixed,
  h,
  movieLink,
  movieRow,
  movieTitle,
  pager,
  ratingForm,
  rememberTitle,
  setStatus,
  signed,
  stars,
} from "./dom.js";
import { genreList, mountSearch } from "./search.js";

const K = 10;
const RATINGS_PAGE = 20;
const SIMILAR_K = 100;
const SIMILAR_SHOWN = 5;
const FACTORS_SHOWN = 3;
const STRATEGIES = {
  model: "the user's embedding in the model",
  fold_in: "folded in: an embedding solved from the ratings given since training, no retraining",
  popular: "no ratings yet: the best-rated movies",
  precomputed: "the model's ranking, precomputed by dotrec recommend-all",
};

const main = document.getElementById("main");
const userId = main.dataset.userId; // a string: ids go up to 2^63, past a JS number's exact integers
const recList = document.getElementById("recommendations");
const recStatus = document.getElementById("rec-status");
const strategyBadge = document.getElementById("strategy");
const ratingsList = document.getElementById("ratings");
const ratingsTotal = document.getElementById("ratings-total");
const showRatingsPage = pager(document.getElementById("ratings-pager"), (page) => loadRatings(page));

let allowed = [];
// read at once, beside the first list (not before it): the rating controls need the scale
const configured = config().then((c) => {
  allowed = c.allowed_ratings;
});
let recAsk = 0;
let ratingsAsk = 0;
let ratedPromise = null;

// --- recommendations -------------------------------------------------------------------------------

async function loadRecommendations(ratingStarted = null) {
  const ask = ++recAsk;
  const [recs] = await Promise.all([getJSON(`/recommendations/${userId}`, { k: K }), configured]);
  if (ask !== recAsk) return null; // a newer list is on its way
  const showScore = recs.items.some((item) => item.score !== undefined && item.score !== null);
  recList.replaceChildren(...recs.items.map((item) => recommendationRow(item, showScore)));
  recList.dataset.strategy = recs.strategy;
  recList.dataset.modelVersion = recs.model_version;
  strategyBadge.textContent = recs.strategy;
  strategyBadge.title = STRATEGIES[recs.strategy] ?? recs.strategy;
  performance.mark("dotrec:recommendations-rendered", {
    detail: { strategy: recs.strategy, items: recs.items.length, afterRating: ratingStarted !== null },
  });
  if (ratingStarted !== null) {
    performance.measure("dotrec:rating-to-recommendations", { start: ratingStarted, end: performance.now() });
  }
  return recs;
}

function recommendationRow(item, showScore) {
  rememberTitle(item.movie_id, item.title);
  const why = h("details", { class: "why" }, h("summary", {}, "Why?"), h("div", { class: "why-body" }));
  why.addEventListener("toggle", () => {
    if (why.open && !why.dataset.loaded) {
      why.dataset.loaded = "yes";
      explain(item, why.querySelector(".why-body"));
    }
  });
  return movieRow(
    "li",
    item.movie_id,
    h(
      "div",
      { class: "row-main" },
      movieLink(item.movie_id, item.title),
      h("span", { class: "num predicted", title: "predicted rating" }, stars(item.predicted_rating)),
      showScore ? h("span", { class: "num score", title: "ranking score" }, `score ${fixed(item.score, 3)}`) : null,
    ),
    h("div", { class: "row-actions" }, ratingForm(item.title, allowed, (value) => rate(item, value))),
    why,
  );
}

// --- why: the prediction's parts and the user's rated movies most like it --------------------------

/** movie id -> the user's rating, every page of GET /users/{id}/ratings (read once, until a rating). */
function ratedMovies() {
  ratedPromise ??= (async () => {
    const rated = new Map();
    for (let offset = 0; ; offset += 1000) {
      const page = await getJSON(`/users/${userId}/ratings`, { limit: 1000, offset });
      page.items.forEach((r) => rated.set(r.movie_id, r.rating));
      if (page.items.length === 0 || offset + page.items.length >= page.total) return rated;
    }
  })();
  return ratedPromise;
}

async function explain(item, body) {
  body.textContent = "Loading…";
  try {
    const [prediction, similar, rated] = await Promise.all([
      getJSON(`/predict/${userId}/${item.movie_id}`, { explain: true }),
      getJSON(`/movies/${item.movie_id}/similar`, { k: SIMILAR_K }),
      ratedMovies(),
    ]);
    body.replaceChildren(...parts(prediction), ...likeRated(similar, rated));
  } catch (error) {
    body.replaceChildren(h("p", { class: "problem" }, `Could not explain: ${error.message}`));
  }
}

function parts(prediction) {
  const e = prediction.explain;
  const out = [h("p", {}, `Predicted ${fixed(prediction.rating)} ★ (strategy ${prediction.strategy}).`)];
  if (e.dot_product === undefined || e.dot_product === null) {
    const bias = e.movie_bias ?? e.user_bias;
    const whose = e.movie_bias !== undefined ? "movie" : "user";
    out.push(
      h("p", { class: "formula" }, `${e.formula}: ${fixed(e.global_mean)} ${signed(bias)} (${whose} bias)`),
      h("p", { class: "hint" }, "No personal factors yet: rate a movie and the list is folded in."),
    );
    return out;
  }
  const [lo, hi] = e.y_range;
  const rows = [
    ["user bias", e.user_bias],
    ["movie bias", e.movie_bias],
    [`user · movie (${e.factor_products.length} factors)`, e.dot_product],
    ["sum, before the squash", e.score],
  ];
  out.push(
    h("p", { class: "formula" }, `rating = ${fixed(lo, 1)} + ${fixed(hi - lo, 1)} · sigmoid(sum)`),
    h(
      "table",
      { class: "parts" },
      h("tbody", {}, rows.map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, signed(value))))),
    ),
  );
  const top = e.factor_products
    .map((value, index) => ({ value, index }))
    .sort((a, b) => Math.abs(b.value) - Math.abs(a.value))
    .slice(0, FACTORS_SHOWN);
  const largest = Math.max(...top.map((f) => Math.abs(f.value)), 1e-9);
  out.push(
    h("p", { class: "sub" }, "Factors that contribute most"),
    h(
      "ul",
      { class: "factors" },
      top.map((f) =>
        h(
          "li",
          {},
          h("span", { class: "factor-name" }, `factor ${f.index + 1}`),
          h("span", { class: `bar ${f.value < 0 ? "neg" : "pos"}`, style: `width: ${(60 * Math.abs(f.value)) / largest}%` }),
          h("span", { class: "num" }, signed(f.value)),
        ),
      ),
    ),
  );
  return out;
}

function likeRated(similar, rated) {
  const near = similar.items.filter((s) => rated.has(s.movie_id)).slice(0, SIMILAR_SHOWN);
  if (near.length === 0) {
    return [h("p", { class: "hint" }, `None of the user's rated movies is among its ${SIMILAR_K} nearest.`)];
  }
  return [
    h("p", { class: "sub" }, "Rated movies most like it"),
    h(
      "ul",
      { class: "movie-list compact" },
      near.map((s) =>
        movieRow(
          "li",
          s.movie_id,
          movieLink(s.movie_id, s.title),
          h("span", { class: "num", title: "cosine similarity of the embeddings" }, `similarity ${fixed(s.similarity, 3)}`),
          h("span", { class: "num", title: "the user's rating" }, stars(rated.get(s.movie_id))),
        ),
      ),
    ),
  ];
}

// --- rating ----------------------------------------------------------------------------------------

async function rate(movie, value) {
  const started = performance.now();
  const title = movie.title ?? `movie ${movie.movie_id}`;
  setStatus(recStatus, `Storing ${title}: ${value} ★…`);
  // written by hand: a user id past 2^53 would not survive JSON.stringify of a number
  const body = `{"user_id": ${userId}, "movie_id": ${movie.movie_id}, "rating": ${value}}`;
  try {
    await postJSON("/ratings", body);
  } catch (error) {
    setStatus(recStatus, `Not stored: ${error.message}`, true);
    return;
  }
  ratedPromise = null;
  try {
    const [recs] = await Promise.all([loadRecommendations(started), loadRatings(0)]);
    if (recs) setStatus(recStatus, `Rated ${title} ${value} ★. ${describe(recs)}`);
  } catch (error) {
    setStatus(recStatus, `Rated ${title}, but the list did not refresh: ${error.message}`, true);
  }
}

function describe(recs) {
  return `${recs.items.length} movies, ${STRATEGIES[recs.strategy] ?? recs.strategy}.`;
}

// --- ratings ---------------------------------------------------------------------------------------

async function loadRatings(page) {
  const ask = ++ratingsAsk;
  const data = await getJSON(`/users/${userId}/ratings`, { limit: RATINGS_PAGE, offset: page * RATINGS_PAGE });
  const rows = await Promise.all(
    data.items.map(async (r) =>
      movieRow(
        "li",
        r.movie_id,
        movieLink(r.movie_id, await movieTitle(r.movie_id)),
        h("span", { class: "num" }, stars(r.rating)),
        h("time", { datetime: r.rated_at }, r.rated_at.slice(0, 10)),
      ),
    ),
  );
  if (ask !== ratingsAsk) return;
  ratingsList.replaceChildren(...rows);
  ratingsTotal.textContent = data.total === 0 ? "(none yet)" : `(${data.total})`;
  showRatingsPage(page, Math.ceil(data.total / RATINGS_PAGE));
}

// --- start -----------------------------------------------------------------------------------------

async function start() {
  try {
    const recs = await loadRecommendations();
    if (recs) setStatus(recStatus, describe(recs));
  } catch (error) {
    setStatus(recStatus, `No recommendations: ${error.message}`, true);
  }
}

// the list first: the ratings (and their titles) are read once it is on screen
start()
  .then(() => loadRatings(0))
  .catch((error) => setStatus(recStatus, `Ratings not read: ${error.message}`, true));
mountSearch((movie) =>
  movieRow(
    "li",
    movie.movie_id,
    h("div", { class: "row-main" }, movieLink(movie.movie_id, movie.title), genreList(movie.genres)),
    h("div", { class: "row-actions" }, ratingForm(movie.title, allowed, (value) => rate(movie, value))),
  ),
);
