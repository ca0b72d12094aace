// The status page: everything shown comes from the JSON API and is set as text (never parsed as HTML).
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
function rows(table, items) { table.tBodies[0].replaceChildren(...items); }
async function getJSON(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}
function runPath(run) { return run.split("/").map(encodeURIComponent).join("/"); }
function duration(seconds) {
  if (seconds == null) return "-";
  seconds = Math.round(seconds);
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  return `${(seconds / 3600).toFixed(1)}h`;
}
function ago(timestamp) { return timestamp ? `${duration(Date.now() / 1000 - timestamp)} ago` : "-"; }
function gib(bytes) { return bytes == null ? "-" : (bytes / 2 ** 30).toFixed(2); }
function jobName(job) { return job.name || job.path.split("/").pop(); }
function runLink(job, text) { return job.run ? el("a", {href: `/run/${runPath(job.run)}`}, text) : text; }

// A loss curve as inline SVG: one circle per point (data-points says how many).
function chart(points) {
  const width = 480, height = 160, pad = 30;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.dataset.points = String(points.length);
  const text = (x, y, words, anchor) => {
    const node = document.createElementNS(SVG, "text");
    node.setAttribute("x", x); node.setAttribute("y", y); node.setAttribute("text-anchor", anchor || "start");
    node.textContent = words; svg.append(node);
  };
  if (!points.length) { text(width / 2, height / 2, "no metrics yet", "middle"); return svg; }
  const steps = points.map(p => p[0]), losses = points.map(p => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)], [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const x = s => pad + (x1 > x0 ? (s - x0) / (x1 - x0) : 0.5) * (width - 2 * pad);
  const y = l => height - pad + (y1 > y0 ? -(l - y0) / (y1 - y0) : -0.5) * (height - 2 * pad);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
  svg.append(line);
  for (const [step, loss] of points) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", x(step).toFixed(1)); dot.setAttribute("cy", y(loss).toFixed(1)); dot.setAttribute("r", "2");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `step ${step}: loss ${loss}`;
    dot.append(title); svg.append(dot);
  }
  text(4, pad - 4, `loss ${y1.toPrecision(4)}`); text(4, height - pad + 12, y0.toPrecision(4));
  text(width - 4, height - 6, `step ${x1}`, "end"); text(pad, height - 6, `step ${x0}`);
  return svg;
}

async function runningJob(job) {
  const [detail, metrics] = await Promise.all([
    getJSON(`/api/jobs/${job.id}`),
    job.run ? getJSON(`/api/runs/${runPath(job.run)}/metrics`).catch(() => ({points: []})) : {points: []}]);
  const progress = job.progress || {};
  const share = progress.total_steps ? Math.min(1, progress.step / progress.total_steps) : 0;
  const bar = el("div", {class: "bar"}, el("div"));
  bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  const facts = el("p", {class: "facts"},
    el("span", {}, `GPUs ${job.gpus || "CPU"}`),
    el("span", {}, `step ${progress.step ?? "-"}/${progress.total_steps ?? "-"}`),
    el("span", {}, `${progress.tokens_per_second != null ? Math.round(progress.tokens_per_second) : "-"} tok/s`),
    el("span", {}, `ETA ${duration(progress.eta_s)}`),
    el("span", {}, `loss ${progress.loss ?? "-"}`),
    el("span", {}, `attempt ${job.attempts}`), el("span", {}, `started ${ago(job.started_at)}`));
  return el("div", {class: "job", "data-job-id": job.id, "data-state": job.state},
    el("div", {}, el("strong", {}, `#${job.id} `, runLink(job, jobName(job))), ` ${job.state}`,
      facts, bar, el("p", {class: "muted"}, job.reason || ""), el("pre", {class: "log"}, detail.log_tail || "(no output yet)")),
    chart(metrics.points));
}

async function overview() {
  const data = await getJSON("/api/jobs");
  const jobs = new Map(data.jobs.map(job => [job.id, job]));
  const daemon = data.daemon || {};
  document.getElementById("daemon").textContent =
    `watching ${daemon.folder || "?"} · runs in ${daemon.runs_dir || "?"} · GPUs ${(daemon.gpus || []).map(g => g.index).join(",") || "none"}` +
    (daemon.max_jobs ? ` · at most ${daemon.max_jobs} job${daemon.max_jobs === 1 ? "" : "s"} at once` : "");
  const paused = document.getElementById("paused");
  paused.hidden = !data.paused; paused.textContent = data.paused ? `Admission paused: ${data.paused}` : "";
  const running = data.running.map(id => jobs.get(id));
  const cards = await Promise.all(running.map(runningJob));
  document.getElementById("running").replaceChildren(...(cards.length ? cards : [el("p", {class: "muted"}, "none")]));
  rows(document.getElementById("queue"), data.queue.map((id, index) => {
    const job = jobs.get(id);
    return el("tr", {"data-job-id": job.id, "data-state": job.state},
      el("td", {}, index + 1), el("td", {}, `#${job.id}`), el("td", {}, jobName(job)), el("td", {}, job.priority),
      el("td", {}, job.waits_for || job.state), el("td", {}, job.reason || ""));
  }));
  rows(document.getElementById("recent"), data.recent.map(id => {
    const job = jobs.get(id);
    const reason = el("td", {}, job.reason || "");
    if (job.hint) reason.append(el("div", {class: "muted"}, `hint: ${job.hint}`));
    return el("tr", {"data-job-id": job.id, "data-state": job.state},
      el("td", {}, `#${job.id}`), el("td", {}, runLink(job, jobName(job))),
      el("td", {class: `state-${job.state}`}, job.state), el("td", {}, job.failure || ""),
      el("td", {}, ago(job.finished_at || job.updated_at)), reason);
  }));
}

