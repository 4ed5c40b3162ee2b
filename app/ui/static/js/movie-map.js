// The movie map (map_widget.html): every movie of the model on the first two principal components
// of its embedding (GET /ui/map.json), drawn with Chart.js (a scatter chart) and its zoom plugin,
// both vendored in static/vendor and loaded as classic scripts before this module runs.
//
// Hover shows a title, the wheel or a dragged box zooms, a click opens the movie. From the
// keyboard: the canvas takes focus; arrows pan, + and - zoom, 0 resets.

import { getJSON } from "./api.js";
import { movieHref } from "./dom.js";

const STYLES = {
  all: { color: "rgba(110, 120, 140, 0.35)", radius: 2.5, order: 10 },
  rated: { color: "rgba(25, 113, 194, 0.8)", radius: 3.5, order: 4 },
  matches: { color: "#e8590c", radius: 4.5, order: 3 },
  similar: { color: "#9c36b5", radius: 4.5, order: 2 },
  recommended: { color: "#2f9e44", radius: 5, order: 1 },
  focus: { color: "#c92a2a", radius: 7, order: 0 },
};
const PAN_PX = 60;
const ZOOM_STEP = 1.25;

function dataset(group, label, points) {
  const style = STYLES[group];
  return {
    group,
    label,
    data: points,
    order: style.order,
    backgroundColor: style.color,
    borderColor: style.color,
    pointRadius: style.radius,
    pointHoverRadius: style.radius + 3,
  };
}

/** Draw the map; resolves to {chart, byId, highlight(group, ids, label)} (ids: movie ids). */
export async function mountMap() {
  const canvas = document.getElementById("map-canvas");
  const hover = document.getElementById("map-hover");
  const status = document.getElementById("map-status");
  const Chart = globalThis.Chart;
  if (!Chart) throw new Error("the chart library did not load");
  const data = await getJSON("/ui/map.json");
  const points = data.movie_ids.map((id, i) => ({
    x: data.x[i],
    y: data.y[i],
    id,
    title: data.titles[i] ?? `Movie ${id}`,
  }));
  const byId = new Map(points.map((p) => [p.id, p]));
  const share = (i) => `${(100 * data.explained_variance[i]).toFixed(1)}% of the variance`;
  const pointAt = (element) => chart.data.datasets[element.datasetIndex].data[element.index];

  const chart = new Chart(canvas, {
    type: "scatter",
    data: { datasets: [dataset("all", `all ${points.length} movies`, points)] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      normalized: true,
      interaction: { mode: "nearest", intersect: true },
      scales: {
        x: { title: { display: true, text: `PC 1 (${share(0)})` } },
        y: { title: { display: true, text: `PC 2 (${share(1)})` } },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 10 } },
        tooltip: { callbacks: { label: (context) => context.raw.title } },
        zoom: {
          zoom: { wheel: { enabled: true }, drag: { enabled: true }, mode: "xy" },
          pan: { enabled: false },
        },
      },
      onHover: (_event, elements) => {
        const point = elements.length ? pointAt(elements[0]) : null;
        hover.textContent = point ? point.title : "";
        canvas.style.cursor = point ? "pointer" : "default";
      },
      onClick: (_event, elements) => {
        if (elements.length) location.assign(movieHref(pointAt(elements[0]).id));
      },
    },
  });

  canvas.addEventListener("keydown", (event) => {
    const pans = { ArrowLeft: { x: PAN_PX }, ArrowRight: { x: -PAN_PX }, ArrowUp: { y: PAN_PX }, ArrowDown: { y: -PAN_PX } };
    if (pans[event.key]) chart.pan(pans[event.key], undefined, "none");
    else if (event.key === "+" || event.key === "=") chart.zoom(ZOOM_STEP, "none");
    else if (event.key === "-") chart.zoom(1 / ZOOM_STEP, "none");
    else if (event.key === "0") chart.resetZoom("none");
    else return;
    event.preventDefault();
  });
  for (const button of document.querySelectorAll("#map [data-zoom]")) {
    button.addEventListener("click", () => {
      const how = button.dataset.zoom;
      if (how === "reset") chart.resetZoom("none");
      else chart.zoom(how === "in" ? ZOOM_STEP : 1 / ZOOM_STEP, "none");
    });
  }

  function highlight(group, ids, label) {
    const chosen = [...ids].map((id) => byId.get(id)).filter(Boolean);
    const datasets = chart.data.datasets;
    const at = datasets.findIndex((d) => d.group === group);
    const replacement = dataset(group, `${label} (${chosen.length})`, chosen);
    if (at >= 0) datasets[at] = replacement;
    else datasets.push(replacement);
    chart.update("none");
    return chosen;
  }

  status.textContent = `${points.length} movies, model ${data.model_version}.`;
  canvas.dataset.ready = "yes";
  return { chart, byId, highlight };
}
