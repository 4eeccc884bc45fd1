// The upload page: pick images and a task (a model's upscale, another task, or a named
// preset), run them (sync for one small image, a job otherwise), follow progress over
// SSE, compare before/after (slider, a 1:1 loupe, a zoom view), read what caption steps
// said and how each run went (time, model, sizes), run the same images again with other
// settings, copy the run as curl, download, and remember this browser's runs.
"use strict";

const SYNC_MAX_BYTES = 2 * 1024 * 1024; // one image up to this size runs synchronously
const HISTORY_KEY = "pixserve.history";
const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/avif": "avif", "application/json": "json",
  "model/gltf-binary": "glb", "application/zip": "zip", "model/x-ply": "ply" };
const MESH_TYPES = { glb: "model/gltf-binary", obj: "application/zip", ply: "model/x-ply" };
const $ = (id) => document.getElementById(id);
// The other tasks: their sync route, the model tasks one of which must be served, and
// an example of their fields (sent as form fields, sync or as a job's task fields)
const TASKS = {
  denoise: { label: "Denoise", path: "v1/denoise", needs: ["denoise"], example: '{"model": "scunet-color"}',
    help: "Remove noise with a denoising model; the output has the input's size." },
  restore_face: { label: "Restore faces", path: "v1/restore/face", needs: ["face"], example: '{"upscale": 2, "max_faces": 4}',
    help: "Restore every face (GFPGAN/CodeFormer) and paste it back; upscale 2-4 also upscales the background." },
  caption: { label: "Caption, tags, NSFW", path: "v1/caption", needs: ["caption", "tags", "nsfw"], example: '{"outputs": ["caption", "tags"]}',
    help: "Describe each image: a caption, tags with scores and an NSFW probability (JSON per image).", text: true },
  convert: { label: "Convert", path: "v1/convert", needs: [], example: '{"resize": "fit", "width": 512}',
    help: "Re-encode (and resize) to JPEG, PNG, WEBP or AVIF." },
  mesh: { label: "Image to 3D", path: "v1/mesh", needs: ["depth", "mesh"], example: '{"engine": "relief", "resolution": 256}',
    help: "A textured 3D mesh of each image (GLB; fields format obj or ply, engine triposr for a whole object), shown in a 3D viewer.", mesh: true },
};
const state = { files: [], last: [], cards: new Map(), results: [], running: false, next: 0, presets: new Map(), served: new Set() };

// ---- choosing images --------------------------------------------------------------
function addFiles(list) {
  const images = [...list].filter((file) => file.type.startsWith("image/"));
  if (!images.length) return showMessage("Those are not images.");
  hideMessage();
  state.files.push(...images);
  for (const file of images) cardFor(`file-${state.next++}`, file.name, URL.createObjectURL(file), file);
  refreshSummary();
}

function refreshSummary() {
  const total = state.files.reduce((n, f) => n + f.size, 0);
  $("summary").textContent = state.files.length ? `${state.files.length} image(s), ${Pix.bytes(total)}` : "";
  $("submit").disabled = !state.files.length || state.running;
  $("again").disabled = !state.last.length || state.running || state.files.length > 0;
}

function setupInputs() {
  const drop = $("drop"), input = $("files");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
  document.addEventListener("paste", (e) => { if (e.clipboardData && e.clipboardData.files.length) addFiles(e.clipboardData.files); });
  $("submit").addEventListener("click", run);
  $("clear").addEventListener("click", clearAll);
  $("again").addEventListener("click", () => addFiles(state.last));
  $("curl").addEventListener("click", showCurl);
  $("zip").addEventListener("click", downloadZip);
  $("format").addEventListener("change", refreshQuality);
  $("task").addEventListener("change", refreshTask);
  refreshQuality();
}

// quality is sent only with a lossy format chosen here (a preset keeps its own otherwise)
function refreshQuality() { $("quality").disabled = ["", "png"].includes($("format").value); }

// What runs: a preset ({kind: "preset", name, preset}), another task ({kind: "task",
// name, task}) or, null, an upscale with the chosen model
function chosen() {
  const value = $("task").value;
  if (value.startsWith("task:")) return { kind: "task", name: value.slice(5), task: TASKS[value.slice(5)] };
  const preset = state.presets.get(value);
  return preset ? { kind: "preset", name: preset.name, preset } : null;
}

