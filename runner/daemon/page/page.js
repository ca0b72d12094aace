// The status page: everything shown comes from the JSON API and is set as text (never parsed as HTML).
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const COLOURS = ["#36c", "#c63", "#393", "#939", "#399", "#963"];
const MAX_DOTS = 200;  // a curve with more points is drawn as a line alone

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
function svgEl(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  return node;
}
function rows(table, items) { table.tBodies[0].replaceChildren(...items); }
async function getJSON(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}
function runPath(run) { return run.split("/").map(encodeURIComponent).join("/"); }

// --- numbers as people read them ----------------------------------------------------------------
const GROUPED = new Intl.NumberFormat("en-US");
function num(value, digits = 4) {  // 0.8192039728164673 -> 0.8192; 0.0002 -> 2.0e-4; 12345 -> 12,345
  if (typeof value !== "number" || !isFinite(value)) return value == null ? "-" : String(value);
  if (Number.isInteger(value)) return GROUPED.format(value);
  const size = Math.abs(value);
  if (size >= 1e5) return GROUPED.format(Math.round(value));
  if (size < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(digits)));
}
function count(value) {  // parameters and tokens: 134,515,008 -> 134.5M
  if (typeof value !== "number") return value == null ? "-" : String(value);
  for (const [size, unit] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
    if (Math.abs(value) >= size) return `${(value / size).toFixed(1)}${unit}`;
  }
  return GROUPED.format(value);
}
function bytes(value) {  // 3405774848 -> 3.17 GiB
  if (typeof value !== "number") return value == null ? "-" : String(value);
  for (const [size, unit] of [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]]) {
    if (Math.abs(value) >= size) return `${(value / size).toFixed(2)} ${unit}`;
  }
  return `${value} B`;
}
function rate(value) { return typeof value === "number" ? `${GROUPED.format(Math.round(value))} tok/s` : "-"; }
function percent(value) { return typeof value === "number" ? `${Number(value.toPrecision(3))}%` : "-"; }
function metric(key, value) {  // a manifest metric or a curve's value, in its unit
  if (typeof value !== "number") return value == null ? "-" : String(value);
  if (key.endsWith("_bytes")) return bytes(value);
  if (key === "tokens_per_second") return rate(value);
  if (key.endsWith("_tokens")) return count(value);
  return num(value);
}
function duration(seconds) {
  if (seconds == null) return "-";
  seconds = Math.round(seconds);
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  return `${(seconds / 3600).toFixed(1)}h`;
}
function ago(timestamp) { return timestamp ? `${duration(Date.now() / 1000 - timestamp)} ago` : "-"; }
function when(iso) {  // an ISO time as local date and time to the minute
  if (!iso) return "-";
  const at = new Date(iso);
  return isNaN(at) ? iso : at.toLocaleString("en-GB", {dateStyle: "medium", timeStyle: "short"});
}
function jobName(job, folder) {  // the spec's name; before it has one (invalid), its file under the folder
  if (job.name) return job.name;
  return folder && job.path.startsWith(folder + "/") ? job.path.slice(folder.length + 1) : job.path.split("/").pop();
}
function runLink(job, text) { return job.run ? el("a", {href: `/run/${runPath(job.run)}`}, text) : text; }

