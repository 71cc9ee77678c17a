// vtr serve: the search page. Plain JS, no build step; talks to the JSON API of the same server.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  form: $("search"), q: $("q"), k: $("k"), rerank: $("rerank"), status: $("status"), message: $("message"),
  results: $("results"), empty: $("empty"), emptyHint: $("empty-hint"), emptyDetail: $("empty-detail"),
  player: $("player"), video: $("video"), span: $("span"), head: $("head"), nowPlaying: $("now-playing"),
  replay: $("replay"), close: $("close"), failures: $("failures"), failureList: $("failure-list"),
};
let current = null; // the hit being played: {video_id, start_s, end_s, ...}
let stopAtEnd = false;
let lastGeneration = null;

function fmtTime(s) {
  const m = Math.floor(s / 60);
  const sec = s - 60 * m;
  return `${m}:${sec < 10 ? "0" : ""}${sec.toFixed(1)}`;
}

function node(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  Object.assign(el, props);
  for (const c of children) el.append(c);
  return el;
}

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = { detail: resp.statusText }; }
  if (!resp.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function setMessage(text, isError = false) {
  els.message.textContent = text;
  els.message.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ status and the empty-library state

async function refreshStatus() {
  let st;
  try { st = await api("/api/status"); } catch (e) { els.status.textContent = `status: ${e.message}`; return; }
  const indexed = st.ready ? (st.videos.indexed || 0) : 0;
  els.empty.hidden = indexed > 0;
  els.emptyHint.textContent = st.hint || "vtr index VIDEO_FOLDER";
  els.emptyDetail.textContent = st.ready ? "" : (st.message || "");
  if (!st.ready) {
    els.status.textContent = `index “${st.index}”: not built yet`;
  } else {
    const failed = st.videos.failed || 0;
    els.status.textContent = `index “${st.index}”: ${indexed} videos, ${st.segments} segments` +
      (failed ? `, ${failed} failed` : "") + ` · model ${String(st.model_name).split("/").pop()} · generation ${st.generation}`;
    els.failures.hidden = !st.failures.length;
    els.failureList.replaceChildren(...st.failures.map((f) =>
      node("li", { textContent: `${f.path}: ${f.reason}` })));
    if (lastGeneration !== null && st.generation !== lastGeneration && els.q.value.trim()) runSearch(false);
    lastGeneration = st.generation;
  }
}

// ------------------------------------------------------------------ results

function hitCard(hit) {
  const li = node("li", { className: "hit" });
  li.dataset.segment = hit.segment_id;
  li.dataset.video = hit.video_id;
  const label = `${hit.name}, ${fmtTime(hit.start_s)} to ${fmtTime(hit.end_s)}, score ${hit.score.toFixed(3)}`;
  const play = node("button", { className: "play", type: "button", title: hit.path });
  play.setAttribute("aria-label", `play ${label}`);
  const img = node("img", { src: hit.thumbnail_url, alt: `frame of ${hit.name} at ${fmtTime((hit.start_s + hit.end_s) / 2)}`,
    loading: "lazy", width: 320, height: 240 });
  const meta = node("div", { className: "meta" },
    node("span", { className: "name" }, node("span", { className: "rank", textContent: `${hit.rank}` }), hit.name),
    node("span", { className: "when", textContent: `${fmtTime(hit.start_s)}–${fmtTime(hit.end_s)}` }),
    " · ",
    node("span", { className: "score", textContent: `score ${hit.score.toFixed(3)}` }));
  play.append(img, meta);
  play.addEventListener("click", () => playHit(hit, li));
  const more = node("button", { className: "more", type: "button", textContent: "More like this" });
  more.setAttribute("aria-label", `more like ${label}`);
  more.addEventListener("click", () => moreLike(hit));
  li.append(play, more);
  return li;
}

function showResults(results, title) {
  els.results.replaceChildren(...results.map(hitCard));
  setMessage(results.length ? title : "no hits");
}

async function runSearch(push = true) {
  const q = els.q.value.trim();
  if (!q) return;
  const params = new URLSearchParams({ q, k: els.k.value });
  if (els.rerank.checked) params.set("rerank", "true");
  if (push) history.replaceState(null, "", `?${params}`);
  setMessage("searching…");
  try {
    const r = await api(`/api/search?${params}`);
    showResults(r.results, `${r.results.length} hits for “${q}” in ${Math.round(r.took_ms)} ms`);
  } catch (e) { setMessage(e.message, true); }
}

async function moreLike(hit) {
  setMessage("searching…");
  try {
    const r = await api(`/api/similar?segment_id=${hit.segment_id}&k=${els.k.value}`);
    showResults(r.results, `${r.results.length} segments like ${hit.name} ${fmtTime(hit.start_s)}–${fmtTime(hit.end_s)}`);
    els.results.querySelector(".play")?.focus();
  } catch (e) { setMessage(e.message, true); }
}

// ------------------------------------------------------------------ the player

function drawTimeline() {
  const d = els.video.duration;
  if (!current || !isFinite(d) || d <= 0) return;
  els.span.style.left = `${(100 * current.start_s) / d}%`;
  els.span.style.width = `${(100 * Math.max(0, Math.min(current.end_s, d) - current.start_s)) / d}%`;
  els.head.style.left = `${(100 * els.video.currentTime) / d}%`;
}

function seekAndPlay() {
  els.video.currentTime = current.start_s;
  stopAtEnd = true;
  els.video.play().catch(() => { /* autoplay refused: the controls are there */ });
}

function playHit(hit, li) {
  document.querySelectorAll(".hit.playing").forEach((x) => x.classList.remove("playing"));
  li?.classList.add("playing");
  current = hit;
  els.player.hidden = false;
  els.nowPlaying.textContent = `${hit.name} · ${fmtTime(hit.start_s)}–${fmtTime(hit.end_s)} (score ${hit.score.toFixed(3)})`;
  const src = new URL(hit.video_url, location.href).href;
  if (els.video.src !== src) {
    els.video.src = src;
    els.video.addEventListener("loadedmetadata", () => { drawTimeline(); seekAndPlay(); }, { once: true });
  } else {
    seekAndPlay();
  }
  els.player.scrollIntoView({ block: "nearest" });
}

els.video.addEventListener("timeupdate", () => {
  drawTimeline();
  if (current && stopAtEnd && els.video.currentTime >= current.end_s) {
    stopAtEnd = false; // the segment is over: pause once at its end (play on to see the rest)
    els.video.pause();
  }
});
els.video.addEventListener("seeking", () => { if (current && els.video.currentTime < current.start_s - 0.05) stopAtEnd = false; });
els.replay.addEventListener("click", () => current && seekAndPlay());
els.close.addEventListener("click", closePlayer);

function closePlayer() {
  els.video.pause();
  els.player.hidden = true;
  const playing = document.querySelector(".hit.playing .play");
  playing?.focus();
}

// ------------------------------------------------------------------ keyboard

document.addEventListener("keydown", (ev) => {
  const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
  if (ev.key === "/" && !typing) { ev.preventDefault(); els.q.focus(); els.q.select(); return; }
  if (ev.key === "Escape" && !els.player.hidden) { closePlayer(); return; }
  if (typing) return;
  const cards = [...els.results.querySelectorAll(".hit")];
  const i = cards.findIndex((c) => c.contains(document.activeElement));
  if ((ev.key === "ArrowRight" || ev.key === "ArrowLeft") && cards.length) {
    ev.preventDefault();
    const j = i < 0 ? 0 : Math.max(0, Math.min(cards.length - 1, i + (ev.key === "ArrowRight" ? 1 : -1)));
    cards[j].querySelector(".play").focus();
  } else if (ev.key === "m" && i >= 0) {
    cards[i].querySelector(".more").click();
  } else if (ev.key === "r" && current) {
    seekAndPlay();
  }
});

els.form.addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });

// ------------------------------------------------------------------ start

const initial = new URLSearchParams(location.search);
if (initial.get("q")) {
  els.q.value = initial.get("q");
  const k = initial.get("k");
  if (k && /^[0-9]+$/.test(k)) {
    if (![...els.k.options].some((o) => o.value === k)) els.k.append(new Option(k, k));
    els.k.value = k;
  }
  els.rerank.checked = initial.get("rerank") === "true";
}
refreshStatus().then(() => { if (els.q.value.trim()) runSearch(false); });
setInterval(refreshStatus, 10000);
