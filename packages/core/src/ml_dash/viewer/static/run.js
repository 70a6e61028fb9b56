/* ml-dash viewer: one run's page (GET /run/<prefix>): charts per stream (the `sys` stream in its own section),
   tracks, logs, files and params, live while the run writes. */
(function () {
  "use strict";
  const M = window.MLD;
  const el = M.el;

  M.section = function (root, id, title) {
    const body = el("div", { class: "section-body" });
    const sec = el("section", { id, class: "section" }, el("h2", { text: title }), body);
    root.append(sec);
    return body;
  };

  /* charts of every numeric field of every stream, grouped by stream; returns the charts by stream */
  M.chartSections = function (root, streams, runs, names) {
    const byStream = {};
    const order = names.filter((n) => n !== "sys").concat(names.includes("sys") ? ["sys"] : []);
    for (const name of order) {
      const info = streams[name];
      const body = M.section(root, "stream-" + name.replace(/[^\w-]/g, "_"), name === "sys" ? "System (sys)" : "Metrics: " + name);
      const grid = el("div", { class: "grid" });
      body.append(grid);
      if (info.nonNumeric && info.nonNumeric.length) body.append(M.note("not charted (not numeric): " + info.nonNumeric.join(", ")));
      if (info.invalid) body.append(M.note(info.invalid + " line(s) of this stream are not valid JSON and are skipped", "warn"));
      const only = M.state.only ? new RegExp(M.state.only, "i") : null;
      const fields = info.fields.filter((f) => !["step", "epoch"].includes(f) || info.fields.length === 1);
      if (!fields.length) grid.append(M.note("no numeric fields yet"));
      byStream[name] = fields.filter((f) => !only || only.test(name + "/" + f)).map((f) => new M.Chart(grid, { stream: name, field: f, runs }));
    }
    M.loadInView();
    return byStream;
  };

  M.pages = M.pages || {};
  M.pages.run = async function (root, prefix) {
    let info;
    try { info = await M.api("run", { run: prefix }); } catch (e) {
      root.append(el("h1", { text: prefix }), M.note("Cannot show this run: " + e.message, "warn"));
      return;
    }
    const s = M.state;
    const status = el("span", { class: "badge " + info.status.toLowerCase(), id: "run-status", text: info.status });
    root.append(el("div", { class: "page-head" }, el("h1", { text: info.prefix }), status,
      el("span", { class: "meta", text: [M.fmtTime(info.start), M.fmtDur(info.duration), info.tags.join(", ")].filter(Boolean).join(" · ") })));
    if (info.description) root.append(el("p", { class: "desc", text: info.description }));
    if (info.statusReason) root.append(M.note("status reason: " + info.statusReason));
    const names = Object.keys(info.streams);
    const xFields = [...new Set(names.flatMap((n) => info.streams[n].fields))];
    const nav = el("nav", { class: "toc" }, ...["charts", "tracks", "logs", "files", "params"].map((k) => el("a", { href: "#" + k, text: k })));
    root.append(nav, M.controls(xFields, () => M.reloadCharts()));
    const charts = el("div", { id: "charts" });
    root.append(charts);
    if (!names.length) charts.append(M.note("This run has no metrics yet."));
    const byStream = M.chartSections(charts, info.streams, [prefix], names);
    for (const name of names) {
      M.live.subscribe(prefix, "metrics", name, info.streams[name].offset, (type, d) => {
        if (type === "metrics") for (const c of byStream[name] || []) c.append(prefix, d.rows);
      });
    }
    M.live.subscribe(prefix, "status", "", 0, (type, d) => {
      if (type !== "status") return;
      status.textContent = d.status;
      status.className = "badge " + String(d.status).toLowerCase();
      if (d.status === "DELETED") root.prepend(M.note("This run was deleted while its page was open; what is shown is what was read before.", "warn"));
    });
    const bodies = ["tracks", "logs", "files", "params"].map((k) => M.section(root, k, k[0].toUpperCase() + k.slice(1)));
    // with charts: filled once the charts in view have asked for their data (after the first frame), not before
    if (names.length) await new Promise((res) => { requestAnimationFrame(() => requestAnimationFrame(res)); setTimeout(res, 100); });
    M.tracksSection(bodies[0], prefix, info.topics);
    M.logsSection(bodies[1], prefix, info.logs);
    M.filesSection(bodies[2], prefix, info.files);
    M.paramsSection(bodies[3], [info]);
  };

  /* ---- params ---- */
  M.paramsSection = function (body, runs, diffOnly) {
    const keys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
    if (!keys.length) { body.append(M.note("No params.")); return; }
    const differs = (k) => new Set(runs.map((r) => JSON.stringify(r.params[k]))).size > 1;
    const shownKeys = diffOnly ? keys.filter(differs) : keys;
    const t = el("table", { class: "params", id: diffOnly ? "params-diff" : "params-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "param" }), runs.map((r) => el("th", { text: r.prefix })))),
      el("tbody", {}, shownKeys.map((k) => el("tr", { class: differs(k) ? "differs" : "" }, el("td", { text: k }),
        runs.map((r) => el("td", { text: M.fmt(r.params[k]) }))))));
    if (diffOnly && !shownKeys.length) body.append(M.note("The selected runs have the same params."));
    body.append(t);
  };

  /* ---- logs: tail, level filter, search (substring or regex), jump to the line's time on the charts ---- */
  M.logsSection = function (body, prefix, meta) {
    const level = el("select", { id: "log-level" }, ["", "debug", "info", "warn", "error", "fatal"].map((l) => el("option", { value: l, text: l ? "level: " + l : "all levels" })));
    const search = el("input", { id: "log-search", type: "search", placeholder: "search logs", spellcheck: "false" });
    const rx = el("label", { class: "check" }, el("input", { type: "checkbox", id: "log-regex" }), "regex");
    const info = el("span", { class: "count", id: "log-count" });
    const more = el("button", { text: "earlier lines", id: "log-earlier" });
    const list = el("div", { class: "logs", id: "log-lines" });
    body.append(el("div", { class: "controls" }, level, search, rx, more, info), list);
    if (meta && meta.invalid) body.append(M.note(meta.invalid + " log line(s) are not valid JSON and are skipped", "warn"));
    let start = 0;
    let lastSeq = -1;
    list.title = "click a line: show its time on the charts";
    // a line: a copy of one template, its text set as textContent (never HTML)
    const proto = el("div", { class: "log" }, el("span", { class: "ts" }), el("span", { class: "lvl" }), el("span", { class: "msg" }));
    const line = (r) => {
      const n = proto.cloneNode(true);
      n.className = "log " + r.level;
      if (r.seq !== null && r.seq !== undefined) n.dataset.seq = r.seq;
      const [ts, lvl, msg] = n.children;
      ts.textContent = M.fmtTime(r.ts);
      lvl.textContent = r.level;
      msg.textContent = r.message + (r.truncated ? "  [… cut: " + r.truncated + " characters in all]" : "");
      return n;
    };
    list.addEventListener("click", (e) => {
      const row = e.target.closest(".log");
      if (!row || !row.__ts) return;
      M.jumpTo(row.__ts);
    });
    const filtered = () => level.value || search.value;
    async function load(earlier) {
      const q = M.logsQuery(prefix, level.value, search.value, rx.firstChild.checked);
      if (earlier) { q.start = Math.max(0, start - 200); q.limit = Math.max(1, start - q.start); }  // no line twice
      let d;
      try { d = await M.api("logs", q); } catch (e) { rest = null; M.clear(list).append(M.note(e.message, "warn")); return; }
      start = d.start;
      const lines = (part) => {
        const f = document.createDocumentFragment();
        for (const r of part) { const n = line(r); n.__ts = r.ts; f.append(n); }
        return f;
      };
      if (earlier) {
        if (rest) rest();
        list.prepend(lines(d.rows));
      } else {
        // the last screen first (the browser lays out 40 lines, not 200), the earlier lines in the next task
        const cut = Math.max(0, d.rows.length - 40);
        list.textContent = "";
        lastSeq = d.rows.length ? d.rows[d.rows.length - 1].seq : lastSeq;
        list.append(lines(d.rows.slice(cut)));
        const mine = (rest = cut ? () => {
          if (rest !== mine) return;  // shown already, or a newer load replaced these lines
          rest = null;
          const fromEnd = list.scrollHeight - list.scrollTop;
          list.prepend(lines(d.rows.slice(0, cut)));
          list.scrollTop = list.scrollHeight - fromEnd;
        } : null);
        if (mine) setTimeout(mine, 0);
      }
      info.textContent = d.matched + " of " + d.total + " lines";
      more.disabled = start === 0;
      if (!earlier) list.scrollTop = list.scrollHeight;
      performance.mark("logs:shown");
    }
    let rest = null;  // shows the earlier lines of the last load, while they wait
    let t = null;
    const reload = () => { clearTimeout(t); t = setTimeout(() => load(false), 150); };
    level.addEventListener("change", reload);
    search.addEventListener("input", reload);
    rx.addEventListener("change", reload);
    more.addEventListener("click", () => load(true));
    load(false);
    M.focusLogSearch = () => search.focus();
    M.live.subscribe(prefix, "logs", "", meta ? meta.offset : 0, (type, d) => {
      if (type !== "logs" || filtered()) return;
      const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
      for (const r of d.rows) {
        if (r.seq !== null && r.seq <= lastSeq) continue;
        lastSeq = r.seq;
        const n = line(r); n.__ts = r.ts; list.append(n);
      }
      if (atEnd) list.scrollTop = list.scrollHeight;
    });
  };

  /* the logs request of the run page (the page's first one is sent early, with these parameters) */
  M.logsQuery = function (prefix, level, q, regex) {
    return { run: prefix, level: level || "", q: q || "", regex: regex ? "1" : "", limit: 200 };
  };

  M.jumpTo = function (ts) {
    M.marker = ts;
    M.hooks.marker = ts;
    if (M.state.x !== "wall" && M.state.x !== "relative") {
      M.state.x = "wall";
      const sel = document.getElementById("x-axis");
      if (sel) sel.value = "wall";
    }
    M.reloadCharts();
    const c = document.getElementById("charts");
    if (c) c.scrollIntoView();
  };

  /* ---- tracks: a line chart per topic over time; a 2-D trajectory when the topic has x and y ---- */
  M.tracksSection = function (body, prefix, topics) {
    if (!topics.length) { body.append(M.note("No tracks.")); return; }
    for (const topic of topics) {
      const card = el("div", { class: "card track", "data-topic": topic }, el("div", { class: "card-title", text: topic }));
      body.append(card);
      M.api("track", { run: prefix, topic }).then((d) => {
        const cols = d.columns;
        const ts = cols.timestamp || [];
        const fields = d.numeric;
        if (!ts.length || !fields.length) { card.append(M.note("no numeric entries")); return; }
        const plot = el("div", { class: "plot" });
        card.append(plot);
        const series = [{ label: "time" }].concat(fields.map((f, i) => ({ label: f, stroke: M.color(i), width: 1, spanGaps: true })));
        const t0 = ts.find((v) => v !== null) || 0;
        const xs = ts.map((v) => (v === null ? null : v - t0));
        const u = new uPlot({ width: Math.max(300, plot.clientWidth || 600), height: 200, series, scales: { x: { time: false } },
          hooks: { draw: [() => performance.mark("track:" + topic + ":drawn")] } },
        [xs].concat(fields.map((f) => cols[f])), plot);
        card.__u = u;
        if (cols.x && cols.y) card.append(M.trajectory(cols.x, cols.y, topic));
        if (d.invalid) card.append(M.note(d.invalid + " line(s) skipped (not valid JSON)", "warn"));
      }).catch((e) => card.append(M.note(e.message, "warn")));
    }
  };
  M.trajectory = function (xs, ys, topic) {
    const c = el("canvas", { class: "trajectory", width: 320, height: 320, "data-topic": topic, title: "2-D trajectory (x, y)" });
    const ctx = c.getContext("2d");
    const pts = xs.map((x, i) => [x, ys[i]]).filter(([x, y]) => x !== null && y !== null);
    if (!pts.length) return c;
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    const span = Math.max(x1 - x0, y1 - y0) || 1;
    const px = (x) => 10 + ((x - x0) / span) * 300, py = (y) => 310 - ((y - y0) / span) * 300;
    ctx.strokeStyle = M.color(0); ctx.lineWidth = 1.5; ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
    ctx.fillStyle = "#2ca02c"; ctx.fillRect(px(pts[0][0]) - 3, py(pts[0][1]) - 3, 6, 6);
    ctx.fillStyle = "#d62728"; ctx.fillRect(px(pts[pts.length - 1][0]) - 3, py(pts[pts.length - 1][1]) - 3, 6, 6);
    M.hooks.trajectories = (M.hooks.trajectories || 0) + 1;
    return c;
  };

  /* ---- files: a browser with download, an image gallery with a step slider, text/JSON preview ---- */
  const isImage = (f) => /^image\/(png|jpeg|gif|webp|bmp)$/.test(f.contentType || "") || /\.(png|jpe?g|gif|webp|bmp)$/i.test(f.filename);
  const isText = (f) => /^(text\/|application\/json)/.test(f.contentType || "") || /\.(txt|json|jsonl|csv|log|md|yaml|yml|toml|py|cfg|ini)$/i.test(f.filename);
  M.filesSection = async function (body, prefix, count) {
    if (M.STATIC) { body.append(M.note("Files are not part of a static export.")); return; }
    if (!count) { body.append(M.note("No files.")); return; }
    let d;
    try { d = await M.api("files", { run: prefix }); } catch (e) { body.append(M.note(e.message, "warn")); return; }
    const files = d.files;
    const images = files.filter(isImage);
    const stepOf = (f) => (f.metadata && typeof f.metadata.step === "number" ? f.metadata.step : (/(\d+)(?!.*\d)/.exec(f.filename) || [])[1]);
    if (images.length) {
      images.sort((a, b) => (+stepOf(a) || 0) - (+stepOf(b) || 0) || String(a.createdAt).localeCompare(String(b.createdAt)));
      const img = el("img", { id: "gallery-image", alt: "" });
      const label = el("span", { class: "count", id: "gallery-label" });
      const slider = el("input", { type: "range", id: "gallery-step", min: 0, max: images.length - 1, value: images.length - 1 });
      const show = () => {
        const f = images[+slider.value];
        img.src = M.fileHref(prefix, f.id);
        img.alt = f.filename;
        label.textContent = (f.path || "") + "/" + f.filename + (stepOf(f) !== undefined ? "  step " + stepOf(f) : "") + "  (" + (+slider.value + 1) + " of " + images.length + ")";
      };
      slider.addEventListener("input", show);
      body.append(el("div", { class: "card gallery" }, el("div", { class: "card-title", text: "Images" }), el("div", { class: "controls" }, slider, label), img));
      show();
    }
    const preview = el("pre", { class: "preview", id: "file-preview" });
    const rows = files.map((f) => el("tr", {},
      el("td", { text: (f.path || "/").replace(/\/?$/, "/") + f.filename }),
      el("td", { text: M.fmtBytes(f.sizeBytes) }), el("td", { text: f.contentType || "" }),
      el("td", {}, el("a", { href: M.fileHref(prefix, f.id, true), download: f.filename, text: "download" }),
        isText(f) ? el("button", { class: "tool", text: "preview", onclick: async () => {
          try {
            const p = await M.api("file", { run: prefix, id: f.id, preview: "1" });
            let text = p.text;
            if (/json$/i.test(f.filename) && !p.truncated) { try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* as is */ } }
            preview.textContent = text + (p.truncated ? "\n[… preview cut at 256 KB]" : "");
          } catch (e) { preview.textContent = e.message; }
        } }) : null)));
    body.append(el("table", { class: "files", id: "files-table" }, el("thead", {}, el("tr", {}, ["file", "size", "type", ""].map((h) => el("th", { text: h })))), el("tbody", {}, rows)), preview);
  };
})();
