/* ml-dash viewer: one chart card (uPlot, canvas 2D). Data comes reduced from the server: per run the last value
   per x bucket (the line), the min/max per bucket (the band, on by default) and the smoothed line computed on
   full-resolution data. Selecting a range zooms every chart of the page and re-queries at full detail. */
(function () {
  "use strict";
  const M = window.MLD;
  const el = M.el;
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const c = e.target.__chart;
      if (!c) continue;
      c.visible = e.isIntersecting;
      if (e.boundingClientRect.width) c.cardWidth = e.boundingClientRect.width;
      if (e.isIntersecting && !c.loaded && !c.loading) c.load();
    }
  }, { rootMargin: "200px" });
  M.allCharts = [];

  /* a CSS variable of the theme, read once per theme (reading a computed style after the previous chart was
     inserted would make the browser recompute the whole page's style, once per chart) */
  const themeVars = {};
  M.cssVar = function (name, fallback) {
    const k = (document.body.classList.contains("dark") ? "dark:" : "light:") + name;
    if (!(k in themeVars)) themeVars[k] = getComputedStyle(document.body).getPropertyValue(name) || fallback;
    return themeVars[k];
  };

  /* a chart's data; the charts that ask in the same tick (those that came into view together) share one request
     per stream and options */
  const batches = new Map();
  M.series = function (params) {
    if (M.STATIC) return M.api("series", params);
    const first = given(params);
    if (first) return first.error ? Promise.reject(new Error(first.error)) : Promise.resolve(first);
    const { field, ...rest } = params;
    const key = JSON.stringify(rest);
    let b = batches.get(key);
    if (!b) {
      b = { rest, fields: [], waiters: [] };
      batches.set(key, b);
      queueMicrotask(() => { batches.delete(key); flush(b); });  // every chart that asks in this task
    }
    return new Promise((resolve, reject) => { b.fields.push(field); b.waiters.push([resolve, reject]); });
  };
  /* the first screen's data, answered in the run page's HTML (the page's default view of one run at `n` buckets,
     read after the run's info): the data block `mld-series` lists its charts, `mld-series-<i>` holds the i-th
     one's answer, parsed when that chart asks for that view at no more buckets than `n`, once; any other
     question goes to the server */
  let first;
  function given(p) {
    if (first === undefined) {
      const node = document.getElementById("mld-series");
      first = null;
      if (node) { try { first = JSON.parse(node.textContent); } catch (e) { /* ask the server */ } node.remove(); }
    }
    const f = first;
    if (!f || p.run.length !== 1 || p.run[0] !== f.run || p.x !== "step" || p.n > f.n || p.smooth || p.group || p.xlog ||
      p.wait || (p.xmin !== null && p.xmin !== undefined) || (p.xmax !== null && p.xmax !== undefined)) return null;
    const i = f.charts.findIndex((c) => c && c[0] === p.stream && c[1] === p.field);
    if (i < 0) return null;
    f.charts[i] = null;
    const node = document.getElementById("mld-series-" + i);
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; } finally { node.remove(); }
  }
  async function flush(b) {
    for (let i = 0; i < b.fields.length; i += 50) {
      const fields = b.fields.slice(i, i + 50), waiters = b.waiters.slice(i, i + 50);
      try {
        if (fields.length === 1) { waiters[0][0](await M.api("series", { ...b.rest, field: fields[0] })); continue; }
        const d = await M.api("multiseries", { ...b.rest, field: fields });
        // the charts drawn in tasks of at most ~40 ms: no long task for the lot, and no frame rendered between
        // two charts of the first screen
        let t0 = performance.now();
        for (let k = 0; k < fields.length; k++) {
          const r = d.series[k];
          if (performance.now() - t0 > 40) { await new Promise((res) => setTimeout(res, 0)); t0 = performance.now(); }
          if (r.error) waiters[k][1](new Error(r.error)); else waiters[k][0](r);
          for (let i = 0; i < 3; i++) await null;  // the chart draws (its await resumes) before the clock is read
        }
      } catch (e) {
        for (const w of waiters) w[1](e);
      }
    }
  }

  /* the charts on (or within 200 px of) the screen ask for their data now, without waiting for the observer's
     first report (which comes only after the browser has rendered a frame of the whole page) */
  M.loadInView = function () {
    const below = innerHeight + 200;
    const near = [];
    for (const c of M.allCharts) {
      if (c.loaded || c.loading) continue;
      const r = c.card.getBoundingClientRect();  // one layout: nothing changes until every card was read
      if (r.top > below) break;  // cards come in page order
      if (r.bottom > -200 && r.width) { near.push(c); c.cardWidth = r.width; }
    }
    for (const c of near) { c.visible = true; c.load(); }
  };

  M.resetCharts = function () {
    for (const c of M.allCharts) c.destroy();
    M.allCharts = [];
    M.hooks.charts.length = 0;
  };
  M.reloadCharts = function () {
    M.saveState();
    for (const c of M.allCharts) { c.loaded = false; if (c.visible) c.load(); }
  };

  class Chart {
    constructor(parent, opts) {
      this.opts = opts; // {stream, field, runs, title, xLabel}
      this.id = opts.stream + "/" + opts.field;
      // a placeholder of the card's height: its title, buttons and plot are made when it first comes near the
      // viewport (a run with 500 metrics builds the few cards on screen, not 500)
      this.card = el("div", { class: "card chart", "data-chart": this.id });
      this.card.__chart = this;
      this.plot = null;
      parent.append(this.card);
      this.loaded = false;
      this.loading = false;
      this.u = null;
      this.entry = { id: this.id, runs: opts.runs.slice(), points: 0, approximate: false, yMin: null, yMax: null, lastTs: null };
      M.allCharts.push(this);
      observer.observe(this.card);
    }

    /* the card's content, made once */
    fill() {
      if (this.plot) return;
      this.title = el("div", { class: "card-title" },
        el("span", { class: "chart-name", text: this.opts.title || this.id }),
        el("span", { class: "chart-tools" },
          el("button", { class: "tool", title: "download the chart's data as CSV", text: "CSV", onclick: () => this.csv() }),
          el("button", { class: "tool", title: "download the chart as PNG", text: "PNG", onclick: () => this.png() })));
      this.status = el("div", { class: "chart-note" });
      this.plot = el("div", { class: "plot" });
      this.card.append(this.title, this.plot, this.status);
    }

    destroy() {
      observer.unobserve(this.card);
      if (this.u) this.u.destroy();
      this.u = null;
    }

    async load(waitExact) {
      this.fill();
      this.loading = true;
      const seq = (this.seq = (this.seq || 0) + 1);  // a later load (zoom, options) wins over one still waiting
      const s = M.state;
      // the plot's width: the card's (as last measured, without a layout of the whole page) less its padding
      // and border
      const width = (this.width = Math.max(200, (this.cardWidth ? this.cardWidth - 18 : this.plot.clientWidth) || 600));
      const off = new Set(s.off ? s.off.split(",") : []);
      const runs = this.opts.runs.filter((p) => !off.has(p));  // runs switched off in the compare legend
      // buckets of one pixel; of two when more than 20 runs overlay (every min and max still drawn, at half the
      // points to send and draw)
      try {
        if (!runs.length) throw new Error("every run of this chart is switched off in the legend");
        const data = await M.series({
          run: runs, stream: this.opts.stream, field: this.opts.field, x: this.opts.x || s.x,
          n: Math.round(runs.length > 20 ? width / 2 : width), xmin: s.xmin, xmax: s.xmax, smooth: s.smooth === "none" ? "" : s.smooth,
          group: this.opts.noGroup ? "" : s.group, xlog: s.logx ? "1" : "",
          wait: waitExact ? 20 : "",  // after a preview: the server answers once its exact read is done
        });
        if (seq !== this.seq) return;
        this.build(data);
        this.loaded = true;
      } catch (e) {
        if (seq === this.seq) this.fail(e);
      } finally {
        if (seq === this.seq) this.loading = false;
      }
    }

    fail(e) {
      if (this.u) this.u.destroy();
      this.u = null;
      this.entry.runs = [];
      M.clear(this.plot);
      this.status.textContent = "Cannot show this chart: " + e.message;
      this.status.className = "chart-note warn";
      this.loaded = true;
    }

    build(data) {
      const s = M.state;
      this.data = data;
      const runs = data.runs;
      const logY = s.log;
      const clean = (a) => (logY ? a.map((v) => (v !== null && v > 0 ? v : null)) : a);
      const xs = data.x.slice();
      const cols = [xs];
      const series = [{ label: this.opts.xLabel || s.x }];
      const bands = [];
      this.map = [];
      const showBand = s.band && data.mode === "buckets";
      // many runs: each band filled by hand under the lines (uPlot clips every band with paths of its own: two
      // thirds of the draw at 100 runs); few runs: uPlot's bands, their edges drawn as faint lines
      const byHand = runs.length > 20;
      runs.forEach((r, i) => {
        const at = this.opts.runs.indexOf(r.prefix);  // a run keeps its color when others are switched off
        const c = M.color(at >= 0 ? at : i);
        const m = { prefix: r.prefix, lastIndex: r.lastIndex, firstTs: r.firstTs, smoothLast: r.smoothLast,
          smoothCount: r.smoothCount, tail: (r.tail || []).filter((v) => v !== null) };
        const smoothed = r.s || (s.smooth !== "none" && M.STATIC ? M.smoothArray(r.y, s.smooth) : null);
        m.y = cols.length; cols.push(clean(r.y.slice()));
        series.push({ label: r.prefix, stroke: smoothed ? M.alpha(c, 0.3) : c, width: 1, spanGaps: true });
        if (showBand && byHand) {
          m.band = [clean(r.hi.slice()), clean(r.lo.slice())];
          m.fill = M.alpha(c, 0.18);
        } else if (showBand) {
          m.hi = cols.length; cols.push(clean(r.hi.slice()));
          series.push({ label: r.prefix + " max", stroke: M.alpha(c, 0.25), width: 0.5, spanGaps: true });
          m.lo = cols.length; cols.push(clean(r.lo.slice()));
          series.push({ label: r.prefix + " min", stroke: M.alpha(c, 0.25), width: 0.5, spanGaps: true });
          bands.push({ series: [m.hi, m.lo], fill: M.alpha(c, 0.18) });
        }
        if (smoothed) {
          m.s = cols.length; cols.push(clean(smoothed.slice()));
          series.push({ label: r.prefix + " (smoothed)", stroke: c, width: 1.5, spanGaps: true });
        }
        this.map.push(m);
      });
      this.cols = cols;
      const notes = [];
      const invalid = runs.reduce((a, r) => a + (r.invalid || 0), 0);
      if (invalid) notes.push(invalid + " line(s) of this stream are not valid JSON and are skipped");
      const missing = runs.filter((r) => r.missing).map((r) => r.prefix);
      if (missing.length) notes.push("no field " + this.opts.field + " in " + missing.join(", "));
      for (const n of data.notes || []) notes.push(n);
      if (!xs.length) notes.push("no numeric data for this x axis");
      this.status.textContent = notes.join("; ");
      this.status.className = "chart-note" + (notes.length ? " warn" : "");
      this.entry.approximate = !!data.approximate;
      if (data.approximate && !M.STATIC) {  // a sampled preview: the exact data follows once the server has read it
        this.status.textContent = "preview (sampled); reading the full data…";
        // one request per stream waits for the exact read (a browser has 6 connections per server); the
        // stream's other charts ask again once it has answered
        const key = this.opts.stream + "\x1f" + this.opts.runs.join(",");
        const waits = (M.exactWaits = M.exactWaits || {});
        if (!waits[key]) waits[key] = this.load(true).finally(() => { delete waits[key]; });
        else waits[key].then(() => this.load());
      }
      this.entry.runs = runs.map((r) => r.prefix);
      this.draw(series, bands, data);
    }

    draw(series, bands, data) {
      const s = M.state;
      const width = this.width || Math.max(200, this.plot.clientWidth || 600);  // no layout between two charts
      const self = this;
      const yScale = { distr: s.log ? 3 : 1 };
      const banded = this.map.filter((m) => m.band);
      if (banded.length) {  // the y range holds the hand-drawn bands too
        let a = Infinity, b = -Infinity;
        for (const m of banded) for (const col of m.band) for (let i = 0; i < col.length; i++) {
          const v = col[i];
          if (v !== null && v !== undefined) { if (v < a) a = v; if (v > b) b = v; }
        }
        if (a <= b) yScale.range = (u, lo, hi) => (s.log ? uPlot.rangeLog(Math.min(lo, a), Math.max(hi, b), 10, true)
          : uPlot.rangeNum(Math.min(lo, a), Math.max(hi, b), 0.1, true));
      }
      if (s.outliers && data.q && data.q[0] !== null) {
        let [a, b] = data.q;
        const pad = (b - a) * 0.1 || Math.abs(a) * 0.1 || 1;
        yScale.range = s.log ? [Math.max(a * 0.8, 1e-300), b * 1.25] : [a - pad, b + pad];
        yScale.auto = false;
      }
      const opts = {
        width, height: 220,
        series, bands,
        scales: { x: { time: s.x === "wall" && !this.opts.x && !s.logx, distr: s.logx ? 3 : 1 }, y: yScale },
        axes: [{ stroke: M.cssVar("--fg", "#222"), grid: { stroke: "rgba(128,128,128,0.15)" } },
          { stroke: M.cssVar("--fg", "#222"), grid: { stroke: "rgba(128,128,128,0.15)" }, size: 60 }],
        legend: { show: series.length <= 13 },
        cursor: { sync: { key: "mld-" + (s.x || "step") }, drag: { x: true, y: false, setScale: false } },
        hooks: {
          setSelect: [(u) => {
            if (u.select.width < 3) return;
            const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            M.zoom(a, b);
          }],
          draw: [(u) => self.drawn(u)],
          drawAxes: [(u) => self.drawBands(u)],
        },
      };
      if (this.u) this.u.destroy();
      M.clear(this.plot);
      this.u = new uPlot(opts, this.cols, this.plot);
      this.u.over.addEventListener("dblclick", () => M.zoom(null, null));
    }

    /* the min/max band of each run of a many-run chart: one filled polygon per stretch without gaps */
    drawBands(u) {
      const banded = this.map.filter((m) => m.band);
      if (!banded.length) return;
      const xs = u.data[0];
      const px = new Float64Array(xs.length);
      for (let i = 0; i < xs.length; i++) px[i] = u.valToPos(xs[i], "x", true);
      const ctx = u.ctx;
      ctx.save();
      ctx.beginPath();
      ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
      ctx.clip();
      const ok = (v) => v !== null && v !== undefined;
      for (const m of banded) {
        const [hi, lo] = m.band;
        ctx.fillStyle = m.fill;
        ctx.beginPath();
        let i = 0;
        while (i < xs.length) {
          if (!ok(hi[i]) || !ok(lo[i])) { i++; continue; }
          let j = i;
          while (j + 1 < xs.length && ok(hi[j + 1]) && ok(lo[j + 1])) j++;
          ctx.moveTo(px[i], u.valToPos(hi[i], "y", true));
          for (let k = i + 1; k <= j; k++) ctx.lineTo(px[k], u.valToPos(hi[k], "y", true));
          for (let k = j; k >= i; k--) ctx.lineTo(px[k], u.valToPos(lo[k], "y", true));
          ctx.closePath();
          i = j + 1;
        }
        ctx.fill();
      }
      ctx.restore();
    }

    drawn(u) {
      const e = this.entry;
      let pts = 0, lo = Infinity, hi = -Infinity, lastTs = null;
      for (const m of this.map) {
        const ys = u.data[m.y];
        for (const v of ys) if (v !== null && v !== undefined) { pts++; if (v < lo) lo = v; if (v > hi) hi = v; }
        for (const k of ["lo", "hi"]) {
          if (m[k] === undefined) continue;
          for (const v of u.data[m[k]]) if (v !== null && v !== undefined) { if (v < lo) lo = v; if (v > hi) hi = v; }
        }
        for (const col of m.band || []) for (const v of col) if (v !== null && v !== undefined) { if (v < lo) lo = v; if (v > hi) hi = v; }
      }
      for (const r of this.data.runs) if (r.lastTs !== null && (lastTs === null || r.lastTs > lastTs)) lastTs = r.lastTs;
      if (this.liveTs && (lastTs === null || this.liveTs > lastTs)) lastTs = this.liveTs;
      e.points = pts; e.yMin = pts ? lo : null; e.yMax = pts ? hi : null; e.lastTs = lastTs;
      const list = M.hooks.charts;
      if (!list.includes(e)) list.push(e);
      this.drawMarker(u);
      performance.mark("chart:" + this.id + ":drawn");
    }

    drawMarker(u) {
      if (M.marker === undefined || M.marker === null) return;
      const s = M.state;
      let x = M.marker;
      if (s.x === "relative" && this.map[0] && this.map[0].firstTs) x = M.marker - this.map[0].firstTs;
      else if (s.x !== "wall" && s.x !== "relative") return;
      const px = u.valToPos(x, "x", true);
      if (!isFinite(px)) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#e0245e"; ctx.lineWidth = 2; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
      ctx.restore();
    }

    /* live rows: appended after what the chart already holds (rows at or below its last index are skipped) */
    append(prefix, rows) {
      if (!this.u || !this.data || M.state.group) return;
      const i = this.map.findIndex((m) => m.prefix === prefix);
      if (i < 0) return;
      const m = this.map[i];
      const s = M.state;
      const field = this.opts.field;
      let added = 0;
      const sp = M.smoothSpec(s.smooth);
      for (const row of rows) {
        if (row.index !== null && row.index !== undefined && m.lastIndex !== null && m.lastIndex !== undefined && row.index <= m.lastIndex) continue;
        const y = row[field];
        if (typeof y !== "number") continue;
        let x;
        const xk = this.opts.x || s.x;
        if (xk === "step") x = typeof row.step === "number" ? row.step : row.index;
        else if (xk === "index") x = row.index;
        else if (xk === "wall") x = row._ts;
        else if (xk === "relative") x = row._ts - (m.firstTs || row._ts);
        else x = row[xk];
        if (typeof x !== "number" || (s.logx && !(x > 0))) continue;
        if (s.xmax !== null && x > s.xmax) continue;
        if (row.index !== undefined) m.lastIndex = row.index;
        const yy = s.log && !(y > 0) ? null : y;
        this.cols[0].push(x);
        for (let k = 1; k < this.cols.length; k++) this.cols[k].push(null);
        this.cols[m.y][this.cols[0].length - 1] = yy;
        if (m.lo !== undefined) { this.cols[m.lo][this.cols[0].length - 1] = yy; this.cols[m.hi][this.cols[0].length - 1] = yy; }
        if (m.s !== undefined && sp) {
          let sv;
          if (sp.kind === "ema") {
            const n = (m.smoothCount || 0) + 1;
            const prevAcc = m.smoothLast !== null && m.smoothLast !== undefined ? m.smoothLast * (1 - Math.pow(sp.arg, n - 1)) : 0;
            const acc = prevAcc * sp.arg + (1 - sp.arg) * y;
            sv = acc / (1 - Math.pow(sp.arg, n));
            m.smoothCount = n;
          } else {
            m.tail.push(y);
            if (m.tail.length > sp.arg) m.tail.splice(0, m.tail.length - sp.arg);
            sv = m.tail.reduce((a, b) => a + b, 0) / m.tail.length;
          }
          m.smoothLast = sv;
          this.cols[m.s][this.cols[0].length - 1] = s.log && !(sv > 0) ? null : sv;
        }
        if (typeof row._ts === "number" && (!this.liveTs || row._ts > this.liveTs)) this.liveTs = row._ts;
        added++;
      }
      if (!added) return;
      // keep x sorted (rows from a second writer may interleave): rare, so a full sort only when needed
      const xs = this.cols[0];
      let sorted = true;
      for (let k = xs.length - added; k < xs.length && sorted; k++) if (k > 0 && xs[k] < xs[k - 1]) sorted = false;
      if (!sorted) {
        const order = xs.map((_, k) => k).sort((a, b) => xs[a] - xs[b]);
        this.cols = this.cols.map((col) => order.map((k) => col[k]));
        for (const m of this.map) if (m.band) m.band = m.band.map((col) => order.map((k) => (k < col.length ? col[k] : null)));
      }
      if (!this.raf) {
        this.raf = requestAnimationFrame(() => { this.raf = null; if (this.u) this.u.setData(this.cols, M.state.xmin === null); });
      }
    }

    csv() {
      if (!this.u) return;
      const head = ["x"];
      this.u.series.slice(1).forEach((s) => head.push(s.label));
      const extra = [];
      for (const m of this.map) if (m.band) { head.push(m.prefix + " max", m.prefix + " min"); extra.push(...m.band); }
      const cols = this.cols.concat(extra);
      const q = (v) => (/[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v);
      const lines = [head.map(q).join(",")];
      for (let i = 0; i < this.cols[0].length; i++) lines.push(cols.map((c) => (c[i] === null || c[i] === undefined ? "" : c[i])).join(","));
      M.download(this.id.replace(/[^\w.-]+/g, "_") + ".csv", new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    }

    png() {
      if (!this.u) return;
      const src = this.u.ctx.canvas;
      const c = document.createElement("canvas");
      c.width = src.width; c.height = src.height;
      const ctx = c.getContext("2d");
      ctx.fillStyle = M.cssVar("--bg", "#fff");
      ctx.fillRect(0, 0, c.width, c.height);
      ctx.drawImage(src, 0, 0);
      c.toBlob((b) => M.download(this.id.replace(/[^\w.-]+/g, "_") + ".png", b), "image/png");
    }
  }
  M.Chart = Chart;

  M.zoom = function (a, b) {
    M.state.xmin = a; M.state.xmax = b;
    M.reloadCharts();
  };

  /* the chart controls shared by the run and compare pages */
  M.controls = function (xFields, onChange) {
    const s = M.state;
    const xs = ["step", "index", "wall", "relative"].concat(xFields.filter((f) => !["step", "index"].includes(f)));
    const sel = el("select", { id: "x-axis", title: "x axis (x)", onchange: (e) => { s.x = e.target.value; s.xmin = s.xmax = null; onChange(); } },
      xs.map((x) => el("option", { value: x, text: "x: " + x, selected: x === s.x })));
    const smooths = ["none", "ema:0.6", "ema:0.9", "ema:0.99", "mean:10", "mean:100"];
    if (!smooths.includes(s.smooth)) smooths.push(s.smooth);
    const sm = el("select", { id: "smoothing", title: "smoothing (s): debiased EMA as TensorBoard computes it, or running mean", onchange: (e) => { s.smooth = e.target.value; onChange(); } },
      smooths.map((x) => el("option", { value: x, text: "smoothing: " + x, selected: x === s.smooth })));
    const box = (id, label, key, title) => el("label", { class: "check", title },
      el("input", { type: "checkbox", id, checked: s[key], onchange: (e) => { s[key] = e.target.checked; onChange(); } }), label);
    return el("div", { class: "controls" }, sel, sm,
      box("log-y", "log y", "log", "logarithmic y axis (l)"),
      box("log-x", "log x", "logx", "logarithmic x axis; rows with x <= 0 are not shown"),
      box("outliers", "ignore outliers", "outliers", "y range from the 1st to 99th percentile; no point is dropped (o)"),
      box("band", "min/max band", "band", "shade each run's min/max per pixel, so no spike is hidden (b)"),
      el("button", { id: "reset-zoom", text: "reset zoom", title: "show the whole x range (r, or double-click a chart)", onclick: () => M.zoom(null, null) }));
  };
})();
