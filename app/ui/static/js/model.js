// The model's page: version, data, hyper-parameters, validation metrics beside the baselines,
// and the training curves (GET /model and GET /ui/model/history.json).

import { getJSON } from "./api.js";
import { fixed, h, setStatus } from "./dom.js";

const status = document.getElementById("model-status");

function facts(element, pairs) {
  element.replaceChildren(...pairs.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value ?? "–")]));
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : String(+value.toPrecision(6));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function metricsTable(metrics) {
  const better = (a, b) => (a !== null && b !== null ? `${fixed(100 * (1 - a / b), 1)}% lower` : "–");
  const rows = [
    ["this model", metrics.rmse, metrics.mae, "–"],
    ["bias only (global mean + user + movie bias)", metrics.bias_only_rmse, null, better(metrics.rmse, metrics.bias_only_rmse)],
    ["global mean", metrics.global_mean_rmse, null, better(metrics.rmse, metrics.global_mean_rmse)],
  ];
  const table = document.getElementById("metrics");
  table.replaceChildren(
    h("caption", {}, `${show(metrics.n_held_out)} held-out ratings (${show(metrics.n_train)} trained on)`),
    h("thead", {}, h("tr", {}, ["", "RMSE", "MAE", "this model's RMSE is"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.map(([name, rmse, mae, gain]) =>
        h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, fixed(rmse, 4)), h("td", { class: "num" }, fixed(mae, 4)), h("td", { class: "num" }, gain)),
      ),
    ),
  );
}

function curves(history) {
  const table = document.getElementById("history");
  table.replaceChildren(
    h("thead", {}, h("tr", {}, ["epoch", "train sqrt(loss)", "validation RMSE", "seconds"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      history.epochs.map((e) =>
        h(
          "tr",
          { class: e.epoch === history.best_epoch ? "best" : null },
          h("td", { class: "num" }, e.epoch === history.best_epoch ? `${e.epoch} (kept)` : String(e.epoch)),
          h("td", { class: "num" }, fixed(e.train_rmse, 4)),
          h("td", { class: "num" }, fixed(e.val_rmse, 4)),
          h("td", { class: "num" }, fixed(e.seconds, 2)),
        ),
      ),
    ),
  );
  const Chart = globalThis.Chart;
  if (!Chart) throw new Error("the chart library did not load");
  const canvas = document.getElementById("curves");
  new Chart(canvas, {
    type: "line",
    data: {
      labels: history.epochs.map((e) => e.epoch),
      datasets: [
        { label: "train sqrt(loss)", data: history.epochs.map((e) => e.train_rmse), borderColor: "#1971c2", backgroundColor: "#1971c2" },
        { label: "validation RMSE", data: history.epochs.map((e) => e.val_rmse), borderColor: "#e8590c", backgroundColor: "#e8590c" },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { title: { display: true, text: "epoch" } }, y: { title: { display: true, text: "rating error" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
  canvas.dataset.ready = "yes";
}

async function start() {
  let model;
  let history;
  try {
    [model, history] = await Promise.all([getJSON("/model"), getJSON("/ui/model/history.json")]);
  } catch (error) {
    setStatus(status, `No model: ${error.message}`, true);
    return;
  }
  setStatus(status, `Serving ${model.version}.`);
  facts(document.getElementById("model-facts"), [
    ["Version", model.version],
    ["Trained", model.created_at],
    ["Loaded", model.loaded_at],
    ["Users × movies", `${show(model.n_users)} × ${show(model.n_movies)}`],
    ["Factors", show(model.n_factors)],
    ["Global mean", fixed(model.global_mean, 3)],
    ["Rating scale", `${model.rating_scale.min} to ${model.rating_scale.max}, step ${model.rating_scale.step}`],
    ["Precomputed lists", model.recommendations_table ? `${show(model.recommendations_table.users)} users` : "none"],
  ]);
  facts(document.getElementById("hyper"), Object.entries(model.hyper_parameters).map(([k, v]) => [k, show(v)]));
  facts(document.getElementById("data"), [
    ["Source", model.data_source],
    ["Ratings", show(model.n_ratings)],
    ...Object.entries(model.data_fingerprint).map(([k, v]) => [
      `fingerprint: ${k}`,
      k.endsWith("_at") && typeof v === "number" ? `${new Date(v * 1000).toISOString()} (${v})` : show(v),
    ]),
  ]);
  metricsTable(model.metrics);
  curves(history);
}

start();
