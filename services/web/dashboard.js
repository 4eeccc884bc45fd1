// The operator dashboard: polls /v1/admin every few seconds and draws the panels.
"use strict";

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const view = { selectedJob: null, allErrors: false };
const { el, badge } = Pix;

// a table scrolls sideways inside its panel rather than cutting its last columns off
function table(headers, rows, { numeric = [] } = {}) {
  if (!rows.length) return el("p", { class: "muted", text: "Nothing here." });
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null, text: h })))),
    el("tbody", {}, rows)));
}
const row = (cells, attrs = {}, numeric = [], nowrap = []) =>
  el("tr", attrs, cells.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : nowrap.includes(i) ? "nowrap" : null }, c)));

function bar(value, limit) {
  const share = limit ? Math.min(100, (100 * value) / limit) : 0;
  return el("div", { class: "bar", title: `${Pix.num(share)}%` }, el("span", { style: `width:${share}%` }));
}

// ---- panels --------------------------------------------------------------------------
function renderStats(o) {
  const last = o.series.slice(-60);
  const images = last.reduce((n, p) => n + (p.images || 0), 0);
  const cost = o.cost;
  const stat = (label, value, hint) => el("div", { class: "stat", title: hint || "" }, el("div", { class: "value" }, value), el("div", { class: "label", text: label }));
  $("stats").replaceChildren(
    stat("queue depth", Pix.num(o.queue.depth), "items queued or running"),
    stat("oldest item waiting", Pix.seconds(o.queue.oldest_age_s)),
    stat("dead letters", `${Pix.num(o.queue.dead_letters)} / ${Pix.num(o.queue.webhook_dead_letters)}`, "work items / webhook events"),
    stat("images, last hour", Pix.num(images)),
    stat("cost per image", gpuCost(cost.cost_per_image_usd, 5), `at $${cost.gpu_hour_price_usd}/GPU-hour; CPU replicas cost nothing here`),
    stat("images per $", cost.images_per_usd === null || !cost.cost_per_image_usd ? "—" : Pix.num(cost.images_per_usd)),
  );
}

function renderDeployments(o) {
  const box = $("deployments");
  const rows = o.deployments.map((d) => row([
    el("b", { text: d.name }), el("div", {}, badge(d.status), d.message ? el("div", { class: "muted reason", text: d.message }) : null),
    `${d.running} / ${d.target}`, d.min_replicas === null ? "fixed" : `${d.min_replicas}–${d.max_replicas}`,
    `${Pix.num(d.num_cpus, 2)} CPU · ${Pix.num(d.num_gpus, 2)} GPU`,
    o.replicas.filter((r) => r.deployment === d.name).reduce((n, r) => n + (r.ongoing || 0), 0),
  ], { "data-deployment": d.name }, [2, 5], [3, 4]));
  box.replaceChildren(
    o.deployments_error ? el("div", { class: "message", text: o.deployments_error }) : "",
    table(["deployment", "status", "replicas (running / target)", "autoscaling", "per replica", "ongoing"], rows, { numeric: [2, 5] }));
}

function renderReplicas(o) {
  const rows = o.replicas.map((r) => {
    const memory = r.gpu_memory || {};
    const gpu = memory.limit ? el("div", {}, bar(memory.used, memory.limit), el("span", { class: "muted", text: `${Pix.bytes(memory.used)} used, ${Pix.bytes(memory.reserved)} reserved of ${Pix.bytes(memory.limit)}` })) : el("span", { class: "muted", text: "—" });
    return row([r.deployment, el("span", { class: "mono", text: r.replica }), r.device || "—",
      r.gpu_share ? Pix.num(r.gpu_share, 2) : "—", gpu, r.ongoing ?? 0, `${Math.round(o.generated_at - r.seen_at)} s ago`], {}, [5]);
  });
  $("replicas").replaceChildren(table(["deployment", "replica", "device", "GPU share", "GPU memory", "ongoing", "seen"], rows, { numeric: [5] }));
}