// Whether the chosen task or preset makes meshes (it has no image encoding to choose)
function makesMesh(choice) {
  return Boolean(choice && (choice.kind === "task" ? choice.task.mesh : choice.preset.steps.some((s) => s.kind === "mesh")));
}

function refreshTask() {
  const choice = chosen();
  const textOnly = Boolean(choice && (choice.kind === "preset" ? !choice.preset.output : choice.task.text));
  $("upscale-options").hidden = Boolean(choice);
  $("preset-options").hidden = !choice;
  $("params-label").textContent = choice && choice.kind === "task" ? "Fields" : "Step parameters";
  for (const id of ["format", "quality"]) $(id).closest("label").hidden = textOnly || makesMesh(choice);
  if (choice && choice.kind === "preset") {
    const example = choice.preset.steps.find((s) => Object.keys(s.params).length) || choice.preset.steps[0];
    $("preset-params").placeholder = example ? JSON.stringify({ [example.id]: example.params }) : "{}";
  } else if (choice) $("preset-params").placeholder = choice.task.example;
  const label = choice && choice.kind === "task" ? choice.task.label : null;
  $("submit").textContent = choice ? `Run ${label ? label[0].toLowerCase() + label.slice(1) : choice.name}` : "Upscale";
  $("task-help").textContent = !choice ? "Upscale with the chosen Real-ESRGAN-class model."
    : choice.kind === "task" ? choice.task.help
    : `${choice.preset.description} Steps: ${choice.preset.steps.map((s) => s.id).join(" → ") || "encode only"}.`;
}

// The other tasks, each disabled with what it needs when no model of its kind is served
function taskOptions() {
  const group = Pix.el("optgroup", { label: "Tasks", "data-group": "tasks" });
  for (const [name, task] of Object.entries(TASKS)) {
    const served = !task.needs.length || task.needs.some((t) => state.served.has(t));
    group.append(Pix.el("option", { value: `task:${name}`, disabled: !served,
      text: served ? task.label : `${task.label} (needs a ${task.needs[0]} model)`, title: task.help }));
  }
  return group;
}

async function loadPresets() {
  try {
    const listing = await Pix.json("v1/presets");
    const current = $("task").value;
    const group = Pix.el("optgroup", { label: "Presets" });
    state.presets.clear();
    for (const preset of listing.presets) {
      state.presets.set(preset.name, preset);
      const why = preset.reason || `needs ${preset.missing_deployments.join(", ")}`;
      group.append(Pix.el("option", { value: preset.name, disabled: !preset.available,
        text: preset.available ? preset.name : `${preset.name} (cannot run: ${why})`,
        title: preset.available ? preset.description : why }));
    }
    $("task").querySelectorAll("optgroup").forEach((g) => g.remove());
    $("task").append(taskOptions(), group);
    if ([...$("task").options].some((o) => o.value === current && !o.disabled)) $("task").value = current;
  } catch (_) { /* loadModels already says why the service cannot be read */ }
  refreshTask();
}

async function loadModels() {
  try {
    const listing = await Pix.json("v1/models");
    const select = $("model"); select.replaceChildren();
    state.served = new Set(listing.models.filter((m) => m.state !== "not_configured").map((m) => m.task));
    for (const model of listing.models.filter((m) => m.task === "upscale" && m.state !== "not_configured")) {
      const label = `${model.name} (x${model.scale}${model.state === "loaded" ? "" : ", " + model.state})`;
      select.append(Pix.el("option", { value: model.name, text: label, selected: model.name === listing.default_model }));
    }
  } catch (error) {
    showMessage(error.status === 401 ? "This service requires an API key: enter it at the top right." : `Models unavailable: ${error.message}`);
  }
}

// ---- result cards -----------------------------------------------------------------
function cardFor(id, name, beforeUrl, file) {
  const status = Pix.badge("selected", "queued");
  const body = Pix.el("div", { class: "body" }, beforeUrl ? Pix.el("img", { src: beforeUrl, style: "max-width:100%;max-height:220px;object-fit:contain" }) : null);
  const card = Pix.el("div", { class: "card", "data-name": name },
    Pix.el("div", { class: "head" }, Pix.el("span", { class: "name", title: name, text: name }), status),
    body, Pix.el("div", { class: "error" }), Pix.el("div", { class: "row actions" }));
  $("cards").append(card);
  const entry = { id, name, beforeUrl, file, card, status, body };
  state.cards.set(id, entry);
  return entry;
}

