/* ml-dash viewer: page routing, header, dark mode, keyboard shortcuts (`?` shows them), and the data API of a
   static export (export-html embeds the data in data.js; there is no server then). */
(function () {
  "use strict";
  const M = window.MLD;
  const el = M.el;

  /* ---- static export: answer the API from the embedded data ---- */
  M.staticApi = async function (path, p) {
    const S = M.STATIC;
    const runs = [].concat(p.run || []);
    if (path === "runs") return { runs: S.runs, root: "(static export)" };
    if (path === "run") { if (!S.run[runs[0]]) throw new Error("not in this export"); return S.run[runs[0]]; }
    if (path === "runinfo") return { runs: runs.filter((r) => S.run[r]).map((r) => S.run[r]), notes: runs.filter((r) => !S.run[r]).map((r) => r + ": not in this export") };
    if (path === "logs") {
      const d = S.logs[runs[0]] || { rows: [], total: 0 };
      let rows = d.rows;
      if (p.level) rows = rows.filter((r) => p.level.split(",").includes(r.level));
      if (p.q) { const rx = p.regex ? new RegExp(p.q, "i") : null; rows = rows.filter((r) => (rx ? rx.test(r.message) : r.message.toLowerCase().includes(p.q.toLowerCase()))); }
      return { total: d.total, matched: rows.length, start: 0, rows, offset: 0, invalid: 0 };
    }
    if (path === "track") { const d = (S.tracks[runs[0]] || {})[p.topic]; if (!d) throw new Error("not in this export"); return d; }
    if (path === "series") {
      const parts = runs.map((r) => S.series[r + "\u0000" + p.stream + "\u0000" + p.field]).filter(Boolean);
      const xs = [...new Set(parts.flatMap((d) => d.x))].sort((a, b) => a - b);
      const pos = new Map(xs.map((x, i) => [x, i]));
      const xmin = p.xmin === null || p.xmin === undefined ? -Infinity : +p.xmin, xmax = p.xmax === null || p.xmax === undefined ? Infinity : +p.xmax;
      const keep = xs.map((x) => x >= xmin && x <= xmax);
      const out = { mode: parts.some((d) => d.mode === "buckets") ? "buckets" : "raw", x: xs.filter((_, i) => keep[i]), runs: [], q: null, approximate: parts.some((d) => d.mode === "buckets"), notes: [] };
      for (const d of parts) {
        const r = d.runs[0];
        const put = (k) => { const a = new Array(xs.length).fill(null); d.x.forEach((x, i) => { a[pos.get(x)] = (r[k] || r.y)[i]; }); return a.filter((_, i) => keep[i]); };
        out.runs.push(Object.assign({}, r, { y: put("y"), lo: put("lo"), hi: put("hi"), s: null }));
      }
      return out;
    }
    throw new Error("not available in a static export");
  };

  /* ---- theme ---- */
  const darkPref = () => {
    const v = localStorage.getItem("mldash-theme");
    if (v) return v === "dark";
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  };
  M.setDark = function (on) {
    document.body.classList.toggle("dark", on);
    try { localStorage.setItem("mldash-theme", on ? "dark" : "light"); } catch (e) { /* file:// */ }
    M.hooks.dark = on;
  };

  const SHORTCUTS = [["?", "show this help"], ["/", "focus the filter or the log search"], ["g", "go to the runs table"],
    ["j / k", "move down / up in the runs table"], ["Enter", "open the run under the cursor"], ["space", "select it for compare"],
    ["x", "next x axis"], ["s", "next smoothing"], ["l", "log y axis"], ["o", "ignore outliers in the y range"],
    ["b", "min/max band"], ["r", "reset zoom"], ["d", "dark mode"], ["Esc", "close this help"]];
  function help() {
    let h = document.getElementById("help");
    if (h) { h.remove(); return; }
    h = el("div", { id: "help", class: "help", role: "dialog" }, el("h2", { text: "Keyboard shortcuts" }),
      el("table", {}, el("tbody", {}, SHORTCUTS.map(([k, d]) => el("tr", {}, el("td", {}, el("kbd", { text: k })), el("td", { text: d }))))),
      el("button", { text: "close", onclick: () => h.remove() }));
    document.body.append(h);
  }
  function cycle(id) {
    const sel = document.getElementById(id);
    if (!sel) return;
    sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
    sel.dispatchEvent(new Event("change"));
  }
  function toggle(id) {
    const box = document.getElementById(id);
    if (!box) return;
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change"));
  }
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") { const h = document.getElementById("help"); if (h) h.remove(); if (t.blur) t.blur(); return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const k = e.key;
    if (k === "?") help();
    else if (k === "/") { e.preventDefault(); (M.focusSearch || M.focusLogSearch || (() => {}))(); }
    else if (k === "g") location.href = M.STATIC ? "index.html" : "/";
    else if (k === "x") cycle("x-axis");
    else if (k === "s") cycle("smoothing");
    else if (k === "l") toggle("log-y");
    else if (k === "o") toggle("outliers");
    else if (k === "b") toggle("band");
    else if (k === "r") M.zoom(null, null);
    else if (k === "d") M.setDark(!document.body.classList.contains("dark"));
    else if ((k === "j" || k === "k" || k === "Enter" || k === " ") && M.tableKeys && t === document.body) { e.preventDefault(); M.tableKeys(k); }
    else return;
  });

  function header() {
    const home = M.STATIC ? "index.html" : "/";
    return el("header", { class: "top" },
      el("a", { href: home, class: "brand", text: "ml-dash" }),
      el("a", { href: home, text: "runs" }),
      M.STATIC ? el("a", { href: "compare.html", text: "compare" }) : null,
      el("span", { class: "spacer" }),
      el("button", { id: "theme", title: "dark mode (d)", text: "◐", onclick: () => M.setDark(!document.body.classList.contains("dark")) }),
      el("button", { id: "help-button", title: "keyboard shortcuts (?)", text: "?", onclick: help }));
  }

  async function main() {
    M.setDark(darkPref());
    const app = M.clear(document.getElementById("app"));
    app.append(header());
    const root = el("main", {});
    app.append(root);
    const b = document.body.dataset;
    let page = b.page, arg = b.run || "";
    if (!page) {
      const path = location.pathname;
      if (path.startsWith("/run/")) { page = "run"; arg = path.slice(5).split("/").map(decodeURIComponent).join("/"); }
      else if (path === "/compare") page = "compare";
      else page = "runs";
    }
    M.hooks.page = page;
    // the page's first requests leave now; the page is built once the chart library (the script after this
    // one) has been evaluated
    if (page === "run") {  // (answered in the page's HTML when the server could do so at once)
      if (!M.given("mld-run", "run", { run: arg })) M.prefetch("run", { run: arg });
      if (!M.given("mld-logs", "logs", M.logsQuery(arg))) M.prefetch("logs", M.logsQuery(arg));
    } else if (page === "compare" && !M.STATIC) {
      const list = (M.state.runs || "").split(",").map((x) => x.trim()).filter(Boolean);
      if (list.length) M.prefetch("runinfo", { run: list });
    } else if (page === "runs") M.prefetch("runs", { metrics: M.state.metrics });
    if (!window.uPlot) await new Promise((res) => document.addEventListener("DOMContentLoaded", res, { once: true }));
    try {
      if (page === "run") { document.title = arg + " · ml-dash"; await M.pages.run(root, arg); }
      else if (page === "compare") {
        const list = M.STATIC ? M.STATIC.runs.map((r) => r.prefix) : (M.state.runs || "").split(",").map((x) => x.trim()).filter(Boolean);
        M.state.runs = list.join(",");
        document.title = "compare · ml-dash";
        await M.pages.compare(root, list);
      } else { document.title = "runs · ml-dash"; await M.pages.runs(root); }
    } catch (e) {
      root.append(M.note("Something went wrong: " + e.message, "warn"));
    }
    M.hooks.ready = true;
    performance.mark("page:ready");
  }
  main();
})();
