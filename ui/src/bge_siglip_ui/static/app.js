// bge-siglip ui: the page's only script. Talks to its own server's /api/* and nothing else.
"use strict";

const PAGE = 48;               // hits per request; more are fetched as the grid scrolls into view
const $ = (id) => document.getElementById(id);
const els = {
  form: $("query"), text: $("text"), file: $("file"), box: $("searchbox"), chip: $("image-chip"),
  preview: $("image-preview"), imageName: $("image-name"), clear: $("image-clear"), mix: $("mix"),
  weight: $("weight"), weightValue: $("weight-value"), status: $("status"), progress: $("progress"),
  progressBar: $("progress-bar"), progressText: $("progress-text"), message: $("message"), summary: $("summary"),
  grid: $("grid"), sentinel: $("sentinel"), empty: $("empty"), drop: $("drop"), viewer: $("viewer"),
  viewerImg: $("viewer-img"), viewerName: $("viewer-name"), viewerScore: $("viewer-score"),
  viewerMore: $("viewer-more"), viewerOpen: $("viewer-open"), viewerClose: $("viewer-close"),
  viewerPrev: $("viewer-prev"), viewerNext: $("viewer-next"),
};

const state = {
  image: null,        // {ref: "upload:..." | "item:<id>", name, preview}
  hits: [],           // hits shown, in rank order
  offset: 0, more: false, loading: false,
  seq: 0,             // the current query's number: answers to older ones are dropped
  controller: null,   // aborts the request of a query that was replaced
  ready: false,       // model and store usable
  viewing: -1,        // index in hits of the image in the viewer
  showingQueryError: false,  // the message line holds a failed query's error (status updates leave it)
};

const fmt = new Intl.NumberFormat();

function showMessage(text, kind = "error") {
  els.message.textContent = text;
  els.message.className = "message" + (kind === "error" ? " error" : "");
  els.message.hidden = !text;
}

async function api(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: said below */ }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    error.type = body && body.type ? body.type : "HTTPError";
    throw error;
  }
  return body;
}

function describe(error) {
  return error.type && error.type !== "HTTPError" ? `${error.type}: ${error.message}` : error.message;
}

// ------------------------------------------------------------------------------------------------ status
let statusTimer = null;

async function refreshStatus() {
  let status;
  try {
    status = await api("/api/status");
  } catch (error) {
    els.status.innerHTML = '<span class="dot bad"></span>server not reachable';
    scheduleStatus(3000);
    return;
  }
  const { model, store, indexing } = status;
  const parts = [];
  let dot = "";
  let message = "", kind = "warn";
  if (model.state === "loading") {
    dot = "busy"; parts.push("loading the model…");
  } else if (model.state === "failed") {
    dot = "bad"; parts.push("no model");
    message = `The model could not be loaded: ${model.error}`; kind = "error";
  } else {
    parts.push(`model <b>${escapeHtml(shortName(model.name, 2))}</b> (${model.dim}-d, ${escapeHtml(model.device)})`);
  }
  if (store.target !== undefined && store.count !== undefined) {
    parts.push(store.folder
      ? `<b>${fmt.format(store.count)}</b> images in <b>${escapeHtml(shortName(store.folder, 2))}</b>`
      : `<b>${fmt.format(store.count)}</b> items in ${escapeHtml(store.target)}`);
  }
  if (store.error) {
    dot = "bad";
    if (!message) { message = store.error; kind = store.state === "none" ? "warn" : "error"; }
  } else if (store.state === "ready" && store.count === 0 && !message) {
    message = store.folder ? `There are no images in ${store.folder} (searched recursively; hidden files are skipped).`
                           : `The collection ${store.target} is empty.`;
  }
  if (indexing && indexing.errors && indexing.errors.length && !message) {
    const more = indexing.failed > indexing.errors.length ? `\n… and ${indexing.failed - indexing.errors.length} more` : "";
    message = `${fmt.format(indexing.failed)} file(s) could not be indexed:\n${indexing.errors.join("\n")}${more}`;
  }
  if (!dot && (store.state === "indexing" || store.state === "opening" || store.state.startsWith("waiting"))) dot = "busy";
  els.status.innerHTML = `<span class="dot ${dot}"></span>` + parts.join(" · ");
  els.status.title = store.target || "";
  if (!state.showingQueryError) showMessage(message, kind);
  renderProgress(store.state === "indexing" ? indexing : null);
  const wasReady = state.ready;
  state.ready = model.state === "ready" && store.target !== undefined;
  if (!wasReady && state.ready && hasQuery()) search(true);
  const settled = model.state === "failed" || (store.state !== "indexing" && store.state !== "opening"
                                                 && !store.state.startsWith("waiting") && model.state !== "loading");
  scheduleStatus(settled ? 15000 : 1000);
}

function scheduleStatus(ms) {
  clearTimeout(statusTimer);
  statusTimer = setTimeout(refreshStatus, ms);
}