function setStatus(entry, text, kind) { entry.status.className = `badge ${kind || text}`; entry.status.textContent = text; }

// A result: an image (compared with the input) and the texts of caption steps, or
// only texts (a text preset's JSON, downloaded as it came)
function showResult(entry, blob, outputName, texts, facts, choice, previewUrl) {
  if (isMesh(blob)) return showMesh(entry, blob, outputName, facts, choice, previewUrl);
  const afterUrl = entry.afterUrl = URL.createObjectURL(blob);
  setStatus(entry, "done");
  const size = Pix.el("span", { class: "muted" });
  if (facts) showFacts(entry, facts);
  if (isJson(blob)) {
    entry.body.replaceChildren(entry.beforeUrl ? Pix.el("img", { src: entry.beforeUrl, style: "max-width:100%;max-height:160px;object-fit:contain" }) : "");
    size.textContent = Pix.bytes(blob.size);
  } else {
    entry.body.replaceChildren(entry.beforeUrl ? compare(entry.beforeUrl, afterUrl, entry.name) : Pix.el("img", { src: afterUrl, class: "after", style: "max-width:100%" }));
    const probe = new Image(); probe.onload = () => { size.textContent = `${probe.naturalWidth}×${probe.naturalHeight}, ${Pix.bytes(blob.size)}`; }; probe.src = afterUrl;
  }
  if (texts) showTexts(entry, texts);
  entry.card.querySelector(".actions").replaceChildren(
    Pix.el("a", { href: afterUrl, download: outputName, class: "download", text: "Download" }), size);
  state.results.push({ name: outputName, blob });
  $("zip").disabled = false;
}

// What caption steps said, by step: the caption, tags with scores, the NSFW score
function showTexts(entry, texts) {
  const box = Pix.el("div", { class: "texts" });
  for (const [step, said] of Object.entries(texts)) {
    const tags = (said.tags || []).map((t) => Pix.el("span", { class: "tag-chip", text: `${t.label} ${t.score.toFixed(2)}` }));
    box.append(Pix.el("div", { "data-step": step },
      Pix.el("span", { class: "muted", text: `${step}: ` }),
      said.caption ? Pix.el("q", { class: "caption", text: said.caption }) : null,
      tags.length ? Pix.el("div", { class: "tags" }, tags) : null,
      said.nsfw !== undefined && said.nsfw !== null ? Pix.el("div", { class: "muted", text: `NSFW ${(said.nsfw * 100).toFixed(1)}%` }) : null,
      said.faces !== undefined && said.vertices !== undefined ? Pix.el("span", { class: "mesh-stats",
        text: `${said.engine} · ${said.faces.toLocaleString()} faces · ${said.vertices.toLocaleString()} vertices · outline: ${said.foreground}` }) : null));
  }
  entry.card.querySelector(".texts")?.remove();
  entry.body.after(box);
}

function isJson(blob) { return blob.type.startsWith("application/json"); }
function isMesh(blob) { return Object.values(MESH_TYPES).includes(blob.type.split(";")[0]); }

// A mesh: a GLB in the interactive viewer (drag to turn it, scroll to zoom) beside its
// preview render (the job's stored one, or the viewer's own picture of a sync run); a
// download of the file and of each other format (the same image and fields again)
function showMesh(entry, blob, outputName, facts, choice, previewUrl) {
  const url = entry.afterUrl = URL.createObjectURL(blob);
  setStatus(entry, "done");
  if (facts) showFacts(entry, facts);
  const preview = Pix.el("img", { class: "preview", alt: "preview", hidden: !previewUrl, src: previewUrl || null });
  const glb = blob.type.startsWith("model/gltf-binary");
  const viewer = glb ? Pix.el("model-viewer", { src: url, "camera-controls": "", "auto-rotate": "", "shadow-intensity": "1",
    "interaction-prompt": "none", alt: `3D model of ${entry.name}` }) : Pix.el("p", { class: "muted", text: "The 3D view shows GLB files; this one is for download." });
  if (glb && !previewUrl) viewer.addEventListener("load", () => { preview.src = viewer.toDataURL("image/png"); preview.hidden = false; }, { once: true });
  entry.body.replaceChildren(Pix.el("div", { class: "mesh" }, viewer, preview));
  const size = Pix.el("span", { class: "muted", text: Pix.bytes(blob.size) });
  const actions = [Pix.el("a", { href: url, download: outputName, class: "download", text: `Download ${EXTENSIONS[blob.type.split(";")[0]].toUpperCase()}` })];
  if (entry.file) for (const [fmt, type] of Object.entries(MESH_TYPES)) {
    if (type !== blob.type.split(";")[0]) actions.push(Pix.el("button", { class: "secondary", "data-format": fmt, text: fmt.toUpperCase(), onclick: () => downloadAs(entry, choice, fmt) }));
  }
  entry.card.querySelector(".actions").replaceChildren(...actions, size);
  state.results.push({ name: outputName, blob });
  $("zip").disabled = false;
}

