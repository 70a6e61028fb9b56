/* ml-dash viewer: the runs table (GET /). Virtualised: only the rows in view exist in the DOM, so 10,000 runs
   scroll and filter smoothly. Filter box: `lr<0.01 tag:ablation status:RUNNING`, other words are regular
   expressions (or substrings when not valid) on the run name. */
(function () {
  "use strict";
  const M = window.MLD;
  const el = M.el;
  const ROW = 28;

  /* the filter language: terms separated by spaces, all must hold */
  M.parseFilter = function (text) {
    const terms = [];
    for (const raw of (text || "").trim().split(/\s+/)) {
      if (!raw) continue;
      let m;
      if ((m = /^tag:(.+)$/i.exec(raw))) terms.push({ kind: "tag", value: m[1] });
      else if ((m = /^status:(.+)$/i.exec(raw))) terms.push({ kind: "status", value: m[1].toUpperCase() });
      else if ((m = /^([^<>=!]+)(<=|>=|!=|=|<|>)(.*)$/.exec(raw))) terms.push({ kind: "cmp", key: m[1], op: m[2], value: m[3] });
      else {
        let rx;
        try { rx = new RegExp(raw, "i"); } catch (e) { rx = null; }
        terms.push({ kind: "name", rx, value: raw.toLowerCase() });
      }
    }
    return terms;
  };
  const valueOf = (run, key) => {
    if (key in run.params) return run.params[key];
    if (run.metrics && key in run.metrics) return run.metrics[key].last;
    if (key === "duration") return run.duration;
    if (key === "status") return run.status;
    return undefined;
  };
  /* lower-cased name and tags, computed once per run (a keystroke filters 10,000 runs) */
  const lowerTags = (run) => run.__tags || (run.__tags = run.tags.map((x) => x.toLowerCase()));
  const lowerName = (run) => run.__name || (run.__name = run.prefix.toLowerCase());
  M.matchRun = function (run, terms) {
    for (const t of terms) {
      if (t.kind === "tag") { if (!lowerTags(run).includes(t.value.toLowerCase())) return false; }
      else if (t.kind === "status") { if (run.status !== t.value) return false; }
      else if (t.kind === "name") { if (t.rx ? !t.rx.test(run.prefix) : !lowerName(run).includes(t.value)) return false; }
      else {
        const v = valueOf(run, t.key);
        if (v === undefined || v === null) return false;
        const num = +t.value;
        const isNum = typeof v === "number" && t.value !== "" && !isNaN(num);
        const a = isNum ? v : String(v), b = isNum ? num : t.value;
        const ok = { "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b, "=": a == b, "!=": a != b }[t.op]; // eslint-disable-line eqeqeq
        if (!ok) return false;
      }
    }
    return true;
  };

  M.pages = M.pages || {};
  M.pages.runs = async function (root) {
    const s = M.state;
    const head = el("div", { class: "page-head" }, el("h1", { text: "Runs" }));
    const filter = el("input", { id: "filter", type: "search", value: s.filter, placeholder: "filter: lr<0.01 tag:ablation status:RUNNING name-regex   ( / )", spellcheck: "false" });
    const metricsBox = el("input", { id: "metric-cols", type: "text", value: s.metrics, placeholder: "metric columns: train/loss,val/acc", spellcheck: "false" });
    const count = el("span", { id: "run-count", class: "count" });
    const compareBtn = el("button", { id: "compare", text: "compare selected", disabled: true });
    const tools = el("div", { class: "controls" }, filter, metricsBox, compareBtn, count);
    const table = el("div", { class: "vtable", id: "runs-table", tabindex: "0" });
    root.append(head, tools, table);
    let data;
    try { data = await M.api("runs", { metrics: s.metrics }); } catch (e) { root.append(M.note("Cannot list runs: " + e.message, "warn")); return; }
    let runs = data.runs;
    if (!runs.length) { table.append(M.note("No runs under " + data.root + " yet. Runs written with Experiment(prefix, dash_root=...) appear here.")); count.textContent = "0 runs"; return; }
    const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
    const metricKeys = s.metrics ? s.metrics.split(",").filter(Boolean) : [];
    const cols = [
      { key: "_sel", label: "", w: 32 },
      { key: "prefix", label: "run", w: 260, get: (r) => r.prefix },
      { key: "status", label: "status", w: 100, get: (r) => r.status },
      { key: "start", label: "start", w: 150, get: (r) => r.start, fmt: M.fmtTime },
      { key: "duration", label: "duration", w: 100, get: (r) => r.duration, fmt: M.fmtDur },
      { key: "tags", label: "tags", w: 120, get: (r) => r.tags.join(", ") },
      ...metricKeys.flatMap((m) => ["last", "min", "max"].map((k) => ({ key: m + ":" + k, label: m + " " + k, w: 110, get: (r) => (r.metrics && r.metrics[m] ? r.metrics[m][k] : null), fmt: M.fmt }))),
      ...paramKeys.map((k) => ({ key: "p:" + k, label: k, w: 110, get: (r) => r.params[k], fmt: M.fmt })),
    ];
    const selected = new Set((s.runs || "").split(",").filter(Boolean));
    let shown = runs;
    let cursor = -1;
    const width = cols.reduce((a, c) => a + c.w, 0);
    const header = el("div", { class: "vrow vhead", style: null });
    header.style.width = width + "px";
    for (const c of cols) {
      const cell = el("div", { class: "vcell", title: c.key === "_sel" ? "select for compare" : "sort by " + c.label, text: c.label, onclick: () => sortBy(c) });
      cell.style.width = c.w + "px";
      header.append(cell);
    }
    const body = el("div", { class: "vbody" });
    const spacer = el("div", { class: "vspacer" });
    const rowsBox = el("div", { class: "vrows" });
    body.append(spacer, rowsBox);
    spacer.style.width = width + "px";
    table.append(header, body);

    function splitSort(v) { const i = v.lastIndexOf(":"); return [v.slice(0, i), v.slice(i + 1)]; }
    function sortBy(c) {
      if (!c.get) return;
      const [k, dir] = splitSort(s.sort);
      const asc = k === c.key ? dir !== "asc" : true;
      s.sort = c.key + ":" + (asc ? "asc" : "desc");
      apply();
    }
    function apply() {
      const terms = M.parseFilter(s.filter);
      shown = terms.length ? runs.filter((r) => M.matchRun(r, terms)) : runs.slice();
      if (s.sort) {
        const [k, dir] = splitSort(s.sort);
        const c = cols.find((x) => x.key === k);
        if (c && c.get) {
          const sign = dir === "desc" ? -1 : 1;
          shown.sort((a, b) => {
            const va = c.get(a), vb = c.get(b);
            if (va === vb) return 0;
            if (va === undefined || va === null) return 1;
            if (vb === undefined || vb === null) return -1;
            return (typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb))) * sign;
          });
        }
      }
      count.textContent = shown.length + " of " + runs.length + " runs";
      M.hooks.runsShown = shown.length;
      spacer.style.height = shown.length * ROW + "px";
      M.saveState();
      render();
      performance.mark("runs:rendered");
    }
    function render() {
      const top = body.scrollTop;
      const h = body.clientHeight || 600;
      const first = Math.max(0, Math.floor(top / ROW) - 5);
      const last = Math.min(shown.length, Math.ceil((top + h) / ROW) + 5);
      M.clear(rowsBox);
      rowsBox.style.transform = "translateY(" + first * ROW + "px)";
      for (let i = first; i < last; i++) {
        const r = shown[i];
        const row = el("div", { class: "vrow" + (i === cursor ? " cursor" : ""), "data-prefix": r.prefix });
        row.style.width = width + "px";
        for (const c of cols) {
          let cell;
          if (c.key === "_sel") {
            cell = el("div", { class: "vcell" }, el("input", { type: "checkbox", class: "sel", checked: selected.has(r.prefix), title: "select for compare", onchange: (e) => { if (e.target.checked) selected.add(r.prefix); else selected.delete(r.prefix); syncSel(); } }));
          } else if (c.key === "prefix") {
            cell = el("div", { class: "vcell" }, el("a", { href: M.runHref(r.prefix), text: r.prefix, class: "run-link" }));
          } else if (c.key === "status") {
            cell = el("div", { class: "vcell" }, el("span", { class: "badge " + String(r.status).toLowerCase(), text: r.status }));
          } else {
            const v = c.get(r);
            const t = c.fmt ? c.fmt(v) : v === null || v === undefined ? "" : String(v);
            cell = el("div", { class: "vcell", text: t, title: t });
          }
          cell.style.width = c.w + "px";
          row.append(cell);
        }
        rowsBox.append(row);
      }
    }
    function syncSel() {
      compareBtn.disabled = selected.size < 1;
      compareBtn.textContent = "compare selected (" + selected.size + ")";
      s.runs = [...selected].join(",");
      M.saveState();
    }
    compareBtn.addEventListener("click", () => { location.href = M.compareHref([...selected]); });
    body.addEventListener("scroll", () => requestAnimationFrame(render), { passive: true });
    filter.addEventListener("input", () => { s.filter = filter.value; apply(); });
    metricsBox.addEventListener("change", () => { s.metrics = metricsBox.value.replace(/\s+/g, ""); M.saveState(); location.reload(); });
    table.addEventListener("keydown", (e) => {
      if (e.key === "j" || e.key === "ArrowDown") cursor = Math.min(shown.length - 1, cursor + 1);
      else if (e.key === "k" || e.key === "ArrowUp") cursor = Math.max(0, cursor - 1);
      else if (e.key === "Enter" && shown[cursor]) { location.href = M.runHref(shown[cursor].prefix); return; }
      else if (e.key === " " && shown[cursor]) { const p = shown[cursor].prefix; if (selected.has(p)) selected.delete(p); else selected.add(p); syncSel(); }
      else return;
      e.preventDefault();
      if (cursor * ROW < body.scrollTop) body.scrollTop = cursor * ROW;
      if ((cursor + 1) * ROW > body.scrollTop + body.clientHeight) body.scrollTop = (cursor + 1) * ROW - body.clientHeight;
      render();
    });
    M.focusSearch = () => filter.focus();
    M.tableKeys = (k) => table.dispatchEvent(new KeyboardEvent("keydown", { key: k }));
    syncSel();
    apply();
    // statuses change while runs are live: refresh them over the tab's one live stream
    runs.filter((r) => r.status === "RUNNING").slice(0, 500).forEach((r) => M.live.subscribe(r.prefix, "status", "", 0, (type, d) => {
      if (type === "status" && d.status) { r.status = d.status; render(); }
    }));
  };
})();
