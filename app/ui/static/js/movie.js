// A movie's page: its catalog entry, rating count and mean, similar movies, its place on the map.

import { getJSON } from "./api.js";
import { fixed, h, movieLink, movieRow, setStatus } from "./dom.js";
import { mountMap } from "./movie-map.js";

const main = document.getElementById("main");
const movieId = Number(main.dataset.movieId);
const status = document.getElementById("movie-status");
const facts = document.getElementById("movie-facts");
const similarList = document.getElementById("similar");

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

async function start() {
  let movie;
  try {
    movie = await getJSON(`/movies/${movieId}`);
  } catch (error) {
    setStatus(status, `Movie ${movieId}: ${error.message}`, true);
    return;
  }
  document.getElementById("movie-title").textContent = movie.title;
  document.title = `${movie.title} · dotrec`;
  document.getElementById("movie-genres").textContent = movie.genres.join(" · ");
  const [stats, similar, map] = await Promise.allSettled([
    getJSON(`/ui/movies/${movieId}/stats.json`),
    movie.in_model ? getJSON(`/movies/${movieId}/similar`, { k: 10 }) : Promise.resolve(null),
    movie.in_model ? mountMap() : Promise.resolve(null),
  ]);
  if (stats.status === "fulfilled") {
    const s = stats.value;
    facts.replaceChildren(
      ...fact("Ratings", s.ratings.toLocaleString("en")),
      ...fact("Mean rating", s.mean_rating === null ? "–" : `${fixed(s.mean_rating)} ★`),
      ...fact("Year", movie.year ?? "–"),
      ...fact("In the model", movie.in_model ? "yes" : "no (added after training)"),
    );
  } else {
    setStatus(status, `Rating count not read: ${stats.reason.message}`, true);
  }
  if (!movie.in_model) {
    similarList.replaceChildren(h("li", { class: "more" }, "The model has no embedding for it yet: nothing to compare."));
    setStatus(document.getElementById("map-status"), "Not on the map until a model is trained with it.");
    return;
  }
  if (similar.status === "fulfilled") {
    similarList.replaceChildren(
      ...similar.value.items.map((s) =>
        movieRow("li", s.movie_id, movieLink(s.movie_id, s.title), h("span", { class: "num", title: "cosine similarity of the embeddings" }, fixed(s.similarity, 3))),
      ),
    );
  } else {
    setStatus(status, `Similar movies not read: ${similar.reason.message}`, true);
  }
  if (map.status === "fulfilled") {
    if (similar.status === "fulfilled") map.value.highlight("similar", similar.value.items.map((s) => s.movie_id), "similar");
    map.value.highlight("focus", [movieId], movie.title);
  } else {
    setStatus(document.getElementById("map-status"), `No map: ${map.reason.message}`, true);
  }
}

start();
