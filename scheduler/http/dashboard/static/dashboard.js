// The dashboard at `/`: charts of `/system/history`, tables of `/system/status`, the job list
// (`/jobs`, paged by `before`), a job's detail with cancel, and model load/unload. Plain JS, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const usd = (v) => "$" + Number(v || 0).toFixed(6);
const when = (t) => (t == null ? "–" : new Date(t * 1000).toLocaleString());
const seconds = (a, b) => (a == null || b == null ? "–" : (b - a).toFixed(3) + " s");

// ---- talking to the daemon ----------------------------------------------------------------------

async function api(path, options = {}) {
  const answer = await fetch(path, {headers: {"Accept": "application/json"}, ...options});
  if (answer.status === 401) {
    location.reload(); // the session ended: `/` shows the login form
    throw new Error("not logged in");
  }
  const body = await answer.json().catch(() => null);
  if (!answer.ok) throw new Error((body && (body.detail || body.error)) || "HTTP " + answer.status);
  return body;
}

function showProblem(error) {
  $("problem").hidden = !error;
  $("problem").textContent = error ? "⚠ " + error.message : "";
}

function table(id, head, rows, rowAttrs = () => "") {
  const thead = head.some((h) => h) ? "<thead><tr>" + head.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr></thead>" : "";
  $(id).innerHTML = thead + "<tbody>" +
    (rows.length ? rows.map((r, i) => "<tr " + rowAttrs(i) + ">" + r.map((c) => "<td>" + c + "</td>").join("") + "</tr>").join("")
      : "<tr><td class=muted colspan=" + head.length + ">none</td></tr>") + "</tbody>";
}

// ---- charts (uPlot) -----------------------------------------------------------------------------

const COLORS = ["#3b7dd8", "#d8573b", "#2f9e44", "#ae3ec9", "#f59f00", "#1098ad", "#495057", "#e64980"];
// Each chart: a title, and the series it draws from one history answer ({label: values}).
const CHARTS = [
  {id: "completed", title: "completed jobs/s", series: (h) => h.completed_per_s},
  {id: "errors", title: "errors/s", series: (h) => h.errors_per_s},
  {id: "latency", title: "latency (ms)", series: (h) => ({
    p50: h.latency_p50_s.map((v) => (v == null ? null : v * 1000)),
    p99: h.latency_p99_s.map((v) => (v == null ? null : v * 1000))})},
  {id: "queue", title: "queued jobs (model/priority)", series: (h) => h.queue_depth},
  {id: "gpu-memory", title: "GPU memory (MiB: card, ledger)", series: (h) => ({
    ...prefixed("card ", h.gpu_memory_used_mb), ...prefixed("ledger ", h.gpu_ledger_mb)})},
  {id: "gpu-util", title: "GPU utilization (%)", series: (h) => prefixed("card ", h.gpu_utilization_pct)},
  {id: "cpu", title: "CPU per process (% of a core)", series: (h) => h.worker_cpu_pct},
  {id: "rss", title: "RSS per process (MiB)", series: (h) => h.worker_rss_mb},
  {id: "cost", title: "cost ($ per minute)", series: (h) => ({"$/min": h.cost_per_min_usd})},
];
const plots = {}; // chart id -> {plot, labels}

function prefixed(prefix, byKey) {
  return Object.fromEntries(Object.entries(byKey).map(([k, v]) => [prefix + k, v]));
}

function drawChart(chart, at, byLabel) {
  const labels = Object.keys(byLabel);
  const data = [at, ...labels.map((label) => byLabel[label])];
  const held = plots[chart.id];
  if (held && held.labels.join("\n") === labels.join("\n")) {
    held.plot.setData(data);
    return;
  }
  if (held) held.plot.destroy(); // the set of series changed (a new model, a worker restarted)
  const box = $("chart-" + chart.id);
  const options = {
    width: Math.max(320, box.clientWidth - 8), height: 180,
    series: [{}, ...labels.map((label, i) => ({label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false}))],
    axes: [{}, {size: 60}],
    scales: {x: {time: true}},
    legend: {live: false},
  };
  plots[chart.id] = {plot: new uPlot(options, data, box.querySelector(".plot")), labels};
  box.dataset.series = labels.length;
}