function renderProgress(indexing) {
  if (!indexing) { els.progress.hidden = true; return; }
  els.progress.hidden = false;
  const { phase, done, total, unchanged, rate } = indexing;
  const share = total ? done / total : 0;
  els.progressBar.style.width = `${(100 * share).toFixed(1)}%`;
  let text = "";
  if (phase === "scanning") text = "Looking for images…";
  else if (phase === "hashing") text = `Checking files: ${fmt.format(done)} of ${fmt.format(total)}`;
  else {
    text = `Indexing: ${fmt.format(done)} of ${fmt.format(total)} new images`;
    if (unchanged) text += ` (${fmt.format(unchanged)} already indexed)`;
    if (rate) text += ` · ${rate.toFixed(1)}/s, about ${eta((total - done) / rate)} left`;
    text += " · you can search what is indexed so far";
  }
  els.progressText.textContent = text;
}

function eta(seconds) {
  if (!isFinite(seconds)) return "?";
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function shortName(path, keep = 1) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.length ? parts.slice(-keep).join("/") : String(path);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// ------------------------------------------------------------------------------------------------ query
function hasQuery() { return els.text.value.trim() !== "" || state.image !== null; }

function queryParams(offset) {
  const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
  const text = els.text.value.trim();
  if (text) params.set("text", text);
  if (state.image) params.set("image", state.image.ref);
  if (text && state.image) params.set("weight", els.weight.value);
  return params;
}

async function search(reset) {
  if (reset) {
    state.seq += 1;
    if (state.controller) state.controller.abort();
    state.offset = 0; state.more = false; state.loading = false;
  }
  const seq = state.seq;
  els.mix.hidden = !(els.text.value.trim() && state.image);
  if (!hasQuery()) {
    state.hits = []; els.grid.replaceChildren(); els.summary.textContent = ""; els.empty.hidden = false;
    clearQueryError();
    return;
  }
  if (state.loading || (!reset && !state.more)) return;
  if (!state.ready) { els.summary.textContent = "Waiting for the model and the store…"; return; }
  state.loading = true;
  state.controller = new AbortController();
  const offset = state.offset;
  try {
    const body = await api(`/api/search?${queryParams(offset)}`, { signal: state.controller.signal });
    if (seq !== state.seq) return;
    clearQueryError();
    if (offset === 0) { state.hits = []; els.grid.replaceChildren(); }
    els.empty.hidden = true;
    const start = state.hits.length;
    state.hits.push(...body.hits);
    els.grid.append(...body.hits.map((hit, i) => tile(hit, start + i)));
    state.offset = offset + body.hits.length;
    state.more = body.more;
    renderSummary(body);
  } catch (error) {
    if (error.name === "AbortError" || seq !== state.seq) return;
    state.showingQueryError = true;
    showMessage(`The search failed: ${describe(error)}`);
    if (offset === 0) { state.hits = []; els.grid.replaceChildren(); els.summary.textContent = ""; }
  } finally {
    if (seq === state.seq) state.loading = false;
  }
  // A short first page on a tall screen: keep filling while the sentinel is visible.
  if (seq === state.seq) maybeMore();
}

function clearQueryError() {
  if (state.showingQueryError) { state.showingQueryError = false; showMessage(""); refreshStatus(); }
}

function renderSummary(body) {
  const text = els.text.value.trim();
  const what = [];
  if (text) what.push(`<q>${escapeHtml(text)}</q>`);
  if (state.image) what.push(`the image <q>${escapeHtml(state.image.name)}</q>`);
  let mix = "";
  if (text && state.image) {
    const share = Math.round(100 * Number(els.weight.value));
    mix = ` (text ${100 - share}% · image ${share}%)`;
  }
  const shown = state.hits.length;
  const timing = body.timing_ms ? ` · query ${body.timing_ms.query} ms, search ${body.timing_ms.search} ms` : "";
  els.summary.innerHTML = shown
    ? `Top ${fmt.format(shown)}${state.more ? "+" : ""} for ${what.join(" + ")}${mix}${timing}`
    : `Nothing found for ${what.join(" + ")}`;
}

function tile(hit, index) {
  const figure = document.createElement("figure");
  figure.className = "tile";
  figure.dataset.id = hit.id;
  figure.dataset.name = hit.name;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.title = hit.name;
  if (hit.kind === "text") {
    const quote = document.createElement("blockquote");
    quote.textContent = hit.text;
    open.append(quote);
    open.disabled = true;
  } else if (hit.thumb) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = hit.name;
    img.src = hit.thumb;
    img.addEventListener("error", () => img.replaceWith(placeholder("cannot show this image")));
    open.append(img);
    open.addEventListener("click", () => openViewer(index));
  } else {
    open.append(placeholder("no image file on this machine"));
    open.disabled = true;
  }
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = String(index + 1);
  const score = document.createElement("span");
  score.className = "score badge";
  score.textContent = hit.score.toFixed(3);
  score.title = "cosine similarity to the query";
  const caption = document.createElement("figcaption");
  caption.className = "name";
  caption.textContent = hit.name;
  caption.title = hit.name;
  figure.append(open, rank, score, caption);
  if (hit.kind === "image") {
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "More like this";
    more.addEventListener("click", () => moreLike(hit));
    figure.append(more);
  }
  return figure;
}