// The same image and fields made into another mesh format (a sync run), downloaded
async function downloadAs(entry, choice, fmt) {
  try {
    const form = params(choice);
    if (choice.kind === "task") { form.delete("format"); form.append("format", fmt); }
    else {
      const step = choice.preset.steps.find((s) => s.kind === "mesh").id;
      const given = form.has("params") ? JSON.parse(form.get("params")) : {};
      form.set("params", JSON.stringify({ ...given, [step]: { ...(given[step] || {}), format: fmt } }));
    }
    form.append("image", entry.file, entry.file.name);
    const blob = await (await Pix.call(syncRoute(choice), { method: "POST", body: form })).blob();
    const link = Pix.el("a", { href: URL.createObjectURL(blob), download: outputName(entry.name, 0, blob.type, choice) });
    document.body.append(link); link.click(); link.remove();
  } catch (error) { showMessage(error.message); }
}

function showFailure(entry, message) {
  setStatus(entry, "failed");
  entry.card.querySelector(".error").textContent = message;
}

// A before/after slider: the "before" image clipped to the left of the handle; a loupe
// shows the output's own pixels (1:1) under the pointer, and "zoom" opens it full size
function compare(beforeUrl, afterUrl, name) {
  const before = Pix.el("img", { class: "before", src: beforeUrl, alt: "before" });
  const after = Pix.el("img", { class: "after", src: afterUrl, alt: "after" });
  const divider = Pix.el("div", { class: "divider" });
  const slider = Pix.el("input", { type: "range", min: 0, max: 100, value: 50, "aria-label": "before/after" });
  const loupe = Pix.el("div", { class: "loupe", hidden: true, style: `background-image:url("${afterUrl}")` });
  const zoom = Pix.el("button", { class: "zoom secondary", title: "Compare at full size", text: "zoom" });
  const box = Pix.el("div", { class: "compare" }, after, before, divider, loupe,
    Pix.el("span", { class: "tag", style: "left:6px", text: "before" }), Pix.el("span", { class: "tag", style: "right:6px", text: "after" }), slider, zoom);
  const apply = () => { before.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`; divider.style.left = `${slider.value}%`; };
  slider.addEventListener("input", apply); apply();
  box.addEventListener("mousemove", (e) => moveLoupe(e, box, after, loupe));
  box.addEventListener("mouseleave", () => { loupe.hidden = true; });
  zoom.addEventListener("click", () => openZoom(beforeUrl, afterUrl, name));
  return box;
}

// The loupe: where the pointer is over the shown image, that spot of the output at 1:1
function moveLoupe(event, box, after, loupe) {
  if (event.target.tagName === "INPUT" || event.target.tagName === "BUTTON" || !after.naturalWidth) { loupe.hidden = true; return; }
  const frame = box.getBoundingClientRect();
  const fit = Math.min(frame.width / after.naturalWidth, frame.height / after.naturalHeight);
  const shownW = after.naturalWidth * fit, shownH = after.naturalHeight * fit;
  const left = (frame.width - shownW) / 2, top = (frame.height - shownH) / 2;
  const x = (event.clientX - frame.left - left) / fit, y = (event.clientY - frame.top - top) / fit;
  if (x < 0 || y < 0 || x > after.naturalWidth || y > after.naturalHeight || fit >= 1) { loupe.hidden = true; return; }
  loupe.hidden = false;
  const half = loupe.offsetWidth / 2;
  loupe.style.left = `${event.clientX - frame.left - half}px`; loupe.style.top = `${event.clientY - frame.top - half}px`;
  loupe.style.backgroundSize = `${after.naturalWidth}px ${after.naturalHeight}px`;
  loupe.style.backgroundPosition = `${half - x}px ${half - y}px`;
  loupe.dataset.x = Math.round(x); loupe.dataset.y = Math.round(y);
}

// Full size: the before (scaled up to the output's size) and after at 1:1 or 2:1 in a
// scrolling view, the same slider between them
function openZoom(beforeUrl, afterUrl, name) {
  const after = Pix.el("img", { class: "after", src: afterUrl, alt: "after" });
  const before = Pix.el("img", { class: "before", src: beforeUrl, alt: "before" });
  const slider = Pix.el("input", { type: "range", min: 0, max: 100, value: 50, "aria-label": "before/after" });
  const stage = Pix.el("div", { class: "stage" }, after, before);
  const scale = Pix.el("select", { "aria-label": "zoom" }, ["1", "2"].map((v) => Pix.el("option", { value: v, text: `${v}:1` })));
  const layout = () => {
    const width = after.naturalWidth * Number(scale.value), height = after.naturalHeight * Number(scale.value);
    for (const img of [after, before]) { img.style.width = `${width}px`; img.style.height = `${height}px`; }
    stage.style.width = `${width}px`; stage.style.height = `${height}px`;
    before.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`;
  };
  after.onload = layout; slider.addEventListener("input", layout); scale.addEventListener("change", layout);
  const close = Pix.el("button", { class: "secondary", text: "Close" });
  const overlay = Pix.el("div", { class: "zoomview", role: "dialog", "aria-label": `${name} at full size` },
    Pix.el("div", { class: "row" }, Pix.el("b", { text: name }), Pix.el("span", { class: "muted", text: "before | after" }), slider, scale,
      Pix.el("span", { class: "spacer", style: "flex:1" }), close),
    Pix.el("div", { class: "scroller" }, stage));
  const done = () => { overlay.remove(); document.removeEventListener("keydown", onKey); };
  const onKey = (e) => { if (e.key === "Escape") done(); };
  close.addEventListener("click", done); document.addEventListener("keydown", onKey);
  document.body.append(overlay);
  if (after.complete) layout();
}