async function refreshHistory() {
  const history = await api("/system/history");
  for (const chart of CHARTS) drawChart(chart, history.at, chart.series(history));
  $("charts").dataset.points = history.at.length;
  $("history-note").textContent = "(a sample every " + history.interval_s + " s, " + history.at.length + " so far)";
}

// ---- the system status --------------------------------------------------------------------------

function bar(used, total) {
  return used.toFixed(0) + " / " + total.toFixed(0) + " MiB" + (total ? " (" + (100 * used / total).toFixed(0) + "%)" : "");
}

function modelButtons(name) {
  return "<button data-action=load data-model='" + esc(name) + "'>load</button> " +
    "<button data-action=unload data-model='" + esc(name) + "'>unload</button>";
}

function drawStatus(s) {
  $("summary").textContent = "preset " + s.scheduler.preset + " · up " + s.scheduler.uptime_s.toFixed(0) + " s · " +
    (s.scheduler.accepting ? "accepting jobs" : "not accepting jobs");
  table("models", ["model", "device", "batch", "loaded on", "queued", "state", ""], s.models.map((m) => [
    esc(m.name), esc(m.device), m.max_batch_size + " / " + m.max_delay_ms + " ms", esc(m.loaded_on.join(", ")), m.queued,
    m.failed ? "<span class=bad>failed: " + esc(m.failed) + "</span>"
      : esc(m.state || (m.loaded_on.length ? "ready" : "unloaded")) + (m.preload ? " (preload)" : ""),
    modelButtons(m.name)]));
  table("workers", ["worker", "pid", "device", "state", "models", "in flight", "done", "restarts", "RSS"], s.workers.map((w) => [
    esc(w.worker_id), w.pid ?? "–", esc(w.device), "<span class=" + (w.alive ? "ok" : "bad") + ">" + esc(w.state) + "</span>",
    esc(w.loaded_models.map((m) => m.model + (m.loading ? " (loading)" : "")).join(", ")),
    w.jobs_in_flight, w.jobs_done, w.restarts, w.rss_mb + " MiB"]));
  table("gpus", ["#", "name", "memory (card)", "ledger", "utilization", "workers"], s.gpu.map((g) => [
    g.index, esc(g.name) + (g.simulated ? " <span class=muted>(simulated)</span>" : ""), bar(g.used_mb, g.total_mb),
    bar(g.ledger_used_mb, g.total_mb), g.utilization_pct == null ? "–" : g.utilization_pct + "%", esc(g.workers.join(", "))]));
  const r = s.render;
  table("render", ["state", "pid", "browser", "pages", "renders (ok / failed)", "fallbacks", "restarts"], r ? [[
    "<span class=" + (r.alive ? "ok" : "bad") + ">" + esc(r.state) + "</span>", r.pid ?? "–",
    r.browser_available ? "ok" : "<span class=bad>" + esc(r.browser_error || "unavailable") + "</span>",
    r.pages_active + " active, " + r.pages_waiting + " waiting of " + r.max_pages,
    r.renders_done + " (" + r.renders_ok + " / " + r.renders_failed + ")", r.fallbacks, r.restarts]] : []);
  if (!r) $("render").querySelector("td").textContent = "rendering is off (render_enabled = false)";
  const q = s.queue;
  table("queue", ["queued", "processing", "completed", "error", "cancelled", "limit"],
    [[q.queued, q.processing, q.completed, q.error, q.cancelled, q.max_queue]]);
  table("pipelines", ["pipeline", "stages", "cost"], s.pipelines.map((p) => [esc(p.name),
    esc(p.stages.map((st) => st.name + " (" + st.model + ", " + st.device + ")").join(" → ")), usd(p.cost_usd)]));
  const c = s.costs;
  $("cost-summary").textContent = "total " + usd(c.total_usd) + " · " + c.jobs_ended + " job(s) ended · per 1,000 jobs " +
    (c.per_1000_jobs_usd == null ? "–" : usd(c.per_1000_jobs_usd)) + " · rates " +
    Object.entries(c.rates).map(([k, v]) => k + " $" + v + "/s").join(", ");
  table("costs", ["by", "name", "dollars"], [
    ...Object.entries(c.by_device).map(([k, v]) => ["device", esc(k), usd(v)]),
    ...Object.entries(c.by_model).map(([k, v]) => ["model", esc(k), usd(v)]),
    ...Object.entries(c.by_pipeline).map(([k, v]) => ["pipeline", esc(k), usd(v)])]);
  const p = s.cpu_pool;
  $("pool-summary").textContent = p.running + " running (" + p.ready + " ready) of " + p.min_workers + "–" + p.max_workers +
    " · " + p.backlog + " CPU job(s) waiting · idle timeout " + p.idle_timeout_s + " s";
  table("pool", ["when", "change", "worker", "why"], p.changes.slice().reverse().map((ch) => [
    new Date(ch.at * 1000).toLocaleTimeString(), esc(ch.change), esc(ch.worker), esc(ch.reason)]));
  const j = s.journal;
  table("journal", ["file", "size", "in use / bound", "pruned (size, age)", "state"], j ? [[esc(j.path), j.size_mb.toFixed(1) + " MiB",
    j.max_mb ? j.used_mb.toFixed(1) + " / " + j.max_mb.toFixed(0) + " MiB" : j.used_mb.toFixed(1) + " MiB (no bound)",
    j.pruned_for_size + ", " + j.pruned_for_age,
    j.problem ? "<span class=bad>" + esc(j.problem) + "</span>" : "<span class=ok>ok</span>"]] : []);
  const models = $("job-filter").elements.model;
  const names = [...s.models.map((m) => m.name), ...s.pipelines.map((p) => p.name)];
  for (const name of names) {
    if (![...models.options].some((o) => o.value === name)) models.add(new Option(name, name));
  }
}

