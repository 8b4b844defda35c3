// pgmld dashboard: the only script. A running model's page polls its live JSON every two
// seconds and swaps in the server-drawn chart, progress and ETA; the jobs page reloads
// itself while jobs run (data-reload on <body>).
"use strict";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function follow(chart) {
  for (;;) {
    await sleep(2000);
    let live;
    try {
      const r = await fetch(chart.dataset.liveUrl, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.href = "/login"; return; }
      if (!r.ok) continue;
      live = await r.json();
    } catch (e) {
      continue; // pgmld restarting, network blip: try again
    }
    chart.innerHTML = live.chart;
    const progress = document.getElementById("progress");
    if (progress && live.progress != null) progress.value = live.progress;
    const step = document.getElementById("step");
    if (step && live.step != null) step.textContent = `step ${live.step} of ${live.max_steps ?? "?"}`;
    const eta = document.getElementById("eta");
    if (eta) eta.textContent = live.eta && live.status === "in_progress" ? `about ${live.eta} left` : "";
    if (live.status !== "in_progress") {
      location.reload(); // final metrics, files and status
      return;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const chart = document.querySelector("#chart[data-live='on']");
  if (chart) follow(chart);
  const reload = Number(document.body.dataset.reload || 0);
  if (reload > 0) setTimeout(() => location.reload(), reload * 1000);
});
