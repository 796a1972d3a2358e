// topcdn dashboard: renders /dashboard/api/state and /dashboard/api/history,
// and at #/sites/NAME the page of one site from /dashboard/api/sites/NAME.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = tag.includes(":") || ["circle", "line", "polyline", "text", "path", "g", "rect"].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  if (n === undefined || n === null || n < 0) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function short(id) { return id && id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : (id || ""); }

function ago(t) {
  if (!t) return "never";
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  return s < 1 ? "now" : s + " s ago";
}

// table fills a <table> with a header and rows of cells: text,
// [text, className], or {text, href} for a link.
function table(id, head, rows) {
  const t = $(id);
  t.replaceChildren();
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", {}, h)));
  t.append(tr);
  if (rows.length === 0) {
    const r = el("tr");
    r.append(el("td", { colspan: head.length }, "none"));
    t.append(r);
  }
  for (const row of rows) {
    const r = el("tr");
    for (const c of row) {
      if (c && c.href !== undefined) {
        const td = el("td");
        td.append(el("a", { href: c.href }, String(c.text)));
        r.append(td);
        continue;
      }
      const [text, cls] = Array.isArray(c) ? c : [c, ""];
      r.append(el("td", cls ? { class: cls } : {}, String(text)));
    }
    t.append(r);
  }
}

function health(ok) { return ok ? ["healthy", "ok"] : ["down", "bad"]; }

function drawMap(edges, peers) {
  const m = $("map");
  m.replaceChildren();
  const g = el("g", { class: "grid" });
  for (let lon = -180; lon <= 180; lon += 30) g.append(el("line", { x1: lon, y1: -90, x2: lon, y2: 90 }));
  for (let lat = -90; lat <= 90; lat += 30) g.append(el("line", { x1: -180, y1: lat, x2: 180, y2: lat }));
  m.append(g);
  // Storage peers first, edges on top; peers in one city fan out a little.
  const seen = {};
  for (const p of peers) {
    if (!p.location) continue;
    const k = p.location.lat + "," + p.location.lon;
    const n = (seen[k] = (seen[k] || 0) + 1);
    const a = n * 0.9;
    m.append(el("circle", { cx: p.location.lon + 4 * Math.cos(a), cy: -p.location.lat + 4 * Math.sin(a), r: 1.6,
      class: p.healthy ? "peer" : "down" }));
  }
  for (const e of edges) {
    if (e.lat === undefined || e.lat === null) continue;
    m.append(el("circle", { cx: e.lon, cy: -e.lat, r: 3.2, class: e.healthy ? "edge" : "down" }));
    m.append(el("text", { x: e.lon + 4.5, y: -e.lat + 1.5 }, e.city || (e.addrs || []).join(" ")));
  }
}

function plot(id, axisID, values, fmt, fixedMax) {
  const s = $(id);
  s.replaceChildren();
  const pts = values.filter((v) => v !== null);
  if (pts.length < 2) { $(axisID).textContent = "collecting samples…"; return; }
  const max = fixedMax || Math.max(1, ...pts);
  const step = 400 / (values.length - 1);
  const coords = values.map((v, i) => v === null ? null : (i * step).toFixed(1) + "," + (118 - (v / max) * 112).toFixed(1))
    .filter((c) => c !== null);
  s.append(el("polyline", { points: coords.join(" ") }));
  $(axisID).textContent = "max " + fmt(max) + " · last " + fmt(pts[pts.length - 1]) + " · " + values.length + " samples";
}