async function refreshStatus() {
  drawStatus(await api("/system/status"));
}

$("models").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const {action, model} = button.dataset;
  $("model-note").textContent = action + " " + model + "…";
  try {
    const done = await api("/models/" + encodeURIComponent(model) + "/" + action, {method: "POST"});
    $("model-note").textContent = action + " " + model + ": " + (done.workers.join(", ") || "no worker");
    await refreshStatus();
  } catch (error) {
    $("model-note").textContent = action + " " + model + " failed: " + error.message;
  }
});

// ---- the job list and a job's detail ------------------------------------------------------------

const pages = {cursors: [null], jobs: []}; // cursors[i]: the `before` of page i; the newest page has none

function jobQuery(before) {
  const form = $("job-filter").elements;
  const query = new URLSearchParams({limit: "25"});
  for (const name of ["status", "model"]) if (form[name].value) query.set(name, form[name].value);
  for (const name of ["since", "until"]) {
    if (form[name].value) query.set(name, String(new Date(form[name].value).getTime() / 1000));
  }
  if (before) query.set("before", before);
  return "/jobs?" + query;
}

async function refreshJobs() {
  const before = pages.cursors[pages.cursors.length - 1];
  const page = await api(jobQuery(before));
  pages.jobs = page.jobs;
  pages.next = page.next_before;
  table("jobs", ["job", "model", "status", "priority", "created", "took", "worker", "attempts"], page.jobs.map((j) => [
    "<span class=mono>" + esc(j.job_id) + "</span>", esc(j.model), esc(j.status), esc(j.priority), when(j.created_at),
    seconds(j.created_at, j.ended_at), esc(j.worker || "–"), j.attempts]), (i) => "data-job='" + esc(page.jobs[i].job_id) + "'");
  $("jobs-older").disabled = !page.next_before;
  $("jobs-newest").disabled = pages.cursors.length === 1;
  $("jobs-note").textContent = "page " + pages.cursors.length + " · " + page.jobs.length + " job(s)";
}