// "WxH" of an image URL (null for none, or for a text output)
function naturalSize(url) {
  return new Promise((resolve) => {
    if (!url) return resolve(null);
    const probe = new Image();
    probe.onload = () => resolve(`${probe.naturalWidth}x${probe.naturalHeight}`);
    probe.onerror = () => resolve(null);
    probe.src = url;
  });
}

// How a run went: its time, the model or preset, the input and output sizes
function showFacts(entry, facts) {
  const parts = [facts.model, facts.seconds !== undefined ? `${facts.seconds.toFixed(2)} s` : null,
    facts.input && facts.output ? `${facts.input} → ${facts.output}` : facts.output].filter(Boolean);
  entry.card.querySelector(".facts")?.remove();
  entry.card.querySelector(".actions").before(Pix.el("div", { class: "facts muted", text: parts.join(" · ") }));
}

// ---- running ------------------------------------------------------------------------
// The form fields of the chosen task; a preset's step parameters (or another task's
// fields) must be a JSON object
function params(choice) {
  const form = new FormData();
  const typed = $("preset-params").value.trim();
  let object = null;
  if (choice && typed) {
    try { object = JSON.parse(typed); } catch (_) { object = null; }
    if (!object || typeof object !== "object" || Array.isArray(object))
      throw new Error(choice.kind === "preset" ? 'Step parameters must be a JSON object by step id, e.g. {"upscale": {"scale": 4}}.'
        : `Fields must be a JSON object, e.g. ${choice.task.example}.`);
  }
  if (!choice) {
    form.append("model", $("model").value);
    if ($("scale").value) form.append("scale", $("scale").value);
  } else if (choice.kind === "preset" && object) form.append("params", JSON.stringify(object));
  else if (object) {
    for (const [name, value] of Object.entries(object))
      for (const one of Array.isArray(value) ? value : [value]) form.append(name, typeof one === "object" ? JSON.stringify(one) : String(one));
  }
  if (makesMesh(choice)) return form;  // the mesh's format is one of its fields
  if ($("format").value) form.append("format", $("format").value);
  if (!$("quality").disabled) form.append("quality", $("quality").value);
  return form;
}

// "photo.png" -> "photo.upscaled.webp" (or "photo.archive.png" for a preset,
// "photo.denoise.png" for a task)
function outputName(name, index, contentType, choice) {
  const base = name.replace(/\.[^.]+$/, "") || `image-${index}`;
  const ext = EXTENSIONS[(contentType || "").split(";")[0]] || "bin";
  return `${base}.${choice ? choice.name : "upscaled"}.${ext}`;
}