// --- charts -------------------------------------------------------------------------------------
// Ticks at round values (1, 2 or 5 x a power of ten) that cover [low, high].
function ticks(low, high, wanted) {
  if (!(high > low)) { const pad = Math.abs(low) * 0.1 || 1; low -= pad; high += pad; }
  const rough = (high - low) / wanted, power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => (high - low) / s <= wanted);
  const first = Math.floor(low / step) * step, last = Math.ceil(high / step) * step;
  const values = [];
  for (let value = first; value <= last + step / 2; value += step) values.push(Number(value.toPrecision(12)));
  return values;
}
function tickLabel(value, values) {
  const size = Math.max(...values.map(Math.abs));
  if (size !== 0 && (size < 1e-2 || size >= 1e5)) return value === 0 ? "0" : value.toExponential(1);
  return num(value, 3);
}
// Curves over steps as inline SVG that scales to its box: axes with ticks, one polyline per series (dashed
// for a compared run), dots for the first series when it has few points (data-points says how many).
function chart(title, series, unit) {
  const width = 480, height = 220, left = 54, right = 12, top = 10, bottom = 30;
  const drawn = series.filter(s => s.points.length);
  const figure = el("figure", {class: "chart"}, el("figcaption", {}, title));
  const svg = svgEl("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title});
  svg.dataset.points = String(series.length ? series[0].points.length : 0);
  svg.dataset.series = series.map(s => s.label).join("|");
  figure.append(svg);
  const text = (x, y, words, anchor) => {
    const node = svgEl("text", {x, y, "text-anchor": anchor || "start"});
    node.textContent = words; svg.append(node);
  };
  if (!drawn.length) { text(width / 2, height / 2, "no metrics yet", "middle"); return figure; }
  const all = drawn.flatMap(s => s.points);
  const xTicks = ticks(Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0])), 6);
  const yTicks = ticks(Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1])), 5);
  const [x0, x1, y0, y1] = [xTicks[0], xTicks.at(-1), yTicks[0], yTicks.at(-1)];
  const x = s => left + (s - x0) / (x1 - x0) * (width - left - right);
  const y = v => height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom);
  for (const value of yTicks) {
    svg.append(svgEl("line", {class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value)}));
    text(left - 4, y(value) + 3, tickLabel(value, yTicks), "end");
  }
  for (const value of xTicks) {
    svg.append(svgEl("line", {class: "axis", x1: x(value), x2: x(value), y1: height - bottom, y2: height - bottom + 4}));
    text(x(value), height - bottom + 15, num(value, 3), "middle");
  }
  svg.append(svgEl("line", {class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom}));
  svg.append(svgEl("line", {class: "axis", x1: left, x2: left, y1: top, y2: height - bottom}));
  text(width - right, height - 2, "step", "end");
  series.forEach((one, index) => {
    if (!one.points.length) return;
    const line = svgEl("polyline", {stroke: one.colour, class: one.compared ? "compared" : "",
      points: one.points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")});
    svg.append(line);
    if (index === 0 && one.points.length <= MAX_DOTS) {
      for (const [step, value] of one.points) {
        const dot = svgEl("circle", {cx: x(step).toFixed(1), cy: y(value).toFixed(1), r: "2", fill: one.colour});
        const tip = svgEl("title");
        tip.textContent = `step ${step}: ${one.label} ${metric(unit, value)}`;
        dot.append(tip); svg.append(dot);
      }
    }
  });
  if (series.length > 1) {
    figure.append(el("div", {class: "legend"}, ...series.map(one => {
      const swatch = el("i"); swatch.style.background = one.colour;
      return el("span", {}, swatch, one.label + (one.points.length ? "" : " (none)"));
    })));
  }
  return figure;
}

// The run page's charts: which metrics share a chart, in this order; any other metric gets one of its own.
const CHARTS = [
  ["Loss", ["loss", "eval_loss"]], ["Learning rate", ["learning_rate"]], ["Gradient norm", ["grad_norm"]],
  ["Tokens per second", ["tokens_per_second"]]];
function charts(series, compared, comparedName) {
  const known = new Set(CHARTS.flatMap(([, keys]) => keys));
  const keys = Object.keys(series).concat(Object.keys(compared || {}));
  const others = [...new Set(keys.filter(key => !known.has(key)))].sort((a, b) =>
    (b.startsWith("eval_") - a.startsWith("eval_")) || a.localeCompare(b));
  const groups = CHARTS.concat(others.map(key => [key.startsWith("eval_") ? `Eval: ${key.slice(5)}` : key, [key]]));
  return groups.filter(([, names]) => names.some(name => series[name] || (compared || {})[name]))
    .map(([title, names]) => {
      const lines = [];
      names.forEach((name, index) => {
        const label = names.length > 1 ? name : "this run";
        lines.push({label, points: series[name] || [], colour: COLOURS[index * 2 % COLOURS.length]});
        if (compared) lines.push({label: `${names.length > 1 ? name + ", " : ""}${comparedName}`,
          points: compared[name] || [], colour: COLOURS[(index * 2 + 1) % COLOURS.length], compared: true});
      });
      return chart(title, lines, names[0]);
    });
}

// --- the overview ---------------------------------------------------------------------------------
function diagnosticsList(job) {
  const list = el("ul", {class: "diagnostics"});
  for (const found of job.diagnostics || []) {
    const place = found.range || {}, start = place.start || {};
    const where = `${place.filename || ""}${start.line ? `:${start.line}` : ""}${start.column ? `:${start.column}` : ""}`;
    const item = el("li", {}, `${where}: ${found.path ? found.path + ": " : ""}${found.summary}`);
    if (found.hint) item.append(el("div", {class: "muted"}, `hint: ${found.hint}`));
    list.append(item);
  }
  return list;
}

async function runningJob(job, folder) {
  const [detail, metrics] = await Promise.all([
    getJSON(`/api/jobs/${job.id}`),
    job.run ? getJSON(`/api/runs/${runPath(job.run)}/metrics`).catch(() => ({series: {}})) : {series: {}}]);
  const progress = job.progress || {};
  const share = progress.total_steps ? Math.min(1, progress.step / progress.total_steps) : 0;
  const bar = el("div", {class: "bar"}, el("div"));
  bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  const facts = el("p", {class: "facts"},
    el("span", {}, `GPUs ${job.gpus || "CPU"}`),
    el("span", {}, `step ${progress.step ?? "-"}/${progress.total_steps ?? "-"}`),
    el("span", {}, rate(progress.tokens_per_second)),
    el("span", {}, `ETA ${duration(progress.eta_s)}`),
    el("span", {}, `loss ${num(progress.loss)}`),
    el("span", {}, `attempt ${progress.attempt || job.attempts}`), el("span", {}, `started ${ago(job.started_at)}`));
  const series = metrics.series || {};
  const lines = [{label: "loss", points: series.loss || [], colour: COLOURS[0]}];
  if (series.eval_loss) lines.push({label: "eval_loss", points: series.eval_loss, colour: COLOURS[2]});
  return el("div", {class: "job", "data-job-id": job.id, "data-state": job.state},
    el("div", {}, el("strong", {}, `#${job.id} `, runLink(job, jobName(job, folder))), ` ${job.state}`,
      facts, bar, el("p", {class: "muted"}, job.reason || ""), el("pre", {class: "log"}, detail.log_tail || "(no output yet)")),
    chart("Loss", lines, "loss"));
}

async function overview() {
  const data = await getJSON("/api/jobs");
  const jobs = new Map(data.jobs.map(job => [job.id, job]));
  const daemon = data.daemon || {}, folder = daemon.folder;
  document.getElementById("daemon").textContent =
    `watching ${folder || "?"} · runs in ${daemon.runs_dir || "?"} · GPUs ${(daemon.gpus || []).map(g => g.index).join(",") || "none"}` +
    (daemon.max_jobs ? ` · at most ${daemon.max_jobs} job${daemon.max_jobs === 1 ? "" : "s"} at once` : "");
  const paused = document.getElementById("paused");
  paused.hidden = !data.paused; paused.textContent = data.paused ? `Admission paused: ${data.paused}` : "";
  const running = data.running.map(id => jobs.get(id));
  const cards = await Promise.all(running.map(job => runningJob(job, folder)));
  document.getElementById("running").replaceChildren(...(cards.length ? cards : [el("p", {class: "muted"}, "none")]));
  rows(document.getElementById("queue"), data.queue.map((id, index) => {
    const job = jobs.get(id);
    return el("tr", {"data-job-id": job.id, "data-state": job.state},
      el("td", {class: "number"}, index + 1), el("td", {}, `#${job.id}`), el("td", {class: "code"}, jobName(job, folder)),
      el("td", {class: "number"}, job.priority), el("td", {}, job.waits_for || job.state), el("td", {}, job.reason || ""));
  }));
  rows(document.getElementById("recent"), data.recent.map(id => {
    const job = jobs.get(id);
    const reason = el("td", {});
    if (job.state === "invalid" && (job.diagnostics || []).length) {
      const shown = job.diagnostics.length;  // the daemon keeps the first 20; its reason counts them all
      const errors = Math.max(shown, Number((/^(\d+) error/.exec(job.reason || "") || [])[1] || 0));
      reason.append(`${errors} error${errors === 1 ? "" : "s"}${errors > shown ? ` (the first ${shown})` : ""}:`,
        diagnosticsList(job));
    } else {
      reason.append(job.reason || "");
      if (job.hint) reason.append(el("div", {class: "muted"}, `hint: ${job.hint}`));
    }
    return el("tr", {"data-job-id": job.id, "data-state": job.state},
      el("td", {}, `#${job.id}`), el("td", {class: "code"}, runLink(job, jobName(job, folder))),
      el("td", {class: `state-${job.state}`}, job.state), el("td", {}, job.failure || ""),
      el("td", {}, ago(job.finished_at || job.updated_at)), reason);
  }));
}

// --- a run's page -----------------------------------------------------------------------------------
let compareChoices = "";
async function compareOptions(name, chosen) {
  const data = await getJSON("/api/jobs").catch(() => ({jobs: []}));
  const runs = data.jobs.filter(job => job.run && job.run !== name)
    .sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  const key = runs.map(job => job.run).join("|") + `#${chosen}`;
  if (key === compareChoices) return runs;
  compareChoices = key;
  const select = document.getElementById("compare");
  select.replaceChildren(el("option", {value: ""}, runs.length ? "(none)" : "(no other run)"),
    ...runs.map(job => {
      const option = el("option", {value: job.run}, `${job.name || job.path.split("/").pop()} · ${job.state} · ${job.run.split("/").pop()}`);
      option.selected = job.run === chosen;
      return option;
    }));
  return runs;
}

async function run() {
  const name = decodeURIComponent(location.pathname.slice("/run/".length));
  const compareWith = new URLSearchParams(location.search).get("compare") || "";
  const [data, metrics, compared] = await Promise.all([getJSON(`/api/runs/${runPath(name)}`),
    getJSON(`/api/runs/${runPath(name)}/metrics`),
    compareWith ? getJSON(`/api/runs/${runPath(compareWith)}/metrics`).catch(() => null) : null]);
  const runs = await compareOptions(name, compareWith);
  const manifest = data.manifest || {}, plan = data.plan || {};
  document.title = `runner: ${plan.name || name}`;
  document.getElementById("title").textContent = `${plan.name || manifest.name || name} (${plan.method || manifest.method || "?"})`;
  const timings = manifest.timings || {};
  document.getElementById("summary").textContent =
    `${manifest.state || "planned"} · ${data.path} · started ${when(timings.started_at)} · finished ${when(manifest.finished_at)}` +
    (timings.duration_s != null ? ` · took ${duration(timings.duration_s)}` : "") +
    ((manifest.attempts || []).length > 1 ? ` · ${manifest.attempts.length} attempts` : "");
  const error = document.getElementById("error");
  error.hidden = !manifest.error;
  if (manifest.error) error.textContent = `${manifest.error.kind}: ${manifest.error.message}` + (manifest.error.hint ? ` (hint: ${manifest.error.hint})` : "");
  const comparedJob = runs.find(job => job.run === compareWith);
  const comparedName = comparedJob ? `${comparedJob.name || "other"} ${compareWith.split("/").pop()}` : compareWith.split("/").pop();
  document.getElementById("charts").replaceChildren(...charts(metrics.series || {}, compared && compared.series, comparedName));
  const values = Object.entries(manifest.metrics || {}).filter(([, v]) => typeof v !== "object")
    .concat(Object.entries((manifest.metrics || {}).method || {}));
  rows(document.getElementById("metrics"), values.map(([key, value]) =>
    el("tr", {}, el("th", {}, key.replaceAll("_", " ")), el("td", {class: "number"}, metric(key, value)))));
  const trainable = plan.trainable || {}, memory = plan.memory || {}, steps = plan.steps || {}, device = plan.device || {};
  document.getElementById("plan-summary").textContent =
    `${trainable.mode || "?"}: ${count(trainable.trainable_parameters)} of ${count(trainable.total_parameters)} parameters ` +
    `(${percent(trainable.trainable_percent)}) · ${num(steps.total_steps)} steps · device ${device.type || "?"} × ${device.count ?? "?"} · ` +
    `memory ${bytes(memory.total_bytes)} of ${bytes(memory.budget_bytes)} (${memory.fits ? "fits" : "does not fit"})`;
  rows(document.getElementById("trainable"), (trainable.table || []).map(row =>
    el("tr", {}, el("td", {}, row.layers), el("td", {}, row.family), el("td", {}, row.status),
      el("td", {class: "number"}, count(row.parameters)), el("td", {class: "code"}, row.names))));
  rows(document.getElementById("memory"), (memory.items || []).map(item =>
    el("tr", {}, el("td", {}, item.name), el("td", {class: "number"}, bytes(item.bytes)), el("td", {}, item.note || ""))));
  rows(document.getElementById("samples"), (manifest.samples || []).map(sample =>
    el("tr", {}, ...[sample.prompt, sample.before, sample.after ?? "-"].map(text =>
      el("td", {}, el("p", {class: "prose"}, text))))));
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

function onCompare(event) {
  const url = new URL(location.href);
  if (event.target.value) url.searchParams.set("compare", event.target.value); else url.searchParams.delete("compare");
  history.replaceState(null, "", url);
  refresh(false);
}

let timer = null;
async function refresh(poll = true) {
  let again = true;
  try {
    again = document.body.dataset.page === "run" ? await run() : (await overview(), true);
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = new Date().toLocaleTimeString();
  } catch (error) {
    const where = document.getElementById("daemon") || document.getElementById("summary");
    where.textContent = `cannot read the daemon's state: ${error.message}`;
  }
  if (poll && again) { clearTimeout(timer); timer = setTimeout(refresh, POLL_MS); }
}
const picker = document.getElementById("compare");
if (picker) picker.addEventListener("change", onCompare);
refresh();