$("job-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  pages.cursors = [null];
  refreshJobs().catch(showProblem);
});
$("jobs-newest").addEventListener("click", () => { pages.cursors = [null]; refreshJobs().catch(showProblem); });
$("jobs-older").addEventListener("click", () => {
  if (pages.next) pages.cursors.push(pages.next);
  refreshJobs().catch(showProblem);
});
$("jobs").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-job]");
  if (row) openJob(row.dataset.job).catch(showProblem);
});

async function openJob(jobId) {
  const job = await api("/jobs/" + encodeURIComponent(jobId));
  $("detail-title").textContent = "job " + job.job_id;
  $("job-detail").dataset.job = job.job_id;
  $("job-detail").dataset.status = job.status;
  table("detail-fields", ["", ""], [
    ["model", esc(job.model)], ["status", esc(job.status) + (job.error_kind ? " (" + esc(job.error_kind) + ")" : "")],
    ["priority", esc(job.priority)], ["created", when(job.created_at)], ["started", when(job.started_at)],
    ["ended", when(job.ended_at)], ["queued for", seconds(job.created_at, job.started_at)],
    ["ran for", seconds(job.started_at, job.ended_at)], ["attempts", job.attempts], ["worker", esc(job.worker || "–")],
    ["device", esc(job.device || "–")], ["timeout", job.timeout_s == null ? "none" : job.timeout_s + " s"],
    ["cost", usd(job.cost_usd)], ["queue position", job.queue_position ?? "–"]]);
  table("detail-stages", ["stage", "model", "status", "worker", "device", "queued", "ran", "cost"], (job.stages || []).map((st) => [
    esc(st.name), esc(st.model), esc(st.status), esc(st.worker || "–"), esc(st.device || "–"),
    st.queued_s == null ? "–" : st.queued_s.toFixed(3) + " s", st.run_s == null ? "–" : st.run_s.toFixed(3) + " s", usd(st.cost_usd)]));
  $("detail-outcome-title").textContent = job.error ? "error" : "result";
  $("detail-outcome").textContent = job.error ? job.error : JSON.stringify(job.result, null, 2);
  $("detail-cancel").hidden = !["queued", "processing"].includes(job.status);
  if (!$("job-detail").open) $("job-detail").showModal();
}

$("detail-cancel").addEventListener("click", async () => {
  const jobId = $("job-detail").dataset.job;
  try {
    await api("/jobs/" + encodeURIComponent(jobId), {method: "DELETE"});
  } catch (error) {
    showProblem(error);
  }
  await openJob(jobId);
  await refreshJobs();
});

// ---- the session ---------------------------------------------------------------------------------

$("logout").addEventListener("click", async () => {
  await fetch("/logout", {method: "POST"});
  location.reload();
});

// ---- every 2 s ----------------------------------------------------------------------------------

function buildCharts() {
  $("charts").innerHTML = CHARTS.map((c) =>
    "<div class=chart id='chart-" + c.id + "'><h3>" + esc(c.title) + "</h3><div class=plot></div></div>").join("");
}

async function tick() {
  try {
    await Promise.all([refreshStatus(), refreshHistory(), pages.cursors.length === 1 ? refreshJobs() : null]);
    showProblem(null);
  } catch (error) {
    showProblem(error);
  }
}

buildCharts();
fetch("/login").then((r) => r.json()).then((s) => { $("logout").hidden = !s.token_required; }).catch(() => {});
tick();
setInterval(tick, 2000);
