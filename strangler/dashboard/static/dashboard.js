// The migration dashboard: polls dashboard.json and updates the page in place.
// Plain JavaScript, no dependencies, nothing loaded from the internet. Every value shown is set
// with textContent: route names, reasons and shadow field paths are never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "strangler.adminToken";
// Sent with every change: a page of another site cannot add it without a CORS preflight,
// which the admin listener never grants; the listener also refuses another Origin.
const ADMIN_HEADER = "X-Strangler-Admin";

const state = {
  data: null,
  rows: new Map(),          // route name -> {tr, cells, last}
  history: null,            // {capacity, seq, at, new_share, routes: {name: {series: [...]}}}
  filter: "",
  polling: false,
  tokenRequired: false,
};

const $ = (id) => document.getElementById(id);

// --- formatting ------------------------------------------------------------------------------

function percent(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return (value * 100).toFixed(digits) + "%";
}

function rate(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function millis(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? value.toFixed(0) + " ms" : value.toFixed(1) + " ms";
}

function duration(seconds) {
  if (seconds <= 0) return "due now";
  const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s).padStart(2, "0")}`;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function setClass(element, name, on) {
  if (element.classList.contains(name) !== on) element.classList.toggle(name, on);
}

// --- sparklines ------------------------------------------------------------------------------

const MIN_SPAN = 12;     // frames: a young history is drawn over one minute at least, not squeezed into 15

function sparkPath(values, span, max) {
  // x: the frame's place among the last `span` frames (newest at the right); a gap breaks the line.
  let d = "", pen = false;
  const offset = span - values.length, step = 180 / Math.max(span - 1, 1);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) { pen = false; continue; }
    const x = (offset + i) * step, y = 23 - (max > 0 ? (v / max) * 22 : 0);
    const next = values[i + 1];
    d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    if (!pen && (next === null || next === undefined)) d += "h0.1";   // a lone point: a dot
    pen = true;
  }
  return d;
}

function drawSpark(svg, series, span, floor = 0) {
  let max = floor;
  for (const values of series.map((s) => s.values)) {
    for (const v of values) if (v !== null && v !== undefined && v > max) max = v;
  }
  while (svg.childNodes.length < series.length) {
    svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "path"));
  }
  while (svg.childNodes.length > series.length) svg.lastChild.remove();
  series.forEach((s, i) => {
    const path = svg.childNodes[i];
    path.setAttribute("class", s.kind);
    path.setAttribute("d", sparkPath(s.values, span, max));
  });
}

// --- history ---------------------------------------------------------------------------------

function mergeHistory(incoming) {
  const h = state.history;
  const append = h && incoming.from_seq === h.seq + 1 && h.capacity === incoming.capacity;
  if (!append) {
    state.history = {capacity: incoming.capacity, interval_s: incoming.interval_s, seq: incoming.seq, at: incoming.at,
                     new_share: incoming.new_share, routes: incoming.routes};
    return incoming.at.length > 0 || !h;
  }
  if (incoming.at.length === 0) return false;
  const trim = (list, more) => list.concat(more).slice(-incoming.capacity);
  h.seq = incoming.seq;
  h.at = trim(h.at, incoming.at);
  h.new_share = trim(h.new_share, incoming.new_share);
  const routes = {};
  for (const [name, series] of Object.entries(incoming.routes)) {
    const old = h.routes[name];
    routes[name] = {};
    for (const [key, values] of Object.entries(series)) {
      // A route new to the history has no earlier frames: pad so that its frames line up.
      const before = old ? old[key] : new Array(h.at.length - values.length).fill(null);
      routes[name][key] = trim(before, values);
    }
  }
  h.routes = routes;
  return true;
}

function drawHistory() {
  const h = state.history;
  if (!h) return;
  const span = Math.min(Math.max(h.at.length, MIN_SPAN), h.capacity);
  const minutes = (span * h.interval_s) / 60;
  setText($("spark-span"), minutes >= 2 ? `${Math.round(minutes)} minutes` : `${Math.round(minutes * 60)} seconds`);
  drawSpark($("new-share-spark"), [{kind: "new", values: h.new_share}], span, 1);
  const routes = new Map((state.data ? state.data.routes : []).map((route) => [route.name, route]));
  for (const [name, row] of state.rows) {
    const series = h.routes[name], route = routes.get(name);
    if (!series || !route) continue;
    // Only the sides the route has: a route all on legacy draws no "new" line at zero (a shadow
    // upstream serves no one).
    const upstreams = [...Object.keys(route.split), ...Object.values(route.compose || {})];
    if (route.fallback) upstreams.push(route.fallback);
    const sides = [];
    if (upstreams.includes(route.legacy)) sides.push("legacy");
    if (upstreams.some((upstream) => upstream !== route.legacy)) sides.push("new");
    const lines = (metric) => sides.map((side) => ({kind: side, values: series[`${side}_${metric}`]}));
    drawSpark(row.cells.rpsSpark, lines("rps"), span, 1);
    drawSpark(row.cells.errSpark, lines("error_rate"), span, 0.01);
    drawSpark(row.cells.p95Spark, lines("p95_ms"), span, 1);
  }
}

// --- rows ------------------------------------------------------------------------------------

function makeRow(name) {
  const tr = $("route-row").content.firstElementChild.cloneNode(true);
  const q = (selector) => tr.querySelector(selector);
  const cells = {
    name: q(".route .name"), match: q(".route .match"), source: q(".route .source"),
    splitbar: q(".splitbar"), splittext: q(".splittext"),
    rps: q(".rps .value"), rpsSpark: q(".rps .spark"),
    errors: q(".errors .value"), errSpark: q(".errors .spark"),
    p95: q(".p95 .value"), p95Spark: q(".p95 .spark"),
    breakers: q(".breakers"), fallbacks: q(".fallbacks"), shadow: q(".shadow"),
    rampState: q(".ramp-state"), rampNext: q(".ramp-next"), actions: q(".ramp .actions"),
  };
  tr.dataset.route = name;
  for (const button of cells.actions.querySelectorAll("button")) {
    button.addEventListener("click", () => rampAction(name, button.dataset.action));
  }
  return {tr, cells, last: {}};
}

function changed(row, key, value) {
  const text = JSON.stringify(value);
  if (row.last[key] === text) return false;
  row.last[key] = text;
  return true;
}

function splitColor(name, route, index) {
  if (name === route.legacy) return "var(--legacy)";
  return ["var(--new)", "var(--new-2)", "var(--new-3)"][index % 3];
}

function pair(newText, legacyText) {
  const span = document.createElement("span");
  const a = document.createElement("span"), b = document.createElement("span");
  a.className = "new-text"; a.textContent = newText;
  b.className = "legacy-text"; b.textContent = legacyText;
  span.append(a, " | ", b);
  return span;
}

function updateRow(row, route) {
  const c = row.cells, f = route.figures;
  setText(c.name, route.name);
  const m = route.match;
  setText(c.match, `${m.methods ? m.methods.join(",") : "*"} ${m.path}${m.host ? " host=" + m.host : ""}`);
  const sources = {ramp: "split set by its ramp", rollback_all: "rolled back to legacy"};
  setText(c.source, sources[route.split_source] || "");

  if (changed(row, "split", [route.split, route.legacy, route.compose])) {
    c.splitbar.replaceChildren();
    // A composite route has no split: one segment per part, coloured by the upstream it asks.
    const shares = route.compose
      ? Object.entries(route.compose).map(([part, upstream]) => [upstream, 100 / Object.keys(route.compose).length, part])
      : Object.entries(route.split).map(([name, share]) => [name, share, null]);
    const parts = [];
    shares.forEach(([name, share, part], i) => {
      const seg = document.createElement("div");
      seg.style.width = share + "%";
      seg.style.background = splitColor(name, route, i);
      seg.title = part ? `${part}: ${name}` : `${name} ${share}%`;
      c.splitbar.appendChild(seg);
      parts.push(part ? `${part} → ${name}` : `${name} ${share}%`);
    });
    c.splittext.textContent = (route.compose ? "composite: " : "") + parts.join(" · ");
    c.splittext.dataset.split = JSON.stringify(route.split);
  }

  setText(c.rps, f ? rate(f.requests_per_s) : "–");
  if (changed(row, "errors", f && [f.new.error_rate, f.legacy.error_rate])) {
    c.errors.replaceChildren(f ? pair(percent(f.new.error_rate, 2), percent(f.legacy.error_rate, 2)) : "–");
  }
  if (changed(row, "p95", f && [f.new.p95_ms, f.legacy.p95_ms])) {
    c.p95.replaceChildren(f ? pair(millis(f.new.p95_ms), millis(f.legacy.p95_ms)) : "–");
  }
  if (changed(row, "breakers", route.breakers)) {
    c.breakers.replaceChildren(...Object.entries(route.breakers).map(([upstream, breaker]) => {
      const chip = document.createElement("span");
      chip.className = "chip " + breaker;
      chip.dataset.upstream = upstream;
      chip.dataset.state = breaker;
      chip.textContent = `${upstream}: ${breaker.replace("_", "-")}`;
      return chip;
    }));
  }
  setText(c.fallbacks, f ? rate(f.fallbacks_per_min) : "–");
  if (changed(row, "shadow", route.shadow)) updateShadow(c.shadow, route);
  if (changed(row, "ramp", [route.ramp, state.data.rollback_all && state.data.rollback_all.active])) {
    updateRamp(row, route);
  }
}

function updateShadow(cell, route) {
  const s = route.shadow;
  if (!s) {
    cell.textContent = "–";
    return;
  }
  const rateLine = document.createElement("div");
  rateLine.className = "rate" + (s.match_rate !== null && s.match_rate < 0.99 ? " bad-text" : "");
  rateLine.textContent = s.match_rate === null ? "no comparisons" : `${percent(s.match_rate, 2)} match`;
  const parts = [rateLine];
  if (s.upstream) {
    const who = document.createElement("div");
    who.className = "fields";
    who.textContent = `against ${s.upstream}`;
    parts.push(who);
  }
  if (s.top_fields.length) {
    const list = document.createElement("ul");
    list.className = "fields";
    for (const field of s.top_fields) {
      const item = document.createElement("li");
      item.textContent = `${field.field} (${field.count})`;
      list.appendChild(item);
    }
    parts.push(list);
  }
  const link = document.createElement("a");
  link.href = s.samples;
  link.textContent = "samples";
  link.target = "_blank";
  link.rel = "noopener";
  parts.push(link);
  cell.replaceChildren(...parts);
}

function updateRamp(row, route) {
  const c = row.cells, ramp = route.ramp;
  c.actions.hidden = !ramp;
  if (!ramp) {
    c.rampState.textContent = "–";
    c.rampNext.textContent = "";
    return;
  }
  const steps = ramp.steps || [];
  const step = typeof ramp.step === "number" ? `step ${ramp.step + 1}/${steps.length}` : "";
  const label = document.createElement("span");
  label.className = "state";
  label.textContent = ramp.state;
  c.rampState.replaceChildren(label, ` · ${ramp.to} ${ramp.percent}%${step ? " · " + step : ""}`);
  const frozen = state.data.rollback_all && state.data.rollback_all.active;
  const can = {pause: ["running", "held"], resume: ["paused", "held", "rolled_back"],
               rollback: ["running", "held", "paused", "done"]};
  for (const button of c.actions.querySelectorAll("button")) {
    const action = button.dataset.action;
    button.disabled = !can[action].includes(ramp.state) || (frozen && action === "resume");
  }
  updateCountdown(row, route);
}

function updateCountdown(row, route) {
  const ramp = route.ramp;
  if (!ramp) return;
  let text = "";
  if (ramp.next_evaluation_at) {
    const left = (Date.parse(ramp.next_evaluation_at) - Date.now()) / 1000;
    text = `next decision in ${duration(left)}` + (ramp.next_step != null ? ` (to ${ramp.next_step}%)` : "");
  } else if (ramp.last_decision && ramp.last_decision.reason) {
    text = ramp.last_decision.reason;
  }
  setText(row.cells.rampNext, text);
}

// --- the page --------------------------------------------------------------------------------

function render(data) {
  state.data = data;
  state.tokenRequired = Boolean(data.features.token_required);
  setText($("version"), data.version.slice(0, 12));
  $("version").title = `${data.version}, loaded ${data.loaded_at}`;

  const p = data.progress;
  setText($("new-share"), percent(p.new_share));
  $("new-share-bar").style.width = p.new_share === null ? "0" : (p.new_share * 100).toFixed(1) + "%";
  setText($("share-window"), `(last ${Math.max(1, Math.round(p.window_s / 60))} min)`);
  setText($("routes-moved"), `${p.routes_moved} of ${p.routes}`);
  setText($("requests-seen"), `${p.requests} requests served in the window`);

  let open = 0, halfOpen = 0;
  for (const route of data.routes) {
    for (const breaker of Object.values(route.breakers)) {
      if (breaker === "open") open++;
      if (breaker === "half_open") halfOpen++;
    }
  }
  setText($("breakers-open"), `${open} open`);
  setClass($("breakers-open"), "bad-text", open > 0);
  const features = data.features;
  const ramps = data.routes.filter((route) => route.ramp).length;
  const notes = [`${halfOpen} half-open`];
  if (!features.ramps) notes.push("ramps and roll back all: not configured");
  else if (!features.ramps_available) notes.push("ramps: unavailable");
  else notes.push(ramps ? `${ramps} ramp${ramps > 1 ? "s" : ""}` : "no ramps");
  if (!features.shadow) notes.push("shadow: not configured");
  setText($("features"), notes.join(" · "));

  const table = $("routes");
  setClass(table, "no-shadow", !features.shadow);
  setClass(table, "no-ramp", ramps === 0);
  $("rollback-all").hidden = !features.ramps;
  renderBanner(data.rollback_all);

  const tbody = table.tBodies[0];
  const seen = new Set();
  let previous = null;
  for (const route of data.routes) {
    seen.add(route.name);
    let row = state.rows.get(route.name);
    if (!row) {
      row = makeRow(route.name);
      state.rows.set(route.name, row);
    }
    // Keep the config's order; move a row only when it is out of place.
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== row.tr) tbody.insertBefore(row.tr, wanted);
    previous = row.tr;
    updateRow(row, route);
    setClass(row.tr, "filtered", !matchesFilter(route.name));
  }
  for (const [name, row] of state.rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      state.rows.delete(name);
    }
  }
  setText($("route-count"), `${data.routes.length} routes`);
}

function renderBanner(rollback) {
  const active = Boolean(rollback && rollback.active);
  $("banner").hidden = !active;
  document.body.classList.toggle("rolled-back", active);
  $("rollback-all").disabled = active;
  if (!active) return;
  setText($("banner-legacy"), rollback.legacy || "legacy");
  const since = rollback.since ? new Date(rollback.since).toLocaleString() : "?";
  const left = Object.keys(rollback.left || {});
  setText($("banner-detail"), `Since ${since}` + (rollback.by ? ` by ${rollback.by}` : "") +
          `: “${rollback.reason || ""}”` + (left.length ? ` · left as they are: ${left.join(", ")}` : ""));
}

function matchesFilter(name) {
  return !state.filter || name.toLowerCase().includes(state.filter);
}

async function poll() {
  const since = state.history ? state.history.seq : 0;
  try {
    const response = await fetch(`dashboard.json?since=${since}`, {cache: "no-store"});
    if (!response.ok) throw new Error(`dashboard.json: ${response.status}`);
    const data = await response.json();
    render(data);
    if (mergeHistory(data.history)) drawHistory();
    const status = $("status");
    status.className = "status live";
    setText(status, "live · " + new Date(data.generated_at * 1000).toLocaleTimeString());
  } catch (error) {
    const status = $("status");
    status.className = "status stale";
    setText(status, "disconnected, retrying");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// --- changes ---------------------------------------------------------------------------------

function toast(text, error = false) {
  const element = $("toast");
  element.textContent = text;
  element.className = "toast" + (error ? " error" : "");
  element.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { element.hidden = true; }, error ? 8000 : 4000);
}

function askToken() {
  const dialog = $("token-dialog"), input = $("token-input");
  input.value = "";
  return new Promise((resolve) => {
    const done = (token) => {
      $("token-form").onsubmit = null;
      dialog.onclose = null;
      dialog.close();
      resolve(token);
    };
    $("token-form").onsubmit = (event) => {
      event.preventDefault();
      done(input.value.trim() || null);
    };
    dialog.onclose = () => resolve(null);
    dialog.showModal();
    input.focus();
  });
}

async function send(path, body) {
  // The token is asked once and kept for this tab; a refused one is asked again.
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token && state.tokenRequired) {
    token = await askToken();
    if (!token) return null;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = {"Content-Type": "application/json", [ADMIN_HEADER]: "1"};
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {method: "POST", headers, body: JSON.stringify(body || {}),
                                        credentials: "same-origin", cache: "no-store"});
    if (response.status !== 401 || attempt > 0) return response;
    sessionStorage.removeItem(TOKEN_KEY);
    token = await askToken();
    if (!token) return response;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  return null;
}

async function change(path, body, done) {
  try {
    const response = await send(path, body);
    if (response === null) return;
    if (!response.ok) {
      let detail = `${response.status}`;
      try {
        const problem = await response.json();
        detail = problem.detail || problem.title || detail;
      } catch (_) { /* not JSON */ }
      toast(`Refused: ${detail}`, true);
      return;
    }
    toast(done);
  } catch (error) {
    toast(`Could not reach the admin listener: ${error.message}`, true);
  }
  clearTimeout(poll.soon);
  poll.soon = setTimeout(refreshNow, 0);
}

async function refreshNow() {
  try {
    const response = await fetch(`dashboard.json?since=${state.history ? state.history.seq : 0}`, {cache: "no-store"});
    if (response.ok) {
      const data = await response.json();
      render(data);
      if (mergeHistory(data.history)) drawHistory();
    }
  } catch (_) { /* the next poll says so */ }
}

let pendingRamp = null;

function rampAction(route, action) {
  if (action === "rollback") {
    pendingRamp = route;
    $("confirm-ramp-title").textContent = `Roll back the ramp of ${route}?`;
    $("confirm-ramp-text").textContent = "Its legacy upstream takes all of its traffic at once; the ramp stops " +
      "until someone resumes it.";
    $("confirm-ramp-reason").value = "";
    $("confirm-ramp").showModal();
    return;
  }
  change(`ramps/${encodeURIComponent(route)}/${action}`, {reason: `${action} from the dashboard`},
         `Ramp of ${route}: ${action} done`);
}

function wire() {
  for (const dialog of document.querySelectorAll("dialog")) {
    for (const button of dialog.querySelectorAll("[data-close]")) button.addEventListener("click", () => dialog.close());
  }
  const reason = $("confirm-all-reason"), go = $("confirm-all-go");
  reason.addEventListener("input", () => { go.disabled = reason.value.trim() === ""; });
  $("rollback-all").addEventListener("click", () => {
    reason.value = "";
    go.disabled = true;
    $("confirm-all").showModal();
    reason.focus();
  });
  go.addEventListener("click", () => {
    const text = reason.value.trim();
    if (!text) return;
    $("confirm-all").close();
    change("rollback-all", {reason: text}, "Roll back all is active: every route goes to legacy");
  });
  $("lift").addEventListener("click", () => {
    change("rollback-all/lift", {reason: "lifted from the dashboard"}, "Roll back all lifted: the splits are back");
  });
  $("confirm-ramp-go").addEventListener("click", () => {
    const route = pendingRamp;
    $("confirm-ramp").close();
    if (!route) return;
    const why = $("confirm-ramp-reason").value.trim() || "rolled back from the dashboard";
    change(`ramps/${encodeURIComponent(route)}/rollback`, {reason: why}, `Ramp of ${route}: rolled back`);
  });
  $("filter").addEventListener("input", (event) => {
    state.filter = event.target.value.trim().toLowerCase();
    for (const [name, row] of state.rows) setClass(row.tr, "filtered", !matchesFilter(name));
  });
  // The countdowns move every second between polls.
  setInterval(() => {
    if (!state.data) return;
    for (const route of state.data.routes) {
      const row = state.rows.get(route.name);
      if (row && route.ramp) updateCountdown(row, route);
    }
  }, 1000);
}

wire();
poll();
