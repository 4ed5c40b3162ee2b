// Small helpers for building the pages' elements (text is always set as text, never as HTML).

import { root } from "./api.js";

/** h("li", {class: "x", dataset: {movieId: 1}}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export function fixed(value, digits = 2) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

export function signed(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  const text = Math.abs(value).toFixed(digits);
  return value < 0 ? `−${text}` : `+${text}`;
}

export function stars(value) {
  return `★ ${Number(value).toFixed(1)}`;
}

export function movieHref(movieId) {
  return `${root}/ui/movies/${movieId}`;
}

export function movieLink(movieId, title) {
  return h("a", { class: "title", href: movieHref(movieId) }, title ?? `Movie ${movieId}`);
}

/** A <li data-movie-id> (the element every movie row is). */
export function movieRow(tag, movieId, ...children) {
  return h(tag, { class: "movie-row", dataset: { movieId: String(movieId) } }, ...children);
}

/** A rating control: a <select> of the allowed values and a button; onRate(value) on submit. */
export function ratingForm(title, allowed, onRate) {
  const select = h(
    "select",
    { name: "rating", required: true, "aria-label": `Your rating of ${title}` },
    h("option", { value: "" }, "rate…"),
    [...allowed].reverse().map((v) => h("option", { value: String(v) }, `${Number(v).toFixed(1)} ★`)),
  );
  const button = h("button", { type: "submit" }, "Rate");
  const form = h("form", { class: "rate" }, select, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!select.value) return;
    button.disabled = true;
    try {
      await onRate(Number(select.value));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Wire a pager <nav> (buttons data-step=±1, a .where span); returns update(page, pages). */
export function pager(nav, onPage) {
  let current = 0;
  let last = 0;
  for (const button of nav.querySelectorAll("button[data-step]")) {
    button.addEventListener("click", () => {
      const next = current + Number(button.dataset.step);
      if (next >= 0 && next <= last) onPage(next);
    });
  }
  return (page, pages) => {
    current = page;
    last = Math.max(0, pages - 1);
    nav.hidden = pages <= 1;
    nav.querySelector(".where").textContent = `page ${page + 1} of ${Math.max(pages, 1)}`;
    const [back, forward] = nav.querySelectorAll("button[data-step]");
    back.disabled = page <= 0;
    forward.disabled = page >= last;
  };
}

export function setStatus(element, text, isProblem = false) {
  element.textContent = text;
  element.classList.toggle("problem", isProblem);
}

/** Movie titles by id, read through GET /movies/{id} once each. */
const titles = new Map();

export function movieTitle(movieId) {
  if (!titles.has(movieId)) {
    titles.set(
      movieId,
      fetch(`${root}/movies/${movieId}`, { headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : null))
        .then((movie) => movie?.title ?? `Movie ${movieId}`),
    );
  }
  return titles.get(movieId);
}

export function rememberTitle(movieId, title) {
  if (title) titles.set(movieId, Promise.resolve(title));
}
