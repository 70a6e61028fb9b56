/* ml-dash viewer: shared helpers (classic script: also works from file:// in a static export).
   Everything from a .dash folder is untrusted: it only ever reaches the page as textContent or attribute
   values, never as HTML. */
(function () {
  "use strict";
  const M = (window.MLD = window.MLD || {});
  const hooks = (window.__mlDash = window.__mlDash || { charts: [] });
  hooks.charts = hooks.charts || [];
  M.hooks = hooks;
  M.STATIC = window.__mlDashStatic || null;

  M.el = function (tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "value") e.value = v;
      else if (k === "checked") e.checked = !!v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  };
  M.clear = function (node) { while (node.firstChild) node.removeChild(node.firstChild); return node; };

  M.fmt = function (v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (!isFinite(v)) return String(v);
      if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : String(+v.toPrecision(6));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  };
  M.fmtTime = function (t) {
    if (!t && t !== 0) return "";
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  };
  M.fmtDur = function (s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  };
  M.fmtBytes = function (n) {
    if (n === null || n === undefined) return "";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  };

  /* ---- the data layer: the server's /api/view, or the data embedded by export-html ---- */
  const apiUrl = function (path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
      else qs.append(k, v);
    }
    return "/api/view/" + path + "?" + qs.toString();
  };
  const early = new Map();  // url -> the response of a request started before the page was built
  /* start a request the page is about to make (while the browser still evaluates the chart library); the
     page's own M.api call with the same parameters then takes its answer */
  M.prefetch = function (path, params) {
    if (M.STATIC) return;
    const url = apiUrl(path, params);
    const r = fetch(url, { credentials: "same-origin" });
    r.catch(() => {});  // (a failure is reported to the call that takes it)
    early.set(url, r);
  };
  const given = new Map();  // url -> an answer the server put into the page's HTML (taken once)
  /* take the answer embedded in the page as the JSON data block `id` for this request; false when there is none
     or it does not parse (the page then asks the server) */
  M.given = function (id, path, params) {
    const node = document.getElementById(id);
    if (!node || M.STATIC) return false;
    try { given.set(apiUrl(path, params), JSON.parse(node.textContent)); } catch (e) { return false; } finally { node.remove(); }
    return true;
  };
  M.api = async function (path, params) {
    if (M.STATIC) return M.staticApi(path, params || {});
    const url = apiUrl(path, params);
    if (given.has(url)) { const body = given.get(url); given.delete(url); return body; }
    const pre = early.get(url);
    early.delete(url);
    const r = await (pre || fetch(url, { credentials: "same-origin" }));
    let body;
    try { body = await r.json(); } catch (e) { body = { detail: "the server answered " + r.status + " without JSON" }; }
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
    if (!r.ok) { const err = new Error(body.detail || "HTTP " + r.status); err.status = r.status; throw err; }
    return body;
  };

  M.runHref = function (prefix) {
    if (M.STATIC) return "run-" + M.STATIC.index[prefix] + ".html";
    return "/run/" + prefix.split("/").map(encodeURIComponent).join("/");
  };
  M.compareHref = function (prefixes) {
    if (M.STATIC) return "compare.html";
    return "/compare?runs=" + prefixes.map(encodeURIComponent).join(",");
  };
  M.fileHref = function (prefix, id, download) {
    return "/api/view/file?" + new URLSearchParams({ run: prefix, id: String(id), download: download ? "1" : "" }).toString();
  };

  /* ---- view state kept in the URL ---- */
  const qs = new URLSearchParams(location.search);
  M.state = {
    x: qs.get("x") || "step",
    smooth: qs.get("smooth") || "none",
    log: qs.get("log") === "1",
    logx: qs.get("logx") === "1",
    off: qs.get("off") || "",
    outliers: qs.get("outliers") === "1",
    band: qs.get("band") !== "0",
    xmin: qs.get("xmin") !== null ? +qs.get("xmin") : null,
    xmax: qs.get("xmax") !== null ? +qs.get("xmax") : null,
    group: qs.get("group") || "",
    filter: qs.get("filter") || "",
    sort: qs.get("sort") || "",
    metrics: qs.get("metrics") || "",
    only: qs.get("only") || "",
    runs: qs.get("runs") || "",
  };
  M.saveState = function () {
    if (M.STATIC) return;
    const s = M.state;
    const q = new URLSearchParams();
    if (s.runs) q.set("runs", s.runs);
    if (s.x !== "step") q.set("x", s.x);
    if (s.smooth !== "none") q.set("smooth", s.smooth);
    if (s.log) q.set("log", "1");
    if (s.logx) q.set("logx", "1");
    if (s.outliers) q.set("outliers", "1");
    if (!s.band) q.set("band", "0");
    if (s.xmin !== null) q.set("xmin", s.xmin);
    if (s.xmax !== null) q.set("xmax", s.xmax);
    for (const k of ["group", "filter", "sort", "metrics", "only", "off"]) if (s[k]) q.set(k, s[k]);
    const str = q.toString().replace(/%2C/g, ",").replace(/%2F/g, "/");
    history.replaceState(null, "", location.pathname + (str ? "?" + str : ""));
  };

  /* ---- smoothing on the client: only for rows that arrive live and for static exports ---- */
  M.smoothSpec = function (spec) {
    if (!spec || spec === "none") return null;
    const [kind, arg] = spec.split(":");
    return { kind, arg: +arg };
  };
  M.smoothArray = function (ys, spec) {
    const sp = M.smoothSpec(spec);
    if (!sp) return null;
    const out = new Array(ys.length).fill(null);
    if (sp.kind === "ema") {
      let acc = 0, n = 0;
      for (let i = 0; i < ys.length; i++) {
        const v = ys[i];
        if (v === null || !isFinite(v)) continue;
        acc = acc * sp.arg + (1 - sp.arg) * v; n++;
        out[i] = acc / (1 - Math.pow(sp.arg, n));
      }
    } else {
      const win = [];
      let sum = 0;
      for (let i = 0; i < ys.length; i++) {
        const v = ys[i];
        if (v === null || !isFinite(v)) continue;
        win.push(v); sum += v;
        if (win.length > sp.arg) sum -= win.shift();
        out[i] = sum / win.length;
      }
    }
    return out;
  };

  /* ---- one live stream per tab, carrying every subscription of the page ---- */
  const live = { subs: [], handlers: [], es: null, timer: null };
  M.live = live;
  live.subscribe = function (prefix, kind, name, offset, handler) {
    if (M.STATIC) return;
    live.subs.push([prefix, kind, name || "", offset || 0]);
    live.handlers.push(handler);
    clearTimeout(live.timer);
    live.timer = setTimeout(live.start, 50);
  };
  live.start = function () {
    if (live.es) live.es.close();
    if (!live.subs.length) return;
    const url = "/api/view/live?subs=" + encodeURIComponent(JSON.stringify(live.subs));
    const es = (live.es = new EventSource(url));
    hooks.live = { connected: false, events: 0, subs: live.subs.length };
    const on = (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      hooks.live.events++;
      // remember how far we are, so a restart with more subscriptions resumes instead of replaying
      if (ev.lastEventId) ev.lastEventId.split(",").forEach((o, i) => { if (live.subs[i]) live.subs[i][3] = +o; });
      const h = live.handlers[d.k];
      if (h) h(ev.type, d);
    };
    ["metrics", "logs", "status"].forEach((t) => es.addEventListener(t, on));
    es.onopen = () => { hooks.live.connected = true; };
    es.onerror = () => { hooks.live.connected = false; };
  };

  /* ---- small UI pieces ---- */
  M.note = function (text, cls) { return M.el("p", { class: "note " + (cls || ""), text }); };
  M.download = function (name, blob) {
    const a = M.el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  };
  M.palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  M.color = function (i) {
    if (i < M.palette.length) return M.palette[i];
    return `hsl(${(i * 137.508) % 360}, 65%, 50%)`;
  };
  M.alpha = function (c, a) {
    if (c.startsWith("#")) {
      const n = parseInt(c.slice(1), 16);
      return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${a})`;
    }
    return c.replace("hsl(", "hsla(").replace(")", `, ${a})`);
  };
})();
