// Search the catalog by title and genre (GET /movies?search=&genre=), paginated.

import { config, getJSON } from "./api.js";
import { h, pager, rememberTitle, setStatus } from "./dom.js";

const PAGE_SIZE = 10;
const TYPING_PAUSE_MS = 250;

/** Wire the search form of search.html; row(movie) makes each result's <li data-movie-id>. */
export async function mountSearch(row) {
  const form = document.getElementById("search-form");
  const text = document.getElementById("search-text");
  const genre = document.getElementById("search-genre");
  const results = document.getElementById("search-results");
  const status = document.getElementById("search-status");
  const showPage = pager(document.getElementById("search-pager"), (page) => run(page));
  let asked = 0;
  let timer = null;

  async function run(page = 0) {
    const search = text.value.trim();
    if (!search && !genre.value) {
      results.replaceChildren();
      showPage(0, 0);
      setStatus(status, "");
      return;
    }
    const ask = ++asked;
    const params = { limit: PAGE_SIZE, offset: page * PAGE_SIZE };
    if (search) params.search = search;
    if (genre.value) params.genre = genre.value;
    try {
      const found = await getJSON("/movies", params);
      if (ask !== asked) return; // a newer search is on its way
      found.items.forEach((movie) => rememberTitle(movie.movie_id, movie.title));
      results.replaceChildren(...found.items.map(row));
      const pages = Math.ceil(found.total / PAGE_SIZE);
      showPage(page, pages);
      setStatus(status, found.total === 0 ? "No movie matches." : `${found.total} movies match.`);
    } catch (error) {
      if (ask === asked) setStatus(status, `Search failed: ${error.message}`, true);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer); // the search typed so far is this one: no second, late render
    run(0);
  });
  text.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => run(0), TYPING_PAUSE_MS);
  });
  genre.addEventListener("change", () => {
    clearTimeout(timer);
    run(0);
  });

  const { genres } = await config();
  genre.append(...genres.map((g) => h("option", { value: g }, g)));
  const initial = new URLSearchParams(location.search);
  if (initial.get("search")) text.value = initial.get("search");
  if (initial.get("genre")) genre.value = initial.get("genre");
  if (text.value || genre.value) run(0);
}

export function genreList(genres) {
  return h("span", { class: "genres" }, genres.join(" · "));
}
