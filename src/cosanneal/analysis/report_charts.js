/* cosanneal report: the interactive charts of report.html (written for cosanneal; no library).
 *
 * Reads the JSON document in the page's script element #report-data, of type application/json (built
 * by cosanneal.analysis.report_series.chart_data), and draws every panel on a <canvas> inside the
 * page's <div class="interactive" data-chart="KEY"> elements. Nothing is fetched: the page stays one
 * offline file.
 *
 * Per panel: an HTML legend above the plot (click an entry to hide or show its series), drag a box to
 * zoom (a horizontal drag zooms x only), the mouse wheel zooms x around the cursor, a double click
 * resets; hovering shows, for every visible series, its point nearest to the cursor's x in a tooltip.
 * Page controls: the x axis (update or epoch) and the EMA smoothing weight. Chart controls: log y,
 * normalised LR (lr / the run's peak), and the PNG view.
 *
 * With "?selftest" (or "?selftest=STEP") in the URL the script zooms, toggles and hovers every panel
 * itself after drawing and writes what it saw as JSON into <pre id="report-selftest"> and
 * data-selftest="done" on <body> (what the tests read from Chromium's --dump-dom).
 */
(function () {
  "use strict";

  var source = document.getElementById("report-data");
  if (!source) {
    return;
  }
  var DATA = JSON.parse(source.textContent);
  var RUNS = DATA.runs;
  var state = { xaxis: "step", smoothing: DATA.smoothing };
  var charts = [];
  var PAD = { left: 74, right: 14, top: 10, bottom: 40 };
  var LANE_HEIGHT = 34;
  var PANEL_HEIGHT = 280;

  // ---- numbers ------------------------------------------------------------------------------------
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) {
      return "non-finite";
    }
    return String(Number(v.toPrecision(6)));
  }

  function fmtTick(v, step) {
    if (v === 0) {
      return "0";
    }
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) {
      return v.toExponential(Math.max(0, Math.min(6, Math.round(Math.log10(a) - Math.log10(step)))));
    }
    return v.toFixed(Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9))));
  }

  function niceTicks(lo, hi, n) {
    var span = hi - lo;
    if (!(span > 0) || !isFinite(span)) {
      return { ticks: [lo], step: Math.abs(lo) || 1 };
    }
    var raw = span / n;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var err = raw / power;
    var step = power * (err >= 7.07 ? 10 : err >= 3.16 ? 5 : err >= 1.41 ? 2 : 1);
    var ticks = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return { ticks: ticks, step: step };
  }

  function logTicks(lo, hi) {
    // lo, hi in log10 units; ticks returned in log10 units with their labels
    var d0 = Math.floor(lo);
    var d1 = Math.ceil(hi);
    var every = Math.max(1, Math.ceil((d1 - d0) / 8));
    var out = [];
    for (var d = d0; d <= d1; d += 1) {
      var mults = d1 - d0 <= 2 ? [1, 2, 5] : [1];
      for (var i = 0; i < mults.length; i += 1) {
        var t = d + Math.log10(mults[i]);
        if (t >= lo - 1e-9 && t <= hi + 1e-9 && (mults[i] !== 1 || (d - d0) % every === 0)) {
          var label = d >= -3 && d <= 4 ? String(Number((mults[i] * Math.pow(10, d)).toPrecision(3)))
            : (mults[i] === 1 ? "" : mults[i] + "\u00d7") + "1e" + d;
          out.push({ t: t, label: label });
        }
      }
    }
    return out;
  }

  function ema(y, w) {
    var out = new Array(y.length);
    var m = 0;
    var n = 0;
    for (var i = 0; i < y.length; i += 1) {
      var v = y[i];
      if (v === null || !isFinite(v)) {
        out[i] = v;
        continue;
      }
      if (w === 0) {
        out[i] = v;
        continue;
      }
      m = w * m + (1 - w) * v;
      n += 1;
      out[i] = m / (1 - Math.pow(w, n));
    }
    return out;
  }

  function epochOf(run, step) {
    var axis = RUNS[run].epoch;
    if (axis.kind === "per_epoch") {
      return step / axis.steps_per_epoch;
    }
    if (axis.kind !== "scalar") {
      return null;
    }
    var s = axis.steps;
    var e = axis.epochs;
    if (step <= s[0]) {
      return e[0];
    }
    if (step >= s[s.length - 1]) {
      return e[e.length - 1];
    }
    var i = upper(s, step);
    return e[i - 1] + (e[i] - e[i - 1]) * (step - s[i - 1]) / (s[i] - s[i - 1]);
  }

  function upper(xs, x) {
    // first index with xs[i] > x (xs ascending)
    var lo = 0;
    var hi = xs.length;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (xs[mid] <= x) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  function nearest(xs, x) {
    if (!xs.length) {
      return -1;
    }
    var i = upper(xs, x);
    if (i <= 0) {
      return 0;
    }
    if (i >= xs.length) {
      return xs.length - 1;
    }
    return x - xs[i - 1] <= xs[i] - x ? i - 1 : i;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  // ---- one panel ------------------------------------------------------------------------------------
  function Panel(chart, spec, box) {
    this.chart = chart;
    this.spec = spec;
    this.hidden = {};
    this.yview = null;
    this.stats = { paths: 0, points: 0 };
    this.lanes = spec.lanes || null;
    this.log = !!spec.ylog && !this.lanes;
    this.legend = el("div", { class: "legend", "data-panel": spec.id });
    this.wrap = el("div", { class: "plot" });
    this.canvas = el("canvas", { "data-panel": spec.id });
    this.tip = el("div", { class: "tooltip", "data-panel": spec.id, hidden: "" });
    this.wrap.appendChild(this.canvas);
    this.wrap.appendChild(this.tip);
    box.appendChild(this.legend);
    if (spec.note || spec.empty) {
      box.appendChild(el("div", { class: "note" }, spec.note || spec.empty));
    }
    box.appendChild(this.wrap);
    this.height = this.lanes ? 70 + LANE_HEIGHT * this.lanes.length : PANEL_HEIGHT;
    this.buildLegend();
    this.listen();
  }

  Panel.prototype.buildLegend = function () {
    var self = this;
    this.legend.textContent = "";
    if ((this.spec.toggles || []).indexOf("log") >= 0 && !this.lanes) {
      var label = el("label", { class: "item static" });
      var input = el("input", { type: "checkbox", "data-toggle": "log", "data-panel": this.spec.id });
      input.checked = this.log;
      input.addEventListener("change", function () {
        self.setLog(input.checked);
      });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" log y"));
      this.legend.appendChild(label);
      this.logInput = input;
    }
    this.spec.series.forEach(function (s, i) {
      if (s.hover === false) {
        return;
      }
      var item = el("span", { class: "item", "data-series": String(i), title: "click to hide or show" });
      var sw = el("span", { class: "swatch" });
      sw.style.borderTopColor = self.colorOf(s);
      sw.style.borderTopStyle = s.dash ? "dashed" : "solid";
      if (s.mode === "points") {
        sw.textContent = s.marker || "o";
        sw.style.color = self.colorOf(s);
        sw.style.borderTopStyle = "none";
      }
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.label));
      item.addEventListener("click", function () {
        self.hidden[i] = !self.hidden[i];
        item.classList.toggle("off", !!self.hidden[i]);
        self.draw();
      });
      self.legend.appendChild(item);
    });
    var extra = {};
    (this.spec.vlines || []).forEach(function (v) {
      extra[v.label] = { color: RUNS[v.run].color, dash: true };
    });
    (this.spec.spans || []).forEach(function (v) {
      extra[v.label] = { color: v.color, span: true };
    });
    Object.keys(extra).forEach(function (label) {
      var item = el("span", { class: "item static" });
      var sw = el("span", { class: extra[label].span ? "swatch span" : "swatch vline" });
      if (extra[label].span) {
        sw.style.background = extra[label].color;
      } else {
        sw.style.borderLeftColor = extra[label].color;
      }
      item.appendChild(sw);
      item.appendChild(document.createTextNode(label));
      self.legend.appendChild(item);
    });
  };

  Panel.prototype.colorOf = function (s) {
    return s.color || RUNS[s.run].color;
  };

  Panel.prototype.xOf = function (run, step) {
    return state.xaxis === "epoch" ? epochOf(run, step) : step;
  };

  Panel.prototype.normalised = function () {
    return this.chart.toggles.normalised && this.spec.toggles.indexOf("normalised") >= 0;
  };

  Panel.prototype.ylog = function () {
    return this.log;
  };

  Panel.prototype.setLog = function (value) {
    this.log = !!value && !this.lanes;
    if (this.logInput) {
      this.logInput.checked = this.log;
    }
    this.yview = null;
    this.draw();
  };

  // The drawn curves: x in the current unit, y raw (or / peak), the smoothed y where smoothed.
  Panel.prototype.curves = function () {
    var self = this;
    var norm = this.normalised();
    return this.spec.series.map(function (s, i) {
      var xs = [];
      var ys = [];
      var idx = [];
      var known = RUNS[s.run].epoch.kind !== "unknown" || state.xaxis === "step";
      if (known) {
        for (var j = 0; j < s.x.length; j += 1) {
          xs.push(self.xOf(s.run, s.x[j]));
          var v = s.y[j];
          ys.push(v !== null && norm && s.peak ? v / s.peak : v);
          idx.push(j);
        }
      }
      var smooth = s.smooth && state.smoothing > 0 ? ema(ys, state.smoothing) : null;
      return { s: s, i: i, x: xs, y: ys, idx: idx, smooth: smooth, visible: known && !self.hidden[i] };
    });
  };

  Panel.prototype.extent = function (curves) {
    var ylog = this.ylog();
    var x0 = Infinity;
    var x1 = -Infinity;
    curves.forEach(function (c) {
      if (c.visible && c.x.length) {
        x0 = Math.min(x0, c.x[0]);
        x1 = Math.max(x1, c.x[c.x.length - 1]);
      }
    });
    if (!isFinite(x0)) {
      x0 = 0;
      x1 = 1;
    }
    var xv = this.chart.xview;
    if (xv && xv.unit === state.xaxis) {
      x0 = xv.x0;
      x1 = xv.x1;
    }
    if (x1 <= x0) {
      x1 = x0 + 1;
    }
    if (this.lanes) {
      return { x0: x0, x1: x1, y0: -0.6, y1: this.lanes.length - 0.4 };
    }
    var y0 = Infinity;
    var y1 = -Infinity;
    curves.forEach(function (c) {
      if (!c.visible) {
        return;
      }
      [c.y, c.smooth].forEach(function (ys) {
        if (!ys) {
          return;
        }
        for (var j = 0; j < ys.length; j += 1) {
          var v = ys[j];
          if (v === null || !isFinite(v) || c.x[j] < x0 || c.x[j] > x1 || (ylog && v <= 0)) {
            continue;
          }
          var t = ylog ? Math.log10(v) : v;
          y0 = Math.min(y0, t);
          y1 = Math.max(y1, t);
        }
      });
    });
    if (!isFinite(y0)) {
      y0 = 0;
      y1 = 1;
    }
    if (y1 - y0 < 1e-12 * Math.max(1, Math.abs(y1))) {
      y0 -= ylog ? 0.5 : Math.abs(y0) * 0.1 || 0.5;
      y1 += ylog ? 0.5 : Math.abs(y1) * 0.1 || 0.5;
    } else {
      var m = (y1 - y0) * 0.05;
      y0 -= m;
      y1 += m;
    }
    if (this.yview && this.yview.log === ylog && this.yview.norm === this.normalised()) {
      y0 = this.yview.y0;
      y1 = this.yview.y1;
    }
    return { x0: x0, x1: x1, y0: y0, y1: y1 };
  };

  Panel.prototype.layout = function () {
    var width = Math.max(320, this.wrap.clientWidth || 900);
    var ratio = window.devicePixelRatio || 1;
    this.canvas.style.width = width + "px";
    this.canvas.style.height = this.height + "px";
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(this.height * ratio);
    this.width = width;
    this.ratio = ratio;
    var left = this.lanes ? Math.max(PAD.left, 16 + 7 * Math.max.apply(null, this.lanes.map(function (n) {
      return n.length;
    }))) : PAD.left;
    this.plot = { left: left, top: PAD.top, right: width - PAD.right, bottom: this.height - PAD.bottom };
  };

  Panel.prototype.px = function (x) {
    var e = this.view;
    return this.plot.left + (x - e.x0) / (e.x1 - e.x0) * (this.plot.right - this.plot.left);
  };

  Panel.prototype.py = function (t) {
    var e = this.view;
    return this.plot.bottom - (t - e.y0) / (e.y1 - e.y0) * (this.plot.bottom - this.plot.top);
  };

  Panel.prototype.dataX = function (px) {
    var e = this.view;
    return e.x0 + (px - this.plot.left) / (this.plot.right - this.plot.left) * (e.x1 - e.x0);
  };

  Panel.prototype.dataY = function (py) {
    var e = this.view;
    return e.y0 + (this.plot.bottom - py) / (this.plot.bottom - this.plot.top) * (e.y1 - e.y0);
  };

  Panel.prototype.ty = function (v) {
    return this.ylog() ? (v > 0 ? Math.log10(v) : null) : v;
  };

  Panel.prototype.draw = function () {
    this.layout();
    var ctx = this.canvas.getContext("2d");
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, this.width, this.height);
    this.stats = { paths: 0, points: 0 };
    var curves = this.curves();
    this.curvesNow = curves;
    this.view = this.extent(curves);
    this.drawAxes(ctx);
    ctx.save();
    ctx.beginPath();
    ctx.rect(this.plot.left, this.plot.top, this.plot.right - this.plot.left, this.plot.bottom - this.plot.top);
    ctx.clip();
    this.drawSpans(ctx);
    this.drawVlines(ctx);
    var self = this;
    curves.forEach(function (c) {
      if (c.visible) {
        self.drawCurve(ctx, c);
      }
    });
    if (this.cursor !== undefined && this.cursor !== null) {
      ctx.strokeStyle = "rgba(0,0,0,0.45)";
      ctx.lineWidth = 1;
      ctx.setLineDash([]);
      ctx.beginPath();
      var cx = this.px(this.cursor);
      ctx.moveTo(cx, this.plot.top);
      ctx.lineTo(cx, this.plot.bottom);
      ctx.stroke();
    }
    if (this.band) {
      ctx.fillStyle = "rgba(31,119,180,0.12)";
      ctx.strokeStyle = "rgba(31,119,180,0.8)";
      ctx.setLineDash([]);
      var b = this.band;
      ctx.fillRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
      ctx.strokeRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
    }
    ctx.restore();
    if (this.spec.empty) {
      ctx.fillStyle = "#666";
      ctx.font = "14px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(this.spec.empty, (this.plot.left + this.plot.right) / 2, (this.plot.top + this.plot.bottom) / 2);
    }
  };

  Panel.prototype.drawAxes = function (ctx) {
    var p = this.plot;
    var e = this.view;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#333";
    ctx.strokeStyle = "#e4e4e4";
    ctx.lineWidth = 1;
    ctx.setLineDash([]);
    var xt = niceTicks(e.x0, e.x1, Math.max(3, Math.floor((p.right - p.left) / 90)));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    var self = this;
    xt.ticks.forEach(function (t) {
      var x = self.px(t);
      ctx.beginPath();
      ctx.moveTo(x, p.top);
      ctx.lineTo(x, p.bottom);
      ctx.stroke();
      ctx.fillText(fmtTick(t, xt.step), x, p.bottom + 4);
    });
    var yticks;
    if (this.lanes) {
      yticks = this.lanes.map(function (name, k) {
        return { t: k, label: name };
      });
    } else if (this.ylog()) {
      yticks = logTicks(e.y0, e.y1);
    } else {
      var yt = niceTicks(e.y0, e.y1, Math.max(3, Math.floor((p.bottom - p.top) / 45)));
      yticks = yt.ticks.map(function (t) {
        return { t: t, label: fmtTick(t, yt.step) };
      });
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    yticks.forEach(function (t) {
      var y = self.py(t.t);
      ctx.beginPath();
      ctx.moveTo(p.left, y);
      ctx.lineTo(p.right, y);
      ctx.stroke();
      ctx.fillText(t.label, p.left - 6, y);
    });
    this.yticks = yticks;
    ctx.strokeStyle = "#999";
    ctx.strokeRect(p.left, p.top, p.right - p.left, p.bottom - p.top);
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(state.xaxis === "epoch" ? "epoch" : "step (optimizer update)", (p.left + p.right) / 2, this.height - 2);
    if (!this.lanes) {
      ctx.save();
      ctx.translate(13, (p.top + p.bottom) / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = "middle";
      var label = this.spec.ylabel + (this.normalised() ? " / peak" : "") + (this.ylog() ? " (log)" : "");
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
  };

  Panel.prototype.drawSpans = function (ctx) {
    var self = this;
    (this.spec.spans || []).forEach(function (s) {
      var a = self.xOf(s.run, s.x0);
      var b = self.xOf(s.run, s.x1);
      if (a === null || b === null) {
        return;
      }
      ctx.globalAlpha = s.alpha;
      ctx.fillStyle = s.color;
      ctx.fillRect(self.px(a), self.plot.top, self.px(b) - self.px(a), self.plot.bottom - self.plot.top);
      ctx.globalAlpha = 1;
    });
  };

  Panel.prototype.drawVlines = function (ctx) {
    var self = this;
    ctx.lineWidth = 1;
    (this.spec.vlines || []).forEach(function (v) {
      var x = self.xOf(v.run, v.x);
      if (x === null) {
        return;
      }
      ctx.strokeStyle = RUNS[v.run].color;
      ctx.globalAlpha = 0.75;
      ctx.setLineDash(v.dash.split(",").map(Number));
      ctx.beginPath();
      ctx.moveTo(self.px(x), self.plot.top);
      ctx.lineTo(self.px(x), self.plot.bottom);
      ctx.stroke();
      ctx.globalAlpha = 1;
    });
    ctx.setLineDash([]);
  };

  Panel.prototype.stroke = function (ctx, xs, ys, color, width, dash, alpha) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.globalAlpha = alpha;
    ctx.setLineDash(dash ? dash.split(",").map(Number) : []);
    ctx.beginPath();
    var open = false;
    var segments = 0;
    for (var j = 0; j < xs.length; j += 1) {
      var t = ys[j] === null ? null : this.ty(ys[j]);
      if (t === null || !isFinite(t)) {
        open = false;
        continue;
      }
      var x = this.px(xs[j]);
      var y = this.py(t);
      if (open) {
        ctx.lineTo(x, y);
        segments += 1;
      } else {
        ctx.moveTo(x, y);
        open = true;
      }
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
    if (segments > 0) {
      this.stats.paths += 1;
    }
  };

  Panel.prototype.marker = function (ctx, x, y, kind, color, size) {
    ctx.fillStyle = color;
    ctx.strokeStyle = kind === "*" ? "#000" : color;
    ctx.lineWidth = kind === "x" || kind === "X" ? 2 : 1;
    ctx.beginPath();
    var r = size;
    if (kind === "x" || kind === "X") {
      ctx.moveTo(x - r, y - r);
      ctx.lineTo(x + r, y + r);
      ctx.moveTo(x - r, y + r);
      ctx.lineTo(x + r, y - r);
      ctx.stroke();
    } else if (kind === "|") {
      ctx.moveTo(x, y - 2 * r);
      ctx.lineTo(x, y + 2 * r);
      ctx.stroke();
    } else if (kind === "s" || kind === "D") {
      ctx.rect(x - r, y - r, 2 * r, 2 * r);
      if (kind === "s") {
        ctx.stroke();
      } else {
        ctx.fill();
      }
    } else if (kind === "v" || kind === "^") {
      var d = kind === "v" ? 1 : -1;
      ctx.moveTo(x - r, y - d * r);
      ctx.lineTo(x + r, y - d * r);
      ctx.lineTo(x, y + d * r);
      ctx.closePath();
      ctx.fill();
    } else if (kind === "*") {
      for (var k = 0; k < 10; k += 1) {
        var a = -Math.PI / 2 + k * Math.PI / 5;
        var rr = k % 2 ? r * 0.45 : r * 1.5;
        ctx.lineTo(x + rr * Math.cos(a), y + rr * Math.sin(a));
      }
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    } else {
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fill();
    }
    this.stats.points += 1;
  };

  Panel.prototype.drawCurve = function (ctx, c) {
    var s = c.s;
    var color = this.colorOf(s);
    var mode = s.mode || "line";
    if (mode !== "points") {
      if (c.smooth) {
        this.stroke(ctx, c.x, c.y, color, 0.8, s.dash, 0.3);
        this.stroke(ctx, c.x, c.smooth, color, s.width || 1.6, s.dash, 1);
      } else {
        this.stroke(ctx, c.x, c.y, color, s.width || 1.4, s.dash, 1);
      }
    }
    if (mode === "points" || mode === "linepoints") {
      for (var j = 0; j < c.x.length; j += 1) {
        var t = c.y[j] === null ? null : this.ty(c.y[j]);
        if (t !== null && isFinite(t)) {
          this.marker(ctx, this.px(c.x[j]), this.py(t), s.marker || "o", color, mode === "points" ? 5 : 3);
        }
      }
    }
  };

  // ---- hover ----------------------------------------------------------------------------------------
  Panel.prototype.hover = function (x, clientX, clientY) {
    var rows = [];
    var self = this;
    var norm = this.normalised();
    (this.curvesNow || []).forEach(function (c) {
      if (!c.visible || c.s.hover === false || !c.x.length) {
        return;
      }
      var j = nearest(c.x, x);
      var k = c.idx[j];
      rows.push({
        run: RUNS[c.s.run].name, label: c.s.label, color: self.colorOf(c.s), step: c.s.x[k],
        x: c.x[j], value: c.s.y[k], shown: c.y[j], smoothed: c.smooth ? c.smooth[j] : null,
      });
    });
    this.cursor = x;
    this.draw();
    this.showTip(rows, x, norm, clientX, clientY);
    return rows;
  };

  Panel.prototype.showTip = function (rows, x, norm, clientX, clientY) {
    var tip = this.tip;
    var lanes = !!this.lanes;
    tip.textContent = "";
    var head = state.xaxis === "epoch" ? "epoch " + fmt(x) : "step " + Math.round(x);
    tip.appendChild(el("div", { class: "tip-head" }, head));
    var table = el("table", {});
    rows.forEach(function (r) {
      var tr = el("tr", {
        "data-run": r.run, "data-label": r.label, "data-step": String(r.step),
        "data-value": r.value === null ? "null" : String(r.value),
        "data-shown": r.shown === null ? "null" : String(r.shown),
      });
      var sw = el("td", {}, "\u25a0");
      sw.style.color = r.color;
      tr.appendChild(sw);
      tr.appendChild(el("td", {}, r.label));
      tr.appendChild(el("td", { class: "num" }, "step " + r.step));
      if (!lanes) {
        var text = fmt(r.shown) + (norm && r.shown !== r.value ? " (lr " + fmt(r.value) + ")" : "");
        tr.appendChild(el("td", { class: "num" }, text));
      }
      if (r.smoothed !== null) {
        tr.setAttribute("data-smoothed", String(r.smoothed));
        tr.appendChild(el("td", { class: "num smooth" }, "ema " + fmt(r.smoothed)));
      }
      table.appendChild(tr);
    });
    tip.appendChild(table);
    tip.hidden = false;
    var rect = this.wrap.getBoundingClientRect();
    var left = clientX - rect.left + 14;
    var top = clientY - rect.top + 14;
    tip.style.left = "0px";
    tip.style.top = "0px";
    var w = tip.offsetWidth;
    if (left + w > rect.width) {
      left = Math.max(0, clientX - rect.left - w - 14);
    }
    tip.style.left = left + "px";
    tip.style.top = Math.min(top, Math.max(0, this.height - tip.offsetHeight)) + "px";
  };

  // ---- zoom -----------------------------------------------------------------------------------------
  Panel.prototype.local = function (ev) {
    var r = this.canvas.getBoundingClientRect();
    return { x: ev.clientX - r.left, y: ev.clientY - r.top };
  };

  Panel.prototype.inside = function (p) {
    var q = this.plot;
    return p.x >= q.left && p.x <= q.right && p.y >= q.top && p.y <= q.bottom;
  };

  Panel.prototype.zoomTo = function (x0, x1, y0, y1) {
    this.chart.xview = { unit: state.xaxis, x0: Math.min(x0, x1), x1: Math.max(x0, x1) };
    if (y0 !== null && y1 !== null && !this.lanes) {
      this.yview = { y0: Math.min(y0, y1), y1: Math.max(y0, y1), log: this.ylog(), norm: this.normalised() };
    }
    this.chart.draw();
  };

  Panel.prototype.reset = function () {
    this.chart.xview = null;
    this.chart.panels.forEach(function (p) {
      p.yview = null;
    });
    this.chart.draw();
  };

  Panel.prototype.listen = function () {
    var self = this;
    var c = this.canvas;
    c.addEventListener("mousedown", function (ev) {
      var p = self.local(ev);
      if (ev.button !== 0 || !self.inside(p)) {
        return;
      }
      ev.preventDefault();
      self.drag = p;
      var move = function (e) {
        var q = self.local(e);
        self.band = {
          x0: Math.min(self.drag.x, q.x), x1: Math.max(self.drag.x, q.x),
          y0: Math.min(self.drag.y, q.y), y1: Math.max(self.drag.y, q.y),
        };
        if (self.band.y1 - self.band.y0 < 8 || self.lanes) {
          self.band.y0 = self.plot.top;
          self.band.y1 = self.plot.bottom;
        }
        self.draw();
      };
      var up = function (e) {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
        var q = self.local(e);
        var start = self.drag;
        self.drag = null;
        self.band = null;
        if (Math.abs(q.x - start.x) < 5) {
          self.draw();
          return;
        }
        var xOnly = Math.abs(q.y - start.y) < 8;
        self.zoomTo(self.dataX(start.x), self.dataX(q.x), xOnly ? null : self.dataY(start.y),
          xOnly ? null : self.dataY(q.y));
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });
    c.addEventListener("mousemove", function (ev) {
      if (self.drag) {
        return;
      }
      var p = self.local(ev);
      if (!self.inside(p)) {
        self.leave();
        return;
      }
      self.hover(self.dataX(p.x), ev.clientX, ev.clientY);
    });
    c.addEventListener("mouseleave", function () {
      self.leave();
    });
    c.addEventListener("dblclick", function (ev) {
      ev.preventDefault();
      self.reset();
    });
    c.addEventListener("wheel", function (ev) {
      var p = self.local(ev);
      if (!self.inside(p)) {
        return;
      }
      ev.preventDefault();
      var x = self.dataX(p.x);
      var f = ev.deltaY > 0 ? 1.25 : 0.8;
      var e = self.view;
      self.zoomTo(x - (x - e.x0) * f, x + (e.x1 - x) * f, null, null);
    }, { passive: false });
  };

  Panel.prototype.leave = function () {
    if (this.cursor !== null && this.cursor !== undefined) {
      this.cursor = null;
      this.tip.hidden = true;
      this.draw();
    }
  };

  // ---- a chart: its panels and its toolbar -------------------------------------------------------------
  function Chart(spec, box) {
    var self = this;
    this.spec = spec;
    this.box = box;
    this.xview = null;
    this.toggles = {};
    var toolbar = el("div", { class: "toolbar" });
    var has = {};
    spec.panels.forEach(function (p) {
      (p.toggles || []).forEach(function (t) {
        has[t] = true;
      });
    });
    var addToggle = function (name, text, initial) {
      var label = el("label", {});
      var input = el("input", { type: "checkbox", "data-toggle": name });
      input.checked = initial;
      self.toggles[name] = initial;
      input.addEventListener("change", function () {
        self.setToggle(name, input.checked);
      });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + text));
      toolbar.appendChild(label);
    };
    if (has.normalised) {
      addToggle("normalised", "normalised (lr / run's peak)", false);
    }
    var png = el("button", { type: "button", class: "png-toggle" }, "PNG view");
    png.addEventListener("click", function () {
      var figure = box.closest("figure");
      var img = figure ? figure.querySelector("img.fallback") : null;
      if (img) {
        figure.classList.toggle("show-png");
      }
    });
    toolbar.appendChild(png);
    box.appendChild(toolbar);
    this.panels = spec.panels.map(function (p) {
      return new Panel(self, p, box);
    });
  }

  Chart.prototype.setToggle = function (name, value) {
    this.toggles[name] = value;
    var input = this.box.querySelector('input[data-toggle="' + name + '"]');
    if (input) {
      input.checked = value;
    }
    this.panels.forEach(function (p) {
      p.yview = null;
    });
    this.draw();
  };

  Chart.prototype.draw = function () {
    this.panels.forEach(function (p) {
      p.draw();
    });
  };

  // ---- page controls --------------------------------------------------------------------------------
  function controls() {
    var bar = document.getElementById("report-controls");
    if (!bar) {
      return;
    }
    bar.hidden = false;
    var unknown = RUNS.filter(function (r) {
      return r.epoch.kind === "unknown";
    }).map(function (r) {
      return r.name;
    });
    var group = el("span", { class: "group" }, "x axis: ");
    ["step", "epoch"].forEach(function (unit) {
      var label = el("label", {});
      var input = el("input", { type: "radio", name: "xaxis", value: unit, "data-xaxis": unit });
      input.checked = unit === state.xaxis;
      if (unit === "epoch" && unknown.length === RUNS.length) {
        input.disabled = true;
      }
      input.addEventListener("change", function () {
        setXAxis(unit);
      });
      label.appendChild(input);
      label.appendChild(document.createTextNode(unit === "step" ? " update " : " epoch "));
      group.appendChild(label);
    });
    if (unknown.length) {
      group.appendChild(el("span", { class: "epoch-note", id: "epoch-note" },
        unknown.length === RUNS.length ? "(epoch unknown: no run logged steps_per_epoch or an epoch scalar)"
          : "(epoch unknown for " + unknown.join(", ") + ": hidden on the epoch axis)"));
    }
    bar.appendChild(group);
    var sm = el("span", { class: "group" }, "smoothing (EMA weight): ");
    var range = el("input", { type: "range", id: "smoothing", min: "0", max: "0.999", step: "0.001",
      value: String(state.smoothing) });
    var out = el("output", { for: "smoothing", id: "smoothing-value" }, String(state.smoothing));
    range.addEventListener("input", function () {
      setSmoothing(Number(range.value));
    });
    sm.appendChild(range);
    sm.appendChild(out);
    bar.appendChild(sm);
    bar.appendChild(el("span", { class: "group hint" },
      "drag a box to zoom, wheel zooms x, double-click resets; click a legend entry to hide it"));
  }

  function setXAxis(unit) {
    state.xaxis = unit;
    var input = document.querySelector('input[data-xaxis="' + unit + '"]');
    if (input) {
      input.checked = true;
    }
    charts.forEach(function (c) {
      c.xview = null;
      c.panels.forEach(function (p) {
        p.yview = null;
      });
      c.draw();
    });
  }

  function setSmoothing(w) {
    state.smoothing = Math.max(0, Math.min(0.999, w));
    var out = document.getElementById("smoothing-value");
    if (out) {
      out.textContent = String(state.smoothing);
    }
    charts.forEach(function (c) {
      c.draw();
    });
  }

  // ---- self test (?selftest) ---------------------------------------------------------------------------
  function inked(panel) {
    var ctx = panel.canvas.getContext("2d");
    var img = ctx.getImageData(0, 0, panel.canvas.width, panel.canvas.height).data;
    var colored = 0;
    for (var i = 0; i < img.length; i += 4) {
      var r = img[i];
      var g = img[i + 1];
      var b = img[i + 2];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 40) {
        colored += 1;
      }
    }
    return colored;
  }

  function fire(target, type, panel, x, y, extra) {
    var r = panel.canvas.getBoundingClientRect();
    var init = { bubbles: true, cancelable: true, clientX: r.left + x, clientY: r.top + y, button: 0 };
    Object.keys(extra || {}).forEach(function (k) {
      init[k] = extra[k];
    });
    var ev = type === "wheel" ? new WheelEvent(type, init) : new MouseEvent(type, init);
    target.dispatchEvent(ev);
  }

  function hoverAt(panel, step) {
    var x = panel.px(step);
    fire(panel.canvas, "mousemove", panel, x, (panel.plot.top + panel.plot.bottom) / 2);
    return Array.prototype.map.call(panel.tip.querySelectorAll("tr"), function (tr) {
      return {
        run: tr.getAttribute("data-run"), label: tr.getAttribute("data-label"),
        step: Number(tr.getAttribute("data-step")), value: tr.getAttribute("data-value"),
        shown: tr.getAttribute("data-shown"), smoothed: tr.getAttribute("data-smoothed"),
      };
    });
  }

  function selftest(step) {
    var out = { step: step, panels: [], zoom: {}, toggles: {}, errors: [] };
    var all = [];
    charts.forEach(function (c) {
      c.panels.forEach(function (p) {
        all.push(p);
      });
    });
    all.forEach(function (p) {
      out.panels.push({ id: p.spec.id, chart: p.chart.spec.key, paths: p.stats.paths, points: p.stats.points,
        inked: inked(p), width: p.canvas.width, height: p.canvas.height });
    });
    var loss = all.filter(function (p) {
      return p.spec.id === "loss-0";
    })[0];
    if (loss) {
      var full = { x0: loss.view.x0, x1: loss.view.x1 };
      var a = loss.px(20);
      var b = loss.px(60);
      var mid = (loss.plot.top + loss.plot.bottom) / 2;
      fire(loss.canvas, "mousedown", loss, a, mid);
      fire(window, "mousemove", loss, (a + b) / 2, mid + 1);
      fire(window, "mouseup", loss, b, mid + 1);
      out.zoom.full = full;
      out.zoom.drag = { x0: loss.view.x0, x1: loss.view.x1, paths: loss.stats.paths };
      fire(loss.canvas, "wheel", loss, loss.px(40), mid, { deltaY: 100 });
      out.zoom.wheel = { x0: loss.view.x0, x1: loss.view.x1 };
      fire(loss.canvas, "dblclick", loss, a, mid);
      out.zoom.reset = { x0: loss.view.x0, x1: loss.view.x1 };
      out.toggles.loss_log = { log: loss.ylog(), ticks: loss.yticks.map(function (t) {
        return t.label;
      }) };
    }
    var lr = charts.filter(function (c) {
      return c.spec.key === "lr";
    })[0];
    if (lr) {
      lr.setToggle("normalised", true);
      out.toggles.normalised = lr.panels.map(function (p) {
        return { id: p.spec.id, y1: p.view.y1, rows: hoverAt(p, step) };
      });
      lr.setToggle("normalised", false);
      out.toggles.lr_log = lr.panels.map(function (p) {
        p.logInput.click();
        var seen = { id: p.spec.id, log: p.ylog(), y0: p.view.y0, y1: p.view.y1, paths: p.stats.paths,
          ticks: p.yticks.map(function (t) {
            return t.label;
          }) };
        p.logInput.click();
        return seen;
      });
    }
    if (loss) {
      setSmoothing(0);
      out.toggles.smoothing0 = hoverAt(loss, step);
      setSmoothing(DATA.smoothing);
      setXAxis("epoch");
      out.toggles.epoch = { x0: loss.view.x0, x1: loss.view.x1, paths: loss.stats.paths,
        rows: hoverAt(loss, epochOf(0, step) === null ? step : epochOf(0, step)) };
      setXAxis("step");
    }
    out.hover = {};
    all.forEach(function (p) {
      out.hover[p.spec.id] = hoverAt(p, step);
    });
    var pre = el("pre", { id: "report-selftest", hidden: "" }, JSON.stringify(out));
    document.body.appendChild(pre);
    document.body.setAttribute("data-selftest", "done");
  }

  // ---- start ----------------------------------------------------------------------------------------
  document.documentElement.classList.add("js");
  controls();
  DATA.charts.forEach(function (spec) {
    var box = document.querySelector('.interactive[data-chart="' + spec.key + '"]');
    if (box) {
      charts.push(new Chart(spec, box));
    }
  });
  charts.forEach(function (c) {
    c.draw();
  });
  var pending = null;
  window.addEventListener("resize", function () {
    if (pending === null) {
      pending = window.requestAnimationFrame(function () {
        pending = null;
        charts.forEach(function (c) {
          c.draw();
        });
      });
    }
  });
  var match = /[?&]selftest(?:=([0-9.]+))?/.exec(window.location.search);
  if (match) {
    selftest(match[1] ? Number(match[1]) : 40);
  }
})();