// A JSON output's texts by step: a preset's already are; a caption task's are one step
function textsOf(choice, said) { return choice && choice.name === "caption" && choice.kind === "task" ? { caption: said } : said; }

async function run() {
  if (!state.files.length || state.running) return;
  const preset = chosen();
  let form;
  try { form = params(preset); } catch (error) { return showMessage(error.message); } // the images stay chosen
  hideMessage(); state.running = true; refreshSummary();
  const files = state.files; state.files = []; state.last = files;
  const entries = [...state.cards.values()].filter((e) => e.file && files.includes(e.file));
  try {
    if (files.length === 1 && files[0].size <= SYNC_MAX_BYTES) await runSync(entries[0], preset, form);
    else await runJob(entries, preset, form);
  } catch (error) {
    showMessage(error.message);
    for (const entry of entries) if (entry.status.textContent !== "done") showFailure(entry, error.message);
  } finally {
    state.running = false; refreshSummary();
  }
}

async function runSync(entry, preset, form) {
  setStatus(entry, "processing");
  form.append("image", entry.file, entry.file.name);
  const path = syncRoute(preset);
  const started = performance.now();
  const response = await Pix.call(path, { method: "POST", body: form });
  const blob = await response.blob();
  const seconds = (performance.now() - started) / 1000;
  const header = response.headers.get("X-Pixserve-Texts");  // texts beside an image
  const said = isJson(blob) ? JSON.parse(await blob.text()) : null;
  const texts = said ? (preset.kind === "preset" ? said.outputs : textsOf(preset, said)) : header && JSON.parse(header);
  const facts = { seconds, model: response.headers.get("X-Pixserve-Model") || response.headers.get("X-Pixserve-Preset") || (preset && preset.name),
    input: response.headers.get("X-Pixserve-Input-Size"), output: response.headers.get("X-Pixserve-Output-Size") };
  showResult(entry, blob, outputName(entry.name, 0, blob.type, preset), texts, facts, preset);
  rememberSync(entry.name, preset, facts);
}

// The route one image runs on: an upscale, another task's own, or a preset's
function syncRoute(choice) {
  return !choice ? "v1/upscale" : choice.kind === "task" ? choice.task.path : `v1/run/${encodeURIComponent(choice.name)}`;
}

async function runJob(entries, preset, form) {
  if (preset) form.append(preset.kind === "task" ? "task" : "preset", preset.name);
  for (const entry of entries) form.append("images", entry.file, entry.file.name);
  for (const entry of entries) setStatus(entry, "uploading", "queued");
  const job = await Pix.json("v1/jobs", { method: "POST", body: form });
  remember(job, entries.map((e) => e.name));
  entries.forEach((entry, index) => { entry.job = job.id; entry.index = index; setStatus(entry, "queued"); });
  await followJob(job, entries, preset);
}