function placeholder(text) {
  const div = document.createElement("div");
  div.className = "placeholder";
  div.textContent = text;
  return div;
}

function sentinelVisible() {
  const rect = els.sentinel.getBoundingClientRect();
  return rect.top < window.innerHeight + 600;
}

function maybeMore() {
  if (state.more && !state.loading && sentinelVisible()) search(false);
}

// The observer reports changes only: a sentinel that stays in view while a page loads (fast scrolling, the End
// key) sends no new event, so scrolling checks too (once per frame).
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) maybeMore();
}, { rootMargin: "600px" }).observe(els.sentinel);
let scrollPending = false;
window.addEventListener("scroll", () => {
  if (scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => { scrollPending = false; maybeMore(); });
}, { passive: true });

// ------------------------------------------------------------------------------------------------ image
function setImage(image) {
  if (state.image && state.image.objectUrl) URL.revokeObjectURL(state.image.objectUrl);
  state.image = image;
  els.chip.hidden = !image;
  if (image) {
    els.preview.src = image.preview || "data:,";
    els.imageName.textContent = image.name;
    els.chip.title = image.name;
  }
  search(true);
}

async function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`${file.name || "That file"} is not an image (${file.type}).`);
    return;
  }
  const objectUrl = URL.createObjectURL(file);
  const name = file.name || "pasted image";
  els.summary.textContent = `Reading ${name}…`;
  try {
    const body = await api("/api/upload", { method: "POST", body: file,
                                            headers: { "Content-Type": file.type || "application/octet-stream" } });
    clearQueryError();
    setImage({ ref: body.ref, name, preview: objectUrl, objectUrl });
  } catch (error) {
    URL.revokeObjectURL(objectUrl);
    els.summary.textContent = "";
    state.showingQueryError = true;
    showMessage(`${name}: ${describe(error)}`);
  }
}

function moreLike(hit) {
  closeViewer();
  els.text.value = "";
  setImage({ ref: `item:${hit.id}`, name: hit.name, preview: hit.thumb });
  window.scrollTo({ top: 0, behavior: "smooth" });
}

els.file.addEventListener("change", () => { useFile(els.file.files[0]); els.file.value = ""; });
els.clear.addEventListener("click", () => { setImage(null); els.text.focus(); });

document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData ? event.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
  if (item) { event.preventDefault(); useFile(item.getAsFile()); }
});

let dragDepth = 0;
const draggingFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
window.addEventListener("dragenter", (event) => {
  if (!draggingFiles(event)) return;
  dragDepth += 1; els.drop.hidden = false; els.box.classList.add("dragging");
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) { els.drop.hidden = true; els.box.classList.remove("dragging"); }
});
window.addEventListener("dragover", (event) => { if (draggingFiles(event)) event.preventDefault(); });
window.addEventListener("drop", (event) => {
  if (!draggingFiles(event)) return;
  event.preventDefault();
  dragDepth = 0; els.drop.hidden = true; els.box.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

// ------------------------------------------------------------------------------------------------ text
let typingTimer = null;
els.text.addEventListener("input", () => {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => search(true), 300);
});
els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(typingTimer);
  search(true);
});
els.weight.addEventListener("input", () => {
  els.weightValue.textContent = `${Math.round(100 * Number(els.weight.value))}%`;
});
els.weight.addEventListener("change", () => search(true));

// ------------------------------------------------------------------------------------------------ viewer
function openViewer(index) {
  const hit = state.hits[index];
  if (!hit || !hit.image) return;
  state.viewing = index;
  els.viewerImg.src = hit.image;
  els.viewerImg.alt = hit.name;
  els.viewerName.textContent = `${index + 1}. ${hit.name}`;
  els.viewerScore.textContent = hit.score.toFixed(3);
  els.viewerOpen.href = hit.image;
  if (!els.viewer.open) els.viewer.showModal();
}

function closeViewer() {
  if (els.viewer.open) els.viewer.close();
  state.viewing = -1;
}

function step(delta) {
  let index = state.viewing + delta;
  while (index >= 0 && index < state.hits.length && !state.hits[index].image) index += delta;
  if (index >= 0 && index < state.hits.length) openViewer(index);
  if (index >= state.hits.length - 4 && state.more) search(false);
}

els.viewerClose.addEventListener("click", closeViewer);
els.viewerPrev.addEventListener("click", () => step(-1));
els.viewerNext.addEventListener("click", () => step(1));
els.viewerMore.addEventListener("click", () => { const hit = state.hits[state.viewing]; if (hit) moreLike(hit); });
els.viewer.addEventListener("click", (event) => { if (event.target === els.viewer) closeViewer(); });
els.viewer.addEventListener("close", () => { state.viewing = -1; });
document.addEventListener("keydown", (event) => {
  if (!els.viewer.open) {
    if (event.key === "/" && document.activeElement !== els.text) { event.preventDefault(); els.text.focus(); }
    return;
  }
  if (event.key === "ArrowLeft") step(-1);
  else if (event.key === "ArrowRight") step(1);
});

refreshStatus();
els.text.focus();