function renderCharts(o) {
  const labels = o.series.map((p) => new Date(p.at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  $("queue-chart").replaceChildren(Pix.chart([
    { name: "queue depth", color: "#3557d4", values: o.series.map((p) => p.queue_depth) },
    { name: "oldest item age (s)", color: "#b7791f", values: o.series.map((p) => p.oldest_age_s) },
  ], labels));
  $("throughput-chart").replaceChildren(Pix.chart([
    { name: "images", color: "#1a8f4a", values: o.series.map((p) => p.images) },
    { name: "job items failed", color: "#c53030", values: o.series.map((p) => p.items_failed) },
    { name: "API requests", color: "#8a94a8", values: o.series.map((p) => p.requests) },
  ], labels));
}

function renderLatency(o) {
  const worst = Math.max(0.001, ...o.latency.map((r) => r.p99 || 0));
  const rows = o.latency.map((r) => row([
    el("span", { class: "mono", text: r.route }), Pix.num(r.requests),
    r.errors ? el("span", { style: "color:var(--bad)", text: Pix.num(r.errors) }) : "0",
    r.rejected ? el("span", { style: "color:var(--warn)", text: Pix.num(r.rejected) }) : "0",
    Pix.seconds(r.p50), Pix.seconds(r.p95), Pix.seconds(r.p99), bar(r.p99 || 0, worst),
  ], {}, [1, 2, 3, 4, 5, 6]));
  $("latency").replaceChildren(
    el("p", { class: "muted", text: "Errors are the platform's (5xx); refused requests are the callers' (4xx: bad input, no key, over a limit)." }),
    table(["route", "requests", "errors", "refused", "p50", "p95", "p99", ""], rows, { numeric: [1, 2, 3, 4, 5, 6] }));
}

function renderCost(o) {
  const c = o.cost;
  const rows = c.by_model.map((m) => row([m.model, Pix.num(m.images), Pix.seconds(m.compute_s_per_image), gpuCost(m.gpu_cost_usd, 4),
    gpuCost(m.cost_per_image_usd, 5), m.images_per_usd === null || !m.gpu_cost_usd ? "—" : Pix.num(m.images_per_usd)], {}, [1, 2, 3, 4, 5]));
  $("cost").replaceChildren(
    el("p", { class: "muted", text: `Forward time × the replica's GPU share × $${c.gpu_hour_price_usd} per GPU-hour (CPU replicas cost nothing here).` }),
    table(["model", "images", "compute / image", "GPU cost", "cost / image", "images / $"], rows, { numeric: [1, 2, 3, 4, 5] }));
}

// a dollar figure of GPU time; nothing spent (CPU replicas) says so rather than $0.00000
function gpuCost(usd, digits) {
  if (usd === null || usd === undefined) return "—";
  return usd > 0 ? `$${usd.toFixed(digits)}` : el("span", { class: "muted", title: "no GPU time: CPU replicas cost nothing here", text: "CPU" });
}

const ERRORS_SHOWN = 12; // more on request: a burst of bad requests should not bury the page

// The platform's errors (5xx, failed job items) first; the callers' refused requests (4xx)
// apart, in amber: a burst of bad uploads is not an outage
function renderErrors(o) {
  const faults = o.errors.filter((e) => !e.status || e.status >= 500);
  const refused = o.errors.filter((e) => e.status && e.status < 500);
  const limit = (list) => (view.allErrors ? list : list.slice(0, ERRORS_SHOWN));
  const rows = (list) => limit(list).map((e) => row([Pix.time(e.at), e.source === "job" ? `job ${String(e.job).slice(0, 8)} #${e.item}` : `${e.method} ${e.route}`,
    e.status ? badge(String(e.status), e.status >= 500 ? "error" : "warn") : badge("item", "error"), el("span", { class: "mono", text: e.code || "" }),
    e.message || "", e.trace_id ? el("span", { class: "mono", title: e.trace_id, text: e.trace_id.slice(0, 12) }) : ""]));
  const headers = ["time", "where", "status", "code", "message", "trace"];
  const longest = Math.max(faults.length, refused.length);
  const more = longest > ERRORS_SHOWN
    ? el("button", { class: "secondary", text: view.allErrors ? "show fewer" : `show all ${o.errors.length}`,
        onclick: () => { view.allErrors = !view.allErrors; renderErrors(o); } })
    : null;
  $("errors").replaceChildren(
    el("h3", { id: "faults-title", text: `Errors (${faults.length})` }), table(headers, rows(faults)),
    el("h3", { id: "refused-title", text: `Refused requests, 4xx (${refused.length})` }), table(headers, rows(refused)),
    more || "");
}

// ---- jobs ------------------------------------------------------------------------------
async function refreshJobs() {
  const status = $("job-status").value;
  const answer = await Pix.json(`v1/admin/jobs?limit=25${status ? `&status=${status}` : ""}`);
  const rows = answer.jobs.map(({ owner, job }) => row([
    el("span", { class: "mono", text: job.id.slice(0, 12) }), owner, badge(job.status),
    `${job.progress.done + job.progress.failed} / ${job.progress.total}${job.progress.failed ? ` (${job.progress.failed} failed)` : ""}`,
    job.task.model || job.task.preset || job.task.task || "—", Pix.datetime(job.created_at), Pix.seconds(job.metrics.run_s),
  ], { class: `clickable${view.selectedJob === job.id ? " selected" : ""}`, "data-job": job.id, onclick: () => openJob(job.id) }));
  $("jobs").replaceChildren(table(["job", "owner", "status", "progress", "model", "created", "run time"], rows));
}

async function openJob(id) {
  view.selectedJob = id;
  const detail = await Pix.json(`v1/admin/jobs/${id}`);
  const job = detail.job;
  const rows = job.items.map((item) => row([
    item.index, item.name || item.input, badge(item.status), item.attempts,
    item.started_at && item.finished_at ? Pix.seconds(item.finished_at - item.started_at) : "—",
    item.error ? el("span", { style: "color:var(--bad)", text: item.error }) : "",
    detail.trace_ids[item.index] ? el("span", { class: "mono", text: detail.trace_ids[item.index] }) : "—",
  ], {}, [0, 3]));
  $("job-detail").replaceChildren(el("div", { class: "panel", style: "margin-top:12px", id: "job-detail-panel", "data-job": id },
    el("h2", {}, `Job ${id} `, badge(job.status)),
    el("p", { class: "muted", text: `owner ${detail.owner} · created ${Pix.datetime(job.created_at)} · queued ${Pix.seconds(job.metrics.queue_wait_s)} · ran ${Pix.seconds(job.metrics.run_s)} · expires ${Pix.datetime(job.expires_at)}` }),
    table(["#", "input", "status", "attempts", "time", "error", "trace id"], rows, { numeric: [0, 3] })));
  for (const tr of document.querySelectorAll("#jobs tr[data-job]")) tr.classList.toggle("selected", tr.dataset.job === id);
}

// ---- models: what each replica holds, load and unload ------------------------------------------
async function refreshModels() {
  const fleet = await Pix.json("v1/admin/models");
  const rows = [];
  for (const d of fleet.deployments) for (const r of d.replicas) for (const m of r.models) {
    const action = m.loaded ? "unload" : "load";
    rows.push(row([
      d.deployment, el("span", { class: "mono", text: r.replica }), el("b", { text: m.name }),
      el("div", {}, badge(m.loaded ? "loaded" : "unloaded", m.loaded ? "ok" : null), m.detail ? el("div", { class: "muted reason", text: m.detail }) : null),
      m.loaded ? Pix.bytes(m.memory_bytes) : "—", m.last_used ? `${Math.round(Date.now() / 1000 - m.last_used)} s ago` : "never",
      `${Pix.bytes(r.rss_bytes)} RSS`,
      el("button", { class: "secondary", "data-model": m.name, "data-action": action, text: action === "load" ? "Load" : "Unload",
        onclick: (e) => changeModel(m.name, action, e.target) }),
    ], { "data-model-row": `${r.replica}/${m.name}` }, [4]));
  }
  $("models").replaceChildren(table(["deployment", "replica", "model", "state", "memory", "last used", "process", ""], rows, { numeric: [4] }));
  renderMemoryModes(fleet);
}

// a memory mode selector per deployment, showing what its replicas run in
function renderMemoryModes(fleet) {
  if (document.activeElement && document.activeElement.closest("#memory-modes")) return;  // being changed
  $("memory-modes").replaceChildren(...fleet.deployments.filter((d) => d.replicas.length).map((d) => {
    const mode = d.replicas[0].memory_mode || "balanced";
    const select = el("select", { "data-deployment": d.deployment, onchange: (e) => setMemoryMode(d.deployment, e.target) },
      ["low", "balanced", "high"].map((m) => el("option", { value: m, selected: m === mode, text: m })));
    return el("label", {}, `${d.deployment} memory `, select);
  }));
}

async function setMemoryMode(deployment, select) {
  select.disabled = true;
  try {
    await Pix.json(`v1/admin/deployments/${encodeURIComponent(deployment)}/memory-mode`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode: select.value }) });
    await refreshModels();
  } catch (error) { showMessage(error.message); } finally { select.disabled = false; select.blur(); }
}

