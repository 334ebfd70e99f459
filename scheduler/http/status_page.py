"""The status page served at `/`: one HTML document that polls `/system/status` and draws it."""

STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelsched</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
 h1{font-size:1.3rem;margin:0 0 .2rem} h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
 table{border-collapse:collapse;min-width:40rem} td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
 th{background:#f3f3f3} .ok{color:#187a2f} .bad{color:#b00020} .muted{color:#777}
 .bar{background:#e6e6e6;width:10rem;height:.7rem;display:inline-block;vertical-align:middle}
 .bar>span{background:#3b7dd8;height:100%;display:block}
</style></head><body>
<h1>modelsched</h1><div id="summary" class="muted">loading…</div>
<h2>GPUs</h2><table id="gpus"></table>
<h2>Workers</h2><table id="workers"></table>
<h2>Queue</h2><table id="queue"></table>
<h2>Models</h2><table id="models"></table>
<h2>Pipelines</h2><table id="pipelines"></table>
<h2>Costs</h2><div id="cost-summary" class="muted"></div><table id="costs"></table>
<h2>CPU stage pool</h2><div id="pool-summary" class="muted"></div><table id="pool"></table>
<h2>Journal</h2><table id="journal"></table>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function table(id, head, rows) {
  document.getElementById(id).innerHTML = "<tr>" + head.map(h => "<th>" + esc(h) + "</th>").join("") + "</tr>" +
    (rows.length ? rows.map(r => "<tr>" + r.map(c => "<td>" + c + "</td>").join("") + "</tr>").join("")
                 : "<tr><td class=muted colspan=" + head.length + ">none</td></tr>");
}
function bar(used, total) {
  const pct = total ? Math.min(100, 100 * used / total) : 0;
  return "<span class=bar><span style='width:" + pct.toFixed(1) + "%'></span></span> " + used.toFixed(0) + " / " + total.toFixed(0) + " MiB";
}
async function refresh() {
  try {
    const r = await fetch("system/status", {headers: {"Accept": "application/json"}});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    document.getElementById("summary").textContent = "preset " + s.scheduler.preset + " · up " +
      s.scheduler.uptime_s.toFixed(0) + " s · " + (s.scheduler.accepting ? "accepting jobs" : "not accepting jobs");
    table("gpus", ["#", "name", "memory (card)", "ledger", "utilization", "workers"], s.gpu.map(g => [
      g.index, esc(g.name) + (g.simulated ? " <span class=muted>(simulated)</span>" : ""), bar(g.used_mb, g.total_mb),
      bar(g.ledger_used_mb, g.total_mb), g.utilization_pct == null ? "–" : g.utilization_pct + "%", esc(g.workers.join(", "))]));
    table("workers", ["worker", "pid", "device", "state", "models", "in flight", "done", "heartbeat", "restarts", "RSS"],
      s.workers.map(w => [esc(w.worker_id), w.pid, esc(w.device),
        "<span class=" + (w.alive ? "ok" : "bad") + ">" + esc(w.state) + "</span>",
        esc(w.loaded_models.map(m => m.model + (m.loading ? " (loading)" : "")).join(", ")),
        w.jobs_in_flight, w.jobs_done, w.heartbeat_age_s == null ? "–" : w.heartbeat_age_s.toFixed(1) + " s ago",
        w.restarts, w.rss_mb + " MiB"]));
    const q = s.queue;
    table("queue", ["queued", "processing", "completed", "error", "cancelled", "limit"],
      [[q.queued, q.processing, q.completed, q.error, q.cancelled, q.max_queue]]);
    table("models", ["model", "device", "VRAM (MiB)", "batch", "loaded on", "queued", "state"], s.models.map(m => [
      esc(m.name), esc(m.device), m.vram_mb, m.max_batch_size + " / " + m.max_delay_ms + " ms",
      esc(m.loaded_on.join(", ")), m.queued, m.failed ? "<span class=bad>failed: " + esc(m.failed) + "</span>" : "ok"]));
    const usd = v => "$" + Number(v || 0).toFixed(6);
    table("pipelines", ["pipeline", "stages", "cost"], s.pipelines.map(p => [esc(p.name),
      esc(p.stages.map(st => st.name + " (" + st.model + ", " + st.device + ")").join(" → ")), usd(p.cost_usd)]));
    const c = s.costs;
    document.getElementById("cost-summary").textContent = "total " + usd(c.total_usd) + " · " + c.jobs_ended +
      " job(s) ended · per 1,000 jobs " + (c.per_1000_jobs_usd == null ? "–" : usd(c.per_1000_jobs_usd)) +
      " · rates " + Object.entries(c.rates).map(([k, v]) => k + " $" + v + "/s").join(", ");
    table("costs", ["by", "name", "dollars"], [
      ...Object.entries(c.by_device).map(([k, v]) => ["device", esc(k), usd(v)]),
      ...Object.entries(c.by_model).map(([k, v]) => ["model", esc(k), usd(v)]),
      ...Object.entries(c.by_pipeline).map(([k, v]) => ["pipeline", esc(k), usd(v)])]);
    const p = s.cpu_pool;
    document.getElementById("pool-summary").textContent = p.running + " running (" + p.ready + " ready) of " +
      p.min_workers + "–" + p.max_workers + " · " + p.backlog + " CPU job(s) waiting · idle timeout " + p.idle_timeout_s + " s";
    table("pool", ["when", "change", "worker", "why"], p.changes.slice().reverse().map(ch => [
      new Date(ch.at * 1000).toLocaleTimeString(), esc(ch.change), esc(ch.worker), esc(ch.reason)]));
    const j = s.journal;
    table("journal", ["file", "size", "in use / bound", "pruned (size)", "ended by then pruned", "pruned (age)", "state"],
      j ? [[esc(j.path), j.size_mb.toFixed(1) + " MiB",
        j.max_mb ? bar(j.used_mb, j.max_mb) : j.used_mb.toFixed(1) + " MiB (no bound)", j.pruned_for_size,
        j.pruned_ended_through == null ? "–" : new Date(j.pruned_ended_through * 1000).toLocaleString(), j.pruned_for_age,
        j.problem ? "<span class=bad>" + esc(j.problem) + "</span>" : "<span class=ok>ok</span>"]] : []);
  } catch (e) {
    document.getElementById("summary").innerHTML = "<span class=bad>status unavailable: " + esc(e.message) + "</span>";
  }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