async function run() {
  const name = decodeURIComponent(location.pathname.slice("/run/".length));
  const [data, metrics] = await Promise.all([getJSON(`/api/runs/${runPath(name)}`),
                                              getJSON(`/api/runs/${runPath(name)}/metrics`)]);
  const manifest = data.manifest || {}, plan = data.plan || {};
  document.title = `runner: ${plan.name || name}`;
  document.getElementById("title").textContent = `${plan.name || manifest.name || name} (${plan.method || manifest.method || "?"})`;
  document.getElementById("summary").textContent =
    `${manifest.state || "planned"} · ${data.path} · started ${(manifest.timings || {}).started_at || "-"} · finished ${manifest.finished_at || "-"}`;
  const error = document.getElementById("error");
  error.hidden = !manifest.error;
  if (manifest.error) error.textContent = `${manifest.error.kind}: ${manifest.error.message}` + (manifest.error.hint ? ` (hint: ${manifest.error.hint})` : "");
  document.getElementById("loss").replaceChildren(chart(metrics.points));
  rows(document.getElementById("metrics"), Object.entries(manifest.metrics || {}).filter(([, v]) => typeof v !== "object")
    .map(([key, value]) => el("tr", {}, el("th", {}, key), el("td", {}, value ?? "-"))));
  const trainable = plan.trainable || {}, memory = plan.memory || {}, steps = plan.steps || {};
  document.getElementById("plan-summary").textContent =
    `${trainable.mode || "?"}: ${trainable.trainable_parameters ?? "?"} of ${trainable.total_parameters ?? "?"} parameters ` +
    `(${trainable.trainable_percent ?? "?"}%) · ${steps.total_steps ?? "?"} steps · device ${(plan.device || {}).type || "?"} × ${(plan.device || {}).count ?? "?"} · ` +
    `memory ${gib(memory.total_bytes)} GiB of ${gib(memory.budget_bytes)} GiB (${memory.fits ? "fits" : "does not fit"})`;
  rows(document.getElementById("trainable"), (trainable.table || []).map(row =>
    el("tr", {}, el("td", {}, row.layers), el("td", {}, row.family), el("td", {}, row.status),
      el("td", {}, row.parameters), el("td", {}, row.names))));
  rows(document.getElementById("memory"), (memory.items || []).map(item =>
    el("tr", {}, el("td", {}, item.name), el("td", {}, gib(item.bytes)), el("td", {}, item.note || ""))));
  rows(document.getElementById("samples"), (manifest.samples || []).map(sample =>
    el("tr", {}, el("td", {}, el("pre", {}, sample.prompt)), el("td", {}, el("pre", {}, sample.before)),
      el("td", {}, el("pre", {}, sample.after ?? "-")))));
  evals(manifest.evals);
  document.getElementById("manifest").textContent = JSON.stringify(manifest, null, 2);
  return manifest.state === "running" || !manifest.state;
}

function evals(record) {
  // The run's evals: base and trained side by side, and the gates (runner/evals/stage.py writes them).
  document.getElementById("evals-section").hidden = !record;
  if (!record) return;
  const number = value => value == null ? "-" : Number(value).toFixed(3);
  rows(document.getElementById("evals"), (record.results || []).flatMap(result =>
    Object.entries(result.scores || {}).map(([metric, score]) => el("tr", {},
      el("td", {}, `${result.name}.${metric}`), el("td", {}, number(score.base)), el("td", {}, number(score.trained)),
      el("td", {}, score.delta == null ? "-" : (score.delta >= 0 ? "+" : "") + Number(score.delta).toFixed(3))))));
  document.getElementById("gates").replaceChildren(...(record.gates || []).map(gate =>
    el("li", {class: gate.passed ? "" : "warning"}, `${gate.passed ? "passed" : "MISSED"}: ${gate.condition} ` +
      `(${number(gate.value)}${gate.threshold == null ? "" : `; needed ${number(gate.threshold)}`})`)));
}

async function refresh() {
  let again = true;
  try {
    again = document.body.dataset.page === "run" ? await run() : (await overview(), true);
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = new Date().toLocaleTimeString();
  } catch (error) {
    const where = document.getElementById("daemon") || document.getElementById("summary");
    where.textContent = `cannot read the daemon's state: ${error.message}`;
  }
  if (again) setTimeout(refresh, POLL_MS);
}
refresh();