function renderAccounts(accounts) {
  if (!accounts) { table("accounts", ["account"], []); return; }
  let rows = Array.isArray(accounts) ? accounts : (accounts.accounts || Object.entries(accounts).map(([k, v]) =>
    typeof v === "object" ? Object.assign({ account: k }, v) : { account: k, balance: v }));
  const keys = [];
  rows.forEach((r) => Object.keys(r).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
  table("accounts", keys, rows.map((r) => keys.map((k) => {
    const v = r[k];
    if (typeof v === "number") return [v.toLocaleString(), "num"];
    if (typeof v === "string" && v.length > 30) return short(v);
    return v === undefined || v === null ? "" : (typeof v === "object" ? JSON.stringify(v) : v);
  })));
}

// siteRoute returns the site name of a #/sites/NAME address, or null.
function siteRoute() {
  const m = /^#\/sites\/([^/]+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function showErrors(errs) {
  $("errors").hidden = errs.length === 0;
  $("errors").textContent = errs.join(" · ");
}

// every formats a step in seconds: "1 min", "2 h", "45 s".
function every(secs) {
  if (secs % 3600 === 0) return secs / 3600 + " h";
  if (secs % 60 === 0) return secs / 60 + " min";
  return secs + " s";
}

// renderSite draws one site's page: its name's root, and what billing
// says the edges served for its key per epoch and by path.
function renderSite(p) {
  $("site-name").textContent = p.name;
  const served = p.served;
  const total = served ? served.total : null;
  table("site-summary", ["CID", "IPNS", "sequence", "updated", "size", "publisher key", "bytes (30 days)", "requests (30 days)"],
    [[p.cid, short(p.ipns), [p.sequence, "num"], new Date(p.updated).toLocaleString(),
      [p.size < 0 ? "not striped yet" : bytes(p.size), "num"], short(p.publisher),
      [total ? bytes(total.bytes) : "–", "num"], [total ? total.requests.toLocaleString() : "–", "num"]]]);
  if (!served) {
    for (const id of ["site-bytes", "site-requests"]) $(id).replaceChildren();
    $("site-bytes-axis").textContent = $("site-requests-axis").textContent = "no billing figures";
    table("site-top-requests", ["path"], []);
    table("site-top-bytes", ["path"], []);
    return;
  }
  // One value per step of the window: steps without records served nothing.
  const n = Math.max(1, Math.round((served.to - served.from) / served.step));
  const byts = new Array(n).fill(0), reqs = new Array(n).fill(0);
  for (const pt of served.points || []) {
    const i = Math.floor((pt.epoch - served.from) / served.step);
    if (i >= 0 && i < n) { byts[i] = pt.bytes; reqs[i] = pt.requests; }
  }
  $("site-step").textContent = "(per " + every(served.step) + ", last 30 days)";
  plot("site-bytes", "site-bytes-axis", byts, bytes);
  plot("site-requests", "site-requests-axis", reqs, (v) => Math.round(v).toLocaleString());
  const rows = (list) => (list || []).map((t) => [t.path, [t.requests.toLocaleString(), "num"], [bytes(t.bytes), "num"]]);
  table("site-top-requests", ["path", "requests", "bytes"], rows(served.top_by_requests));
  table("site-top-bytes", ["path", "requests", "bytes"], rows(served.top_by_bytes));
}

async function refreshSite(name) {
  const resp = await fetch("api/sites/" + encodeURIComponent(name));
  const body = await resp.json();
  if (!resp.ok) {
    $("site-name").textContent = name;
    showErrors([name + ": " + (body.error || resp.status)]);
    return;
  }
  showErrors(Object.entries(body.errors || {}).map(([k, v]) => k + ": " + v));
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  renderSite(body);
}

async function refresh() {
  const site = siteRoute();
  $("site-page").hidden = site === null;
  $("overview").hidden = site !== null;
  if (site !== null) {
    try {
      await refreshSite(site);
    } catch (e) {
      showErrors(["dashboard: " + e]);
    }
    return;
  }
  try {
    const [state, history] = await Promise.all([
      fetch("api/state").then((r) => r.json()),
      fetch("api/history").then((r) => r.json()),
    ]);
    const errs = Object.entries(state.errors || {}).map(([k, v]) => k + ": " + v);
    $("errors").hidden = errs.length === 0;
    $("errors").textContent = errs.join(" · ");
    $("updated").textContent = "updated " + new Date(state.time).toLocaleTimeString();

    const edges = state.edges || [];
    table("edges", ["edge", "city", "address", "health", "load (req/s)", "answers", "requests", "bytes served", "cache hits", "last heartbeat"],
      edges.map((e) => [short(e.peer), e.city || "", (e.addrs || []).join(" "), e.quarantine ? ["quarantined", "bad"] : health(e.healthy),
        [(e.load || 0).toFixed(1), "num"], [e.answers || 0, "num"], [e.requests || 0, "num"], [bytes(e.bytes || 0), "num"],
        [(e.cache_hits + e.cache_misses) ? Math.round(100 * e.cache_hits / (e.cache_hits + e.cache_misses)) + "%" : "–", "num"],
        ago(e.last_heartbeat)]));

    table("sites", ["name", "CID", "IPNS", "sequence", "size", "bytes served (billed)"],
      (state.sites || []).map((s) => [{ text: s.name, href: "#/sites/" + encodeURIComponent(s.name) }, s.cid, short(s.ipns), [s.sequence, "num"], [s.size < 0 ? "not striped yet" : bytes(s.size), "num"],
        [s.served < 0 ? "–" : bytes(s.served), "num"]]));

    const st = state.storage || {};
    const peers = st.peers || [];
    $("storage-summary").textContent = (st.segments || 0) + " segments, " + ((st.at_risk || []).length) +
      " at risk, " + (st.pending_stripe_jobs || 0) + " publishes waiting to be striped";
    table("peers", ["peer", "address", "region", "health", "shards", "used", "capacity", "audits ok", "audits failed", "flags", "last seen"],
      peers.map((p) => [short(p.id), p.addr, (p.location && p.location.region) || "", health(p.healthy), [p.shards, "num"],
        [bytes(p.capacity - p.free), "num"], [bytes(p.capacity), "num"], [p.audits_ok, "num"],
        [p.audits_failed, p.audits_failed ? "num bad" : "num"], [p.flags, p.flags ? "num bad" : "num"], ago(p.last_seen)]));

    renderAccounts(state.accounts);
    drawMap(edges, peers);
    plot("bytes", "bytes-axis", history.map((h) => h.bytes), bytes);
    plot("hits", "hits-axis", history.map((h) => h.hit_ratio < 0 ? null : h.hit_ratio),
      (v) => Math.round(v * 100) + "%", 1);
  } catch (e) {
    $("errors").hidden = false;
    $("errors").textContent = "dashboard: " + e;
  }
}

refresh();
setInterval(refresh, 3000);
window.addEventListener("hashchange", refresh);
