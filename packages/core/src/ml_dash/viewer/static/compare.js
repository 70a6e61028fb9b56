/* ml-dash viewer: compare runs (GET /compare?runs=a,b,...): every field overlaid, grouping by a param or tag
   (mean line, min/max band), the params that differ, and parallel coordinates. */
(function () {
  "use strict";
  const M = window.MLD;
  const el = M.el;

  M.pages = M.pages || {};
  M.pages.compare = async function (root, prefixes) {
    const s = M.state;
    root.append(el("div", { class: "page-head" }, el("h1", { text: "Compare " + prefixes.length + " runs" })));
    if (!prefixes.length) { root.append(M.note("Select runs in the runs table, or open /compare?runs=project/a,project/b.")); return; }
    let runs = [], notes = [];
    try { const d = await M.api("runinfo", { run: prefixes }); runs = d.runs; notes = d.notes; } catch (e) { notes.push(e.message); }
    for (const n of notes) root.append(M.note(n, "warn"));
    if (!runs.length) return;
    /* each run can be switched off and on (in groups too: a group's mean and band are of the runs that are on) */
    const off = new Set(s.off ? s.off.split(",").filter(Boolean) : []);
    const legend = el("div", { class: "legend", id: "compare-legend" }, runs.map((r, i) => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = M.color(i);
      const box = el("input", { type: "checkbox", class: "run-on", "data-prefix": r.prefix, checked: !off.has(r.prefix),
        title: "show this run (in its group's mean and band too)",
        onchange: (e) => {
          if (e.target.checked) off.delete(r.prefix); else off.add(r.prefix);
          s.off = runs.map((x) => x.prefix).filter((p) => off.has(p)).join(",");
          M.reloadCharts();
        } });
      return el("span", { class: "legend-item" }, box, sw, el("a", { href: M.runHref(r.prefix), text: r.prefix }));
    }));
    root.append(legend);
    const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
    const groupSel = el("select", { id: "group-by", title: "group runs by a param or tag: mean line and min/max band per group",
      onchange: (e) => { s.group = e.target.value; M.reloadCharts(); } },
    el("option", { value: "", text: "no grouping" }), el("option", { value: "tag", text: "group by tags", selected: s.group === "tag" }),
    paramKeys.map((k) => el("option", { value: k, text: "group by " + k, selected: s.group === k })));
    const streams = {};
    for (const r of runs) for (const [n, info] of Object.entries(r.streams)) {
      const t = (streams[n] = streams[n] || { fields: [], nonNumeric: [], invalid: 0, offset: 0 });
      for (const f of info.fields) if (!t.fields.includes(f)) t.fields.push(f);
    }
    const names = Object.keys(streams).sort();
    const xFields = [...new Set(names.flatMap((n) => streams[n].fields))];
    const controls = M.controls(xFields, () => M.reloadCharts());
    controls.append(groupSel);
    root.append(controls);
    const charts = el("div", { id: "charts" });
    root.append(charts);
    const byStream = M.chartSections(charts, streams, runs.map((r) => r.prefix), names);
    for (const r of runs) for (const n of Object.keys(r.streams)) {
      M.live.subscribe(r.prefix, "metrics", n, r.streams[n].offset, (type, d) => {
        if (type === "metrics") for (const c of byStream[n] || []) c.append(r.prefix, d.rows);
      });
    }
    const diffBody = M.section(root, "params", "Params that differ");
    const parallelBody = M.section(root, "parallel", "Parallel coordinates");
    // filled once the charts in view have asked for their data (they do after the first frame), not before
    await new Promise((res) => { requestAnimationFrame(() => requestAnimationFrame(res)); setTimeout(res, 100); });
    M.paramsSection(diffBody, runs, true);
    M.parallelSection(parallelBody, runs, names, streams);
  };

  /* one vertical axis per numeric param plus one chosen metric's last value; one polyline per run */
  M.parallelSection = function (body, runs, names, streams) {
    const numKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort()
      .filter((k) => runs.some((r) => typeof r.params[k] === "number") && new Set(runs.map((r) => r.params[k])).size > 1);
    const metricOpts = names.flatMap((n) => streams[n].fields.map((f) => n + "/" + f));
    const pick = el("select", { id: "parallel-metric" }, el("option", { value: "", text: "no metric axis" }), metricOpts.map((m) => el("option", { value: m, text: "metric: " + m })));
    const canvas = el("canvas", { id: "parallel-coords", width: 900, height: 320 });
    body.append(el("div", { class: "controls" }, pick), canvas);
    async function draw() {
      const axes = numKeys.map((k) => ({ label: k, vals: runs.map((r) => (typeof r.params[k] === "number" ? r.params[k] : null)) }));
      if (pick.value) {
        const [stream, ...rest] = pick.value.split("/");
        const field = rest.join("/");
        const streamName = names.find((n) => pick.value.startsWith(n + "/")) || stream;
        const fieldName = pick.value.slice(streamName.length + 1) || field;
        const d = await M.api("runs", { metrics: streamName + "/" + fieldName });
        const byPrefix = Object.fromEntries(d.runs.map((r) => [r.prefix, r]));
        axes.push({ label: pick.value + " (last)", vals: runs.map((r) => { const m = byPrefix[r.prefix] && byPrefix[r.prefix].metrics; const v = m && m[pick.value]; return v ? v.last : null; }) });
      }
      const ctx = canvas.getContext("2d");
      const W = canvas.width, H = canvas.height;
      ctx.clearRect(0, 0, W, H);
      const fg = getComputedStyle(document.body).getPropertyValue("--fg") || "#222";
      ctx.fillStyle = fg; ctx.strokeStyle = fg; ctx.font = "12px sans-serif";
      if (!axes.length) { ctx.fillText("No numeric param differs between these runs.", 20, 30); M.hooks.parallel = { axes: 0, lines: 0 }; return; }
      const xAt = (i) => 40 + (axes.length === 1 ? (W - 80) / 2 : (i * (W - 80)) / (axes.length - 1));
      const scales = axes.map((a) => {
        const v = a.vals.filter((x) => x !== null);
        const lo = Math.min(...v), hi = Math.max(...v);
        return (x) => (x === null ? null : H - 30 - ((x - lo) / (hi - lo || 1)) * (H - 60));
      });
      axes.forEach((a, i) => {
        ctx.beginPath(); ctx.moveTo(xAt(i), 30); ctx.lineTo(xAt(i), H - 30); ctx.stroke();
        ctx.fillText(a.label.slice(0, 30), Math.max(0, xAt(i) - 30), 18);
      });
      let lines = 0;
      runs.forEach((r, ri) => {
        ctx.strokeStyle = M.color(ri); ctx.lineWidth = 1.5; ctx.beginPath();
        let started = false;
        axes.forEach((a, i) => {
          const y = scales[i](a.vals[ri]);
          if (y === null) { started = false; return; }
          if (started) ctx.lineTo(xAt(i), y); else ctx.moveTo(xAt(i), y);
          started = true;
        });
        ctx.stroke(); lines++;
      });
      M.hooks.parallel = { axes: axes.length, lines };
      performance.mark("parallel:drawn");
    }
    pick.addEventListener("change", draw);
    draw();
  };
})();