async function followJob(job, entries, preset) {
  const progress = $("progress"); progress.hidden = false; progress.max = job.progress.total; progress.value = 0;
  const byIndex = new Map(entries.map((e) => [e.index, e]));
  const settled = new Set();
  const settle = async (index, status) => {
    const entry = byIndex.get(index);
    if (!entry || settled.has(index)) return;
    settled.add(index);
    if (status === "succeeded") {
      const response = await Pix.call(`v1/jobs/${job.id}/items/${index}/output`);
      const blob = await response.blob();  // a text preset's output is its texts
      const texts = isJson(blob) ? textsOf(preset, JSON.parse(await blob.text())) : null;
      const preview = isMesh(blob) ? URL.createObjectURL(await (await Pix.call(`v1/jobs/${job.id}/items/${index}/preview`)).blob()) : null;
      showResult(entry, blob, outputName(entry.name, index, blob.type, preset), texts, null, preset, preview);
    } else {
      const current = await Pix.json(`v1/jobs/${job.id}`);
      showFailure(entry, current.items[index].error || status);
    }
  };
  const pending = [];
  const showLive = (frame) => {  // the item's work so far, in its card
    const entry = byIndex.get(frame.index);
    if (!entry || settled.has(frame.index)) return;
    if (!entry.live) { entry.live = Pix.el("img", { class: "live-preview", alt: "preview", style: "max-width:100%;max-height:220px;object-fit:contain" }); entry.body.replaceChildren(entry.live); }
    entry.live.src = frame.image;
    document.body.dataset.previews = Number(document.body.dataset.previews || 0) + 1;
    setStatus(entry, `processing ${Math.round((100 * frame.step) / frame.steps)}%`, "processing");
  };
  await Pix.followLive(job.id, (type, data) => {
    if (type !== "item") return;  // job status, in-item progress, the final envelope
    if (data.status === "running") {
      const entry = byIndex.get(data.index);
      if (entry && !settled.has(data.index)) setStatus(entry, "processing");
      return;
    }
    progress.value = data.progress.done + data.progress.failed;
    pending.push(settle(data.index, data.status));
  }, showLive);
  await Promise.all(pending);
  // events sent before we subscribed (a resumed or fast job): read the outcome once
  const final = await Pix.json(`v1/jobs/${job.id}`);
  progress.value = final.progress.done + final.progress.failed;
  await Promise.all(final.items.filter((item) => item.status !== "queued" && item.status !== "running").map((item) => settle(item.index, item.status)));
  for (const item of final.items) if (item.texts && byIndex.has(item.index)) showTexts(byIndex.get(item.index), textsOf(preset, item.texts));
  const model = final.task.model || final.task.preset || (preset && preset.name) || final.task.task;
  await Promise.all(final.items.filter((item) => byIndex.has(item.index) && item.status === "succeeded").map(async (item) => {
    const entry = byIndex.get(item.index);
    const [input, output] = await Promise.all([naturalSize(entry.beforeUrl), naturalSize(entry.afterUrl)]);
    showFacts(entry, { model, input, output, seconds: item.finished_at && item.started_at ? item.finished_at - item.started_at : undefined });
  }));
  updateHistory(final);
}

// ---- curl for this run -------------------------------------------------------------------
// The same run from a shell: the route and fields as chosen, the images by name (one
// small image runs sync, several as a job, as here); the key as a variable, never shown
function curlFor(choice, form, files) {
  const base = new URL(document.baseURI);
  const quote = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;
  const fields = [...form.entries()].map(([name, value]) => `-F ${quote(`${name}=${value}`)}`);
  const key = Pix.key() ? ['-H "Authorization: Bearer $PIXSERVE_API_KEY"'] : [];
  const sync = files.length === 1 && files[0].size <= SYNC_MAX_BYTES;
  if (sync) {
    const path = syncRoute(choice);
    return ["curl -fsS", ...key, `-F ${quote(`image=@${files[0].name}`)}`, ...fields, quote(new URL(path, base)), `-o ${quote(outputName(files[0].name, 0, outputType(choice), choice))}`].join(" \\\n  ");
  }
  const task = choice ? [`-F ${quote(`${choice.kind === "task" ? "task" : "preset"}=${choice.name}`)}`] : [];
  const images = files.map((f) => `-F ${quote(`images=@${f.name}`)}`);
  return ["curl -fsS", ...key, ...task, ...images, ...fields, quote(new URL("v1/jobs", base))].join(" \\\n  ");
}

// What a sync run answers with, as far as the page can tell before running it
function outputType(choice) {
  if (makesMesh(choice)) return MESH_TYPES.glb;
  if (choice && (choice.kind === "preset" ? !choice.preset.output : choice.task.text)) return "application/json";
  return `image/${$("format").value || (choice && choice.kind === "preset" ? choice.preset.output.format : "png")}`;
}

function showCurl() {
  const files = state.files.length ? state.files : state.last;
  if (!files.length) return showMessage("Add images first: the command names them.");
  let form;
  try { form = params(chosen()); } catch (error) { return showMessage(error.message); }
  const text = curlFor(chosen(), form, files);
  const box = $("curl-box");
  box.hidden = false;
  box.replaceChildren(Pix.el("pre", { class: "mono", id: "curl-text", text }),
    Pix.el("button", { class: "secondary", text: "Copy", onclick: async (e) => {
      try { await navigator.clipboard.writeText(text); e.target.textContent = "Copied"; } catch (_) { e.target.textContent = "Select and copy"; }
    } }));
}

// ---- downloads ------------------------------------------------------------------------
async function downloadZip() {
  const files = await Promise.all(state.results.map(async (r, i) => ({ name: uniqueName(r.name, i), data: new Uint8Array(await r.blob.arrayBuffer()) })));
  const link = Pix.el("a", { href: URL.createObjectURL(Zip.build(files)), download: "pixserve-results.zip" });
  document.body.append(link); link.click(); link.remove();
}