async function addModel(event) {
  event.preventDefault();
  const button = event.target.querySelector("button");
  const form = new FormData();
  form.append("file", $("add-file").files[0]);
  form.append("name", $("add-name").value);
  form.append("task", $("add-task").value);
  button.disabled = true;
  try {
    const answer = await Pix.json("v1/admin/models", { method: "POST", body: form });
    showMessage(`${answer.model.name}: ${answer.model.architecture} x${answer.model.scale} added and loaded on ${answer.replicas.length} ${answer.deployment} replica(s)`);
    event.target.reset();
    await refreshModels();
  } catch (error) { showMessage(error.message); } finally { button.disabled = false; }
}

async function changeModel(name, action, button) {
  button.disabled = true;
  try {
    const answer = await Pix.json(`v1/admin/models/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    const freed = action === "unload" ? ` (freed ${Pix.bytes(answer.freed_bytes)})` : "";
    button.replaceWith(badge(`${action}ed on ${answer.replicas.length}${freed}`, "ok"));
    await refreshModels();
  } catch (error) { button.disabled = false; showMessage(error.message); }
}

// ---- dead letters ---------------------------------------------------------------------------
async function refreshDead() {
  const dead = await Pix.json("v1/admin/dead-letters");
  const rows = [];
  for (const [stream, entries] of Object.entries(dead)) for (const d of entries) rows.push(row([
    stream, el("span", { class: "mono", text: `${d.job.slice(0, 12)} #${d.item === "-1" ? "completed" : d.item}` }), d.deliveries || "—",
    el("span", { text: d.reason || d.statuses || "" }), Pix.time(Number(d.id.split("-")[0]) / 1000),
    el("button", { class: "secondary retry", "data-entry": d.id, text: "Retry", onclick: (e) => retry(stream, d.id, e.target) }),
  ]));
  $("dead").replaceChildren(table(["stream", "job / item", "deliveries", "reason", "when", ""], rows));
}

