// rehome console: renders the `state` events of /api/events. No library:
// the DOM is built with createElement and textContent (no HTML from data).
"use strict";

const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function bytes(n) {
  if (n == null || isNaN(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
}

function count(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }

function duration(s) {
  if (s == null || s < 0) return "unknown";
  if (s === 0) return "now";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString("en-GB", { hour12: false });
}

function ago(t, now) {
  const s = (new Date(now) - new Date(t)) / 1000;
  return s < 1 ? "just now" : duration(s) + " ago";
}

function setStat(id, text, tone) {
  const v = $(id);
  v.textContent = text;
  v.parentElement.classList.remove("bad", "warn", "good");
  if (tone) v.parentElement.classList.add(tone);
}

function renderBanners(v) {
  const b = $("banners");
  b.replaceChildren();
  const add = (tone, text) => b.append(el("div", { class: "banner " + tone }, text));
  if (v.bus !== "ok") add("bad", "Bus unreachable: " + (v.bus_error || "no answer") + ". Showing the last known state; reconnecting by itself.");
  const st = v.status || {};
  if (st.heal_paused || (v.heal && v.heal.paused)) {
    let why = "Heal paused: no new repair is issued.";
    if (v.switch && v.switch.paused) why += " Paused by " + (v.switch.by || "an operator") + " since " + clock(v.switch.since) + " (" + ago(v.switch.since, v.time) + "). `rehome heal resume` resumes.";
    add("warn", why);
  }
  if (st.verdicts_held) add("warn", "Down verdicts held: " + (st.held_reason || "too many nodes silent at once") + ".");
  if (v.heal && v.heal.stalled) add("bad", "Heal stalled: work remains and nothing was verified lately.");
  if (v.balance && v.balance.paused) add("info", "Rebalancing paused: no copy moves to even out the fill. `rehome rebalance resume` resumes.");
}

function pct(f) { return f == null ? "–" : (f * 100).toFixed(1) + "%"; }

function renderMembership(v) {
  const box = $("membership");
  if (!v.balance) return;
  box.replaceChildren();
  const b = v.balance;
  const state = b.paused ? "paused" : b.balanced ? "balanced" : b.moves_in_flight > 0 ? "moving" : "out of band";
  box.append(el("div", { class: "card balance", "data-balance": state },
    el("span", { class: "pill " + (b.balanced ? "pill-ok" : b.paused ? "pill-wait" : "pill-bad") }, "rebalance " + state),
    el("span", {}, "mean fill " + pct(b.mean_fill)),
    el("span", {}, "widest gap " + pct(b.max_deviation) + " (band ±" + pct(b.band) + ")"),
    el("span", {}, count(b.moves_in_flight) + " moves, " + bytes(b.bytes_moving) + " in flight")));
  const drains = v.drains || [];
  if (!drains.length) { box.append(el("p", { class: "muted" }, "no drain under way")); return; }
  for (const d of drains) {
    box.append(el("div", { class: "card drain", "data-drain": d.node },
      el("span", { class: "name" }, d.node),
      el("span", { class: "pill " + (d.drained ? "pill-ok" : "pill-wait") }, d.drained ? "drained" : "draining"),
      el("span", {}, count(d.shards_remaining) + " shards (" + bytes(d.bytes_remaining) + ") left"),
      el("span", {}, count(d.shards_moved) + " moved (" + bytes(d.bytes_moved) + ")"),
      el("span", {}, d.rate_bytes_per_sec > 0 ? bytes(d.rate_bytes_per_sec) + "/s" : "idle"),
      el("span", { class: "muted" }, d.drained ? "`rehome node remove " + d.node + "` forgets it" : "ETA " + duration(d.eta_seconds)),
      el("span", { class: "muted" }, "since " + clock(d.since) + (d.by ? " by " + d.by : ""))));
  }
}

function renderTotals(v) {
  const st = v.status, h = v.heal;
  if (st) {
    setStat("shards", count(st.shards));
    setStat("objects", count(st.objects));
    setStat("under-replicated", count(st.under_replicated), st.under_replicated > 0 ? "warn" : "good");
    setStat("lost", count(st.lost), st.lost > 0 ? "bad" : "good");
    setStat("bytes-remaining", bytes(st.bytes_remaining), st.bytes_remaining > 0 ? "warn" : null);
  }
  if (h) {
    setStat("rate", h.rate_bytes_per_sec > 0 ? bytes(h.rate_bytes_per_sec) + "/s" : "idle");
    const healthy = h.under_replicated === 0 && h.bytes_remaining === 0;
    setStat("eta", healthy ? "healthy" : duration(h.eta_seconds), healthy ? "good" : null);
    setStat("single-copy", count(h.single_copy), h.single_copy > 0 ? "bad" : "good");
    $("single-copy-eta").textContent = h.single_copy > 0 ? "none left in " + duration(h.single_copy_eta_seconds) : "";
  }
}

function renderChart(id, points, key, fmt, color, v) {
  const s = $(id);
  s.replaceChildren();
  const W = 600, H = 130, top = 8, bottom = 18, left = 0;
  const now = new Date(v.time).getTime(), span = v.window_seconds * 1000, from = now - span;
  let max = 0;
  for (const p of points) max = Math.max(max, p[key]);
  const ymax = max > 0 ? max * 1.15 : 1;
  const x = (t) => left + ((new Date(t).getTime() - from) / span) * (W - left);
  const y = (val) => top + (1 - val / ymax) * (H - top - bottom);
  const gmax = max > 0 ? max : ymax;
  for (const f of [0, 0.5, 1]) s.append(svg("line", { class: "grid", x1: 0, x2: W, y1: y(gmax * f), y2: y(gmax * f) }));
  if (points.length) {
    let d = "";
    for (const p of points) {
      const px = Math.max(0, x(p.t)), py = y(p[key]);
      d += d === "" ? "M" + px + "," + py : "H" + px + "V" + py;
    }
    d += "H" + W;
    const area = d + "V" + y(0) + "H" + Math.max(0, x(points[0].t)) + "Z";
    s.append(svg("path", { d: area, fill: color, "fill-opacity": "0.15", stroke: "none" }));
    s.append(svg("path", { d: d, fill: "none", stroke: color, class: "area" }));
  }
  const label = (text, xx, yy, anchor) => { const t = svg("text", { x: xx, y: yy, class: "axis", "text-anchor": anchor }); t.textContent = text; s.append(t); };
  label("max " + fmt(max), 4, 12, "start");
  label("now " + fmt(points.length ? points[points.length - 1][key] : 0), W - 4, 12, "end");
  label("−60 min", 4, H - 4, "start");
  label("−30 min", W / 2, H - 4, "middle");
  label("now", W - 4, H - 4, "end");
}

function renderRacks(v) {
  const box = $("racks");
  const nodes = (v.status && v.status.nodes) || [];
  if (!v.status) return;
  const racks = new Map();
  for (const n of nodes) {
    if (!racks.has(n.rack)) racks.set(n.rack, []);
    racks.get(n.rack).push(n);
  }
  const names = [...racks.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  box.replaceChildren();
  if (!names.length) { box.append(el("p", { class: "muted" }, "no storage node has reported yet")); return; }
  for (const r of names) {
    const list = racks.get(r).sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }));
    const up = list.filter((n) => n.state === "up").length;
    const sec = el("div", { class: "rack card", "data-rack": r },
      el("h3", {}, el("span", {}, r), el("span", { class: "muted" }, up + "/" + list.length + " up")));
    for (const n of list) {
      const fill = n.fill || 0;
      // The CSP forbids style attributes; the CSSOM sets the width.
      const level = el("div", {});
      level.style.width = Math.min(100, fill * 100).toFixed(1) + "%";
      const bar = el("div", { class: "fill" + (n.full || fill >= 0.95 ? " full" : fill >= 0.8 ? " high" : ""), title: (fill * 100).toFixed(1) + "% full" }, level);
      const meta = el("div", { class: "meta" }, bar, el("span", {}, (fill * 100).toFixed(1) + "% full"),
        el("span", {}, count(n.shards) + " shards"), el("span", {}, bytes(n.bytes)),
        el("span", { title: "suspect episodes within the flap window" }, n.flaps + " flap" + (n.flaps === 1 ? "" : "s")));
      if (n.full) meta.append(el("span", { class: "error" }, "disk full"));
      if (n.read_only) meta.append(el("span", { class: "error" }, "read-only"));
      const state = String(n.state || "unknown");
      sec.append(el("div", { class: "node s-" + state.replace(/[^a-z-]/g, ""), "data-node": n.id, "data-state": state },
        el("span", { class: "dot" }), el("span", { class: "name" }, n.id), el("span", { class: "state" }, state), meta));
    }
    box.append(sec);
  }
}

