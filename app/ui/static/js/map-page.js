// The map page: the movie map, titles highlighted by a search, a user's rated and recommended movies.

import { getJSON } from "./api.js";
import { h, movieLink, movieRow, setStatus } from "./dom.js";
import { mountMap } from "./movie-map.js";

const MATCHES_LISTED = 50;
const form = document.getElementById("map-form");
const search = document.getElementById("map-search");
const user = document.getElementById("map-user");
const matches = document.getElementById("matches");
const matchesCount = document.getElementById("matches-count");
const userSection = document.getElementById("user-movies");
const recommended = document.getElementById("map-recommended");
const status = document.getElementById("map-status");

async function allRated(userId) {
  const ids = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await getJSON(`/users/${userId}/ratings`, { limit: 1000, offset });
    ids.push(...page.items.map((r) => r.movie_id));
    if (page.items.length === 0 || offset + page.items.length >= page.total) return ids;
  }
}

function showMatches(map, text) {
  const needle = text.trim().toLocaleLowerCase();
  const found = needle ? [...map.byId.values()].filter((p) => p.title.toLocaleLowerCase().includes(needle)) : [];
  map.highlight("matches", found.map((p) => p.id), needle ? `“${text.trim()}”` : "matches");
  matchesCount.textContent = needle ? `(${found.length})` : "";
  matches.replaceChildren(
    ...found.slice(0, MATCHES_LISTED).map((p) => movieRow("li", p.id, movieLink(p.id, p.title))),
  );
  if (found.length > MATCHES_LISTED) matches.append(h("li", { class: "more" }, `and ${found.length - MATCHES_LISTED} more`));
}

async function showUser(map, userId) {
  userSection.hidden = !userId;
  if (!userId) {
    map.highlight("rated", [], "rated");
    map.highlight("recommended", [], "recommended");
    return;
  }
  userSection.querySelector("h2").textContent = `User ${userId}: recommended`;
  const [rated, recs] = await Promise.all([allRated(userId), getJSON(`/recommendations/${userId}`, { k: 10 })]);
  map.highlight("rated", rated, `rated by user ${userId}`);
  map.highlight("recommended", recs.items.map((item) => item.movie_id), `recommended (${recs.strategy})`);
  recommended.replaceChildren(...recs.items.map((item) => movieRow("li", item.movie_id, movieLink(item.movie_id, item.title))));
}

async function start() {
  let map;
  try {
    map = await mountMap();
  } catch (error) {
    setStatus(status, `No map: ${error.message}`, true);
    return;
  }
  const params = new URLSearchParams(location.search);
  const focus = Number(params.get("movie"));
  if (focus) map.highlight("focus", [focus], map.byId.get(focus)?.title ?? `movie ${focus}`);
  const apply = async () => {
    showMatches(map, search.value);
    try {
      await showUser(map, user.value.trim());
    } catch (error) {
      setStatus(status, `User ${user.value}: ${error.message}`, true);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (search.value.trim()) next.set("q", search.value.trim());
    if (user.value.trim()) next.set("user", user.value.trim());
    if (focus) next.set("movie", String(focus));
    history.replaceState(null, "", `${location.pathname}${next.size ? `?${next}` : ""}`);
    apply();
  });
  search.addEventListener("input", () => showMatches(map, search.value));
  await apply();
}

start();