function uniqueName(name, index) {
  const duplicates = state.results.filter((r) => r.name === name).length > 1;
  return duplicates ? name.replace(/(\.[^.]+)$/, `-${index}$1`) : name;
}

function clearAll() {
  state.files = []; state.results = []; state.cards.clear();
  $("cards").replaceChildren(); $("zip").disabled = true; $("progress").hidden = true; hideMessage(); refreshSummary();
}

// ---- history (localStorage) -------------------------------------------------------------
function history() { try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch (_) { return []; } }
function saveHistory(items) { localStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(0, 50))); renderHistory(); }

// A sync run in the history: its result is not kept by the service, so it has no Open
function rememberSync(name, choice, facts) {
  saveHistory([{ id: `sync-${Date.now()}`, sync: true, created_at: Date.now() / 1000, total: 1, names: [name], status: "done",
    what: choice ? choice.name : $("model").value, seconds: facts.seconds }, ...history()]);
}

function remember(job, names) {
  saveHistory([{ id: job.id, created_at: job.created_at, expires_at: job.expires_at, total: job.progress.total, names: names.slice(0, 5), status: job.status }, ...history().filter((h) => h.id !== job.id)]);
}

function updateHistory(job) {
  saveHistory(history().map((h) => (h.id === job.id ? { ...h, status: job.status, done: job.progress.done, failed: job.progress.failed } : h)));
}

function renderHistory() {
  const list = $("history"); list.replaceChildren();
  const now = Date.now() / 1000;
  const items = history();
  if (!items.length) list.append(Pix.el("li", { class: "muted", text: "No runs from this browser yet." }));
  for (const h of items) {
    if (h.sync) {
      list.append(Pix.el("li", { "data-sync": h.id },
        Pix.el("span", { class: "mono", text: "sync" }),
        Pix.el("span", { text: `${h.names.join(", ")} · ${h.what} · ${h.seconds.toFixed(2)} s` }),
        Pix.el("span", { class: "muted", text: Pix.datetime(h.created_at) }), Pix.badge(h.status, "done"),
        Pix.el("span", { class: "muted", text: "answered at once; not kept by the service" })));
      continue;
    }
    const expired = now > h.expires_at || h.status === "expired";
    list.append(Pix.el("li", { "data-job": h.id },
      Pix.el("span", { class: "mono", text: h.id.slice(0, 12) }),
      Pix.el("span", { text: `${h.total} image(s): ${h.names.join(", ")}${h.total > h.names.length ? "…" : ""}` }),
      Pix.el("span", { class: "muted", text: Pix.datetime(h.created_at) }),
      Pix.badge(h.status || "queued"),
      expired ? Pix.badge("expired", "expired") : Pix.el("span", { class: "muted", text: `results until ${Pix.datetime(h.expires_at)}` }),
      expired ? null : Pix.el("button", { class: "secondary", text: "Open", onclick: () => reopen(h) })));
  }
}

async function reopen(h) {
  hideMessage();
  try {
    const job = await Pix.json(`v1/jobs/${h.id}`);
    updateHistory(job);
    const entries = job.items.map((item) => {
      const entry = cardFor(`${job.id}/${item.index}`, item.name || `item ${item.index}`, null, null);
      entry.job = job.id; entry.index = item.index; setStatus(entry, item.status);
      return entry;
    });
    const task = job.task.task || "upscale";
    await followJob(job, entries, task === "preset" ? { kind: "preset", name: job.task.preset } : task === "upscale" ? null : { kind: "task", name: task });
  } catch (error) {
    if (error.status === 410 || error.status === 404) {
      saveHistory(history().map((x) => (x.id === h.id ? { ...x, status: "expired" } : x)));
      showMessage(`Job ${h.id} has expired: its results are gone.`);
    } else showMessage(error.message);
  }
}

// ---- messages ----------------------------------------------------------------------------
function showMessage(text) { const box = $("message"); box.textContent = text; box.hidden = false; }
function hideMessage() { $("message").hidden = true; }

Pix.bindKeyField($("key"), () => loadModels().then(loadPresets));
setupInputs();
loadModels().then(loadPresets);  // the tasks' availability comes from the models
renderHistory();