function renderIncidents(v) {
  const box = $("incidents");
  box.replaceChildren();
  const list = v.incidents || [];
  if (!list.length) { box.append(el("p", { class: "muted" }, "none in the last hour")); return; }
  for (const inc of list) {
    const healed = inc.healed && !inc.healed.startsWith("0001");
    const head = el("div", { class: "head" },
      el("span", { class: "id" }, inc.id),
      el("span", {}, "node " + inc.node),
      el("span", { class: healed ? "pill pill-ok" : "pill pill-bad" }, healed ? "healed" : "open"),
      el("span", { class: "muted" }, "opened " + clock(inc.opened) + (healed ? ", healed " + clock(inc.healed) : "")),
      el("span", { class: "muted" }, inc.repaired + "/" + inc.planned_shards + " shards, " + bytes(inc.repaired_bytes) + " of " + bytes(inc.planned_bytes) +
        (inc.failed ? ", " + inc.failed + " failed" : "") + (inc.lost ? ", " + inc.lost + " lost" : "")));
    if (inc.trace_id && v.trace_ui) {
      head.append(el("a", { href: v.trace_ui.replace(/\/+$/, "") + "/trace/" + encodeURIComponent(inc.trace_id), target: "_blank", rel: "noopener noreferrer" }, "trace"));
    }
    const tl = el("ol", { class: "timeline" });
    for (const s of inc.steps || []) {
      tl.append(el("li", { class: "p-" + s.phase }, el("span", { class: "when" }, clock(s.time)), el("span", { class: "phase" }, s.phase), s.detail || ""));
    }
    box.append(el("div", { class: "incident card", "data-incident": inc.id }, head, tl));
  }
}

function render(v) {
  const bus = $("bus");
  bus.textContent = v.bus === "ok" ? "bus ok" : "bus unreachable";
  bus.className = "pill " + (v.bus === "ok" ? "pill-ok" : "pill-bad");
  $("updated").textContent = "updated " + clock(v.time);
  renderBanners(v);
  renderTotals(v);
  const pts = v.chart || [];
  renderChart("chart-under", pts, "under", count, "#e0a526", v);
  renderChart("chart-lost", pts, "lost", count, "#e5484d", v);
  renderChart("chart-bytes", pts, "bytes", bytes, "#4fb3d9", v);
  renderRacks(v);
  renderMembership(v);
  renderIncidents(v);
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("state", (m) => { try { render(JSON.parse(m.data)); } catch (e) { console.error(e); } });
  es.onerror = () => {
    const bus = $("bus");
    bus.textContent = "console unreachable, retrying…";
    bus.className = "pill pill-wait";
    if (es.readyState === EventSource.CLOSED) {
      // A refusal (401: the session ended) closes the stream for good.
      fetch("/api/state", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) location.href = "/login"; else setTimeout(connect, 2000);
      }, () => setTimeout(connect, 2000));
    }
  };
}

connect();