async function retry(stream, id, button) {
  button.disabled = true;
  try {
    const answer = await Pix.json(`v1/admin/dead-letters/${stream}/${id}/retry`, { method: "POST" });
    button.replaceWith(badge(answer.outcome, "ok"));
  } catch (error) { button.disabled = false; showMessage(error.message); }
}

// ---- loop -------------------------------------------------------------------------------------
async function refresh() {
  try {
    const overview = await Pix.json("v1/admin/overview");
    hideMessage();
    renderStats(overview); renderDeployments(overview); renderReplicas(overview);
    renderCharts(overview); renderLatency(overview); renderCost(overview); renderErrors(overview);
    await Promise.all([refreshJobs(), refreshDead(), refreshModels()]);
    if (view.selectedJob) await openJob(view.selectedJob);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (error) {
    showMessage(error.status === 401 || error.status === 403 ? `${error.message} — enter an admin API key at the top right.` : error.message);
  }
}

function showMessage(text) { const box = $("message"); box.textContent = text; box.hidden = false; }
function hideMessage() { $("message").hidden = true; }

Pix.bindKeyField($("key"), refresh);
$("job-status").addEventListener("change", refreshJobs);
$("add-model").addEventListener("submit", addModel);
refresh();
setInterval(refresh, REFRESH_MS);
