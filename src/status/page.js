// The status page (served as assets/status.js; the server side is src/status/page.ts).
//
// One EventSource on `events`. Its "hello" event brings what does not change while the server
// runs (version, configuration, store, what each code means) and the charts' history; every
// other event is one snapshot (src/status/snapshot.ts). An element with data-metric="NAME" shows
// the /metrics sample of that name and keeps the raw number in data-value (the browser tests
// compare it with /metrics). Everything is written with textContent: nothing the server sends is
// taken as HTML.
"use strict";

(() => {
  const HISTORY_S = 300;
  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const $ = (id) => document.getElementById(id);

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i === 0 ? integer.format(n) : decimal.format(n)} ${units[i]}`;
  }

  function seconds(s) {
    if (s === 0) return "0";
    if (s < 0.001) return `${integer.format(s * 1e6)} µs`;
    if (s < 1) return `${decimal.format(s * 1e3)} ms`;
    return `${decimal.format(s)} s`;
  }

  function duration(s) {
    const d = Math.floor(s / 86400);
    const h = Math.floor(s / 3600) % 24;
    const m = Math.floor(s / 60) % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d}d ${two(h)}h ${two(m)}m`;
    if (h > 0) return `${h}h ${two(m)}m ${two(s % 60)}s`;
    return m > 0 ? `${m}m ${two(s % 60)}s` : `${s}s`;
  }

  function format(value, unit) {
    if (unit === "bytes") return bytes(value);
    if (unit === "seconds") return seconds(value);
    return Number.isInteger(value) ? integer.format(value) : decimal.format(value);
  }

  function setLink(state, text) {
    const link = $("link");
    link.className = `link ${state}`;
    link.textContent = text ?? state;
  }

  // The charts' columns as uPlot takes them: times (s), then one column per series (see
  // ChartPoint in src/status/snapshot.ts).
  const data = [[], [], [], [], [], [], [], [], []];
  let charts = null;
  let latest = null;
  // Snapshots this page has taken in (seq counts the server's ticks, some of which a slow page
  // may skip).
  let received = 0;

  function addPoint(point) {
    const times = data[0];
    if (times.length > 0 && point[0] <= times[times.length - 1]) return;
    point.forEach((v, i) => data[i].push(v));
    let stale = 0;
    while (times[stale] < point[0] - HISTORY_S) stale++;
    if (stale > 0) { for (const column of data) column.splice(0, stale); }
  }

  function chart(id, series, unit) {
    const el = $(id);
    const newest = () => data[0][data[0].length - 1] ?? Date.now() / 1000;
    return new uPlot(
      {
        width: el.clientWidth,
        height: 190,
        legend: { live: false },
        scales: {
          // The last five minutes, whatever the points cover; from zero up.
          x: { time: true, range: () => [newest() - HISTORY_S, newest()] },
          y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [{}, { size: 76, values: (_u, splits) => splits.map((v) => format(v, unit)) }],
        series: [{}, ...series],
      },
      [[], ...series.map(() => [])],
      el,
    );
  }

  function makeCharts() {
    const line = (label, stroke, dash) => ({ label, stroke, width: 2, ...(dash ? { dash } : {}) });
    return {
      rates: chart("chart-rates", [
        line("received", "#4e79a7"),
        line("written", "#59a14f", [6, 4]),
        line("acked", "#f28e2b"),
      ]),
      connections: chart("chart-connections", [line("open", "#76b7b2")]),
      latency: chart("chart-latency", [
        line("write p50", "#4e79a7"),
        line("write p99", "#4e79a7", [6, 4]),
        line("sync p50", "#e15759"),
        line("sync p99", "#e15759", [6, 4]),
      ], "seconds"),
    };
  }

  function redraw() {
    charts.rates.setData([data[0], data[1], data[2], data[3]]);
    charts.connections.setData([data[0], data[4]]);
    charts.latency.setData([data[0], data[5], data[6], data[7], data[8]]);
  }

  function row(tbody, label, value) {
    const tr = tbody.insertRow();
    tr.insertCell().textContent = label;
    const cell = tr.insertCell();
    if (value instanceof Node) cell.append(value);
    else cell.textContent = value;
  }

  function figure(attribute, name, unit) {
    const b = document.createElement("b");
    b.dataset[attribute] = name;
    if (unit) b.dataset.unit = unit;
    b.textContent = "-";
    return b;
  }

  const TOTALS = [
    ["messages received", "msgserver_messages_received_total"],
    ["messages written", "msgserver_messages_written_total"],
    ["messages acked", "msgserver_messages_acked_total"],
    ["refused (NACK 1, 2)", "msgserver_messages_nacked_total"],
    ["duplicates (NACK 3)", "msgserver_messages_duplicate_total"],
    ["lost to storage errors (NACK 4)", "msgserver_messages_failed_total"],
    ["bytes written", "msgserver_bytes_written_total", "bytes"],
    ["batches", "msgserver_batches_total"],
    ["connections accepted", "msgserver_connections_total"],
    ["connections refused", "msgserver_connections_refused_total"],
    ["reply bytes waiting", "msgserver_reply_bytes_pending", "bytes"],
    ["resident memory", "msgserver_resident_memory_bytes", "bytes"],
  ];

  function onHello(hello) {
    $("version").textContent = hello.version;
    $("ack-mode").textContent = hello.ackMode;
    document.body.dataset.startedAt = hello.startedAt;

    const totals = $("totals");
    totals.replaceChildren();
    for (const [label, name, unit] of TOTALS) row(totals, label, figure("metric", name, unit));

    const refusals = $("refusals");
    refusals.replaceChildren();
    for (
      const [kind, names, metric] of [
        ["NACK", hello.nackNames, "msgserver_nacks_total"],
        ["ERROR", hello.errorNames, "msgserver_errors_total"],
      ]
    ) {
      for (const [code, what] of Object.entries(names)) {
        row(refusals, `${kind} ${code} ${what}`, figure("metric", `${metric}{code="${code}"}`));
      }
    }

    const store = $("store");
    store.replaceChildren();
    row(store, "kind", hello.store.kind);
    row(store, "name", hello.store.name);
    for (const m of hello.store.metrics) {
      const label = m.name.replace(/^msgserver_/, "").replace(/_total$/, "").replace(/_/g, " ");
      const unit = m.name.endsWith("_bytes")
        ? "bytes"
        : m.name.endsWith("_seconds")
        ? "seconds"
        : "";
      const el = m.type === "histogram"
        ? figure("quantiles", m.name, unit)
        : figure("metric", m.sample, unit);
      row(store, m.type === "histogram" ? `${label} p50 / p99` : label, el);
      store.lastElementChild.title = m.help;
    }

    const config = $("config");
    config.replaceChildren();
    for (const [key, value] of Object.entries(hello.config)) row(config, key, String(value));

    charts ??= makeCharts();
    for (const point of hello.history) addPoint(point);
    redraw();
  }

  function onSnapshot(s) {
    latest = s;
    received++;
    document.body.dataset.seq = s.seq;
    $("uptime").textContent = duration(s.uptimeS);
    for (const el of document.querySelectorAll("[data-metric]")) {
      const value = s.values[el.dataset.metric];
      if (value === undefined) continue;
      el.dataset.value = value;
      el.textContent = format(value, el.dataset.unit);
    }
    for (const el of document.querySelectorAll("[data-rate]")) {
      const value = s.rates === null ? null : s.rates[el.dataset.rate];
      el.dataset.value = value ?? "";
      el.textContent = value === null ? "-" : integer.format(value);
    }
    for (const el of document.querySelectorAll("[data-quantiles]")) {
      const q = s.quantiles[el.dataset.quantiles];
      const unit = el.dataset.unit;
      el.textContent = q ? `${format(q.p50, unit)} / ${format(q.p99, unit)}` : "-";
    }
    $("batch-mean").textContent = s.batchMean === null ? "-" : decimal.format(s.batchMean);
    setLink(s.stopping ? "stopping" : "live");
    if (charts !== null) {
      addPoint(s.point);
      redraw();
    }
  }

  let retryMs = 1000;
  function connect() {
    const source = new EventSource("events");
    source.addEventListener("hello", (e) => {
      retryMs = 1000;
      onHello(JSON.parse(e.data));
    });
    source.onmessage = (e) => onSnapshot(JSON.parse(e.data));
    source.onerror = () => {
      // While the browser reconnects by itself (the server went away), readyState is
      // CONNECTING. A refusal (401, 503: too many viewers) closes the stream for good: ask why,
      // then open a new one later.
      if (source.readyState !== EventSource.CLOSED) {
        setLink("reconnecting");
        return;
      }
      fetch("events", { method: "HEAD" }).then((r) => r.status, () => 0).then((status) => {
        if (status === 401) {
          setLink("refused", "token needed: reload the page");
          return;
        }
        setLink("reconnecting");
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 10_000);
      });
    };
  }

  addEventListener("resize", () => {
    if (charts === null) return;
    for (const [key, u] of Object.entries(charts)) {
      u.setSize({ width: $(`chart-${key}`).clientWidth, height: 190 });
    }
  });

  // For the browser tests, and for anyone curious in the console.
  globalThis.msgserverStatus = {
    data,
    charts: () => charts,
    latest: () => latest,
    received: () => received,
  };
  connect();
})();
