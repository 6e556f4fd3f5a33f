// The Veil aggregator dashboard: a client of the public query API only
// (/data-packages, /studies, /metadata, /study-periods, /uploads and
// /data-packages/{id}/chart), with the same x-api-key a script would send.
// Everything is built with DOM calls and textContent, never from HTML
// strings: site names and cell values come from uploads.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const NONE = "cumulus__none";
  const KEY_STORE = "veil-aggregator-api-key";
  // Okabe–Ito: distinguishable with the common colour-vision deficiencies.
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#332288", "#999933"];

  const state = { key: sessionStorage.getItem(KEY_STORE) || "", packages: [], metadata: {}, periods: {}, uploads: [], chart: null, query: null };

  // ---- small helpers ------------------------------------------------------

  function make(ns, tag, attrs, children) {
    const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children || []) node.append(child instanceof Node ? child : String(child));
    return node;
  }
  const el = (tag, attrs, ...children) => make(null, tag, attrs, children);
  const svg = (tag, attrs, ...children) => make(SVG_NS, tag, attrs, children);

  const say = (text) => { $("status").textContent = text; };
  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }
  function fail(error) {
    say("");
    showError(error.message || String(error));
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, as = "json") {
    const response = await fetch(path, { headers: { "x-api-key": state.key }, cache: "no-cache" });
    if (response.status === 401) {
      signOut(`The API key was refused: ${(await response.text()).trim()}`);
      throw new ApiError(401, "signed out");
    }
    if (!response.ok) throw new ApiError(response.status, `The aggregator answered ${response.status}: ${(await response.text()).trim()}`);
    return as === "json" ? response.json() : response.text();
  }

  /// A value as people read it.
  function label(value) {
    if (value === null || value === undefined) return "(all)";
    if (value === NONE) return "none recorded";
    return String(value);
  }
  /// A stable key for a JSON value (the API's values are strings, numbers, booleans or null).
  const keyOf = (value) => JSON.stringify(value === undefined ? null : value);

  /// The API's axis order: numbers by value, other values by text, "none" last.
  function axisOrder(a, b) {
    if (a === NONE || b === NONE) return (a === NONE) - (b === NONE);
    if (typeof a === "number" && typeof b === "number") return a - b;
    const [x, y] = [String(a), String(b)];
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function when(stamp) {
    if (!stamp) return "—";
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(stamp);
    return m ? `${m[1]} ${m[2]} UTC` : stamp;
  }

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    const text = String(value);
    return /[",\r\n]/.test(text) || typeof value === "string" ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function save(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- sign in ------------------------------------------------------------

  function showLogin(message) {
    $("app").hidden = true;
    $("forget-key").hidden = true;
    $("login").hidden = false;
    showError(message || "");
    $("api-key").value = "";
    $("api-key").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    state.key = "";
    showLogin(message);
  }

  // ---- the study overview ---------------------------------------------------

  async function load() {
    showError("");
    say("Loading…");
    try {
      const [packages, metadata, periods, uploads] = await Promise.all([api("/data-packages"), api("/metadata"), api("/study-periods"), api("/uploads")]);
      Object.assign(state, { packages, metadata, periods, uploads });
    } catch (error) {
      if (error.status !== 401) fail(error);
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("forget-key").hidden = false;
    const studies = [...new Set(state.packages.map((p) => p.study))].sort();
    const sites = new Set([...Object.keys(state.metadata), ...state.uploads.map((u) => u.site)]);
    const minCell = state.packages.length ? state.packages[0].min_cell_count : undefined;
    $("network").textContent = `${studies.length} ${studies.length === 1 ? "study" : "studies"} · ${sites.size} ${sites.size === 1 ? "site" : "sites"}` +
      (minCell ? ` · cells under ${minCell} are suppressed` : "");
    $("study").replaceChildren(...studies.map((s) => el("option", { value: s }, s)));
    if (!studies.length) {
      say("No data packages yet: no site has uploaded a study.");
      return;
    }
    const wanted = fromHash();
    $("study").value = studies.includes(wanted.study) ? wanted.study : studies[0];
    say("");
    showStudy(wanted);
  }

  function showStudy(wanted = {}) {
    const study = $("study").value;
    const packages = state.packages.filter((p) => p.study === study).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : b.version.localeCompare(a.version)));
    $("packages").tBodies[0].replaceChildren(...packages.map((p) => {
      const cube = !p.site;
      const name = cube ? el("button", { type: "button", class: "link", "data-package": p.id, title: `Chart ${p.name}` }, p.name) : p.name;
      if (cube) name.addEventListener("click", () => { $("package").value = p.id; fillColumns(); $("chart-form").requestSubmit(); });
      return el("tr", {}, el("td", {}, name), el("td", {}, p.version), el("td", {}, cube ? "cube" : `flat (${p.site})`),
        el("td", { class: "num" }, p.total ?? "—"), el("td", {}, when(p.last_data_update)));
    }));

    const sites = [...new Set([
      ...Object.keys(state.metadata).filter((s) => state.metadata[s][study]),
      ...state.uploads.filter((u) => u.study === study).map((u) => u.site),
    ])].sort();
    $("sites").tBodies[0].replaceChildren(...sites.map((site) => {
      const uploads = Object.values((state.metadata[site] || {})[study] || {}).flatMap((versions) => Object.values(versions)).map((v) => v.last_upload).filter(Boolean).sort();
      const latest = state.uploads.find((u) => u.site === site && u.study === study);
      const status = latest ? el("span", { class: `outcome-${latest.outcome}` }, latest.outcome) : "—";
      const statusCell = el("td", {}, status);
      if (latest && latest.message) statusCell.append(el("div", { class: "small muted" }, latest.message));
      const versions = (state.periods[site] || {})[study] || {};
      const newest = Object.keys(versions).sort().pop();
      const period = newest ? `${versions[newest].earliest_date || "?"} – ${versions[newest].latest_date || "?"} (version ${newest})` : "—";
      return el("tr", {}, el("th", { scope: "row" }, site), el("td", {}, when(uploads[uploads.length - 1] || (latest && latest.received))), statusCell, el("td", {}, period));
    }));

    const cubes = packages.filter((p) => !p.site);
    $("package").replaceChildren(...cubes.map((p) => el("option", { value: p.id }, `${p.name} (v${p.version})`)));
    if (cubes.some((p) => p.id === wanted.package)) $("package").value = wanted.package;
    fillColumns(wanted);
    if (wanted.package && $("package").value === wanted.package) $("chart-form").requestSubmit();
  }

  function currentPackage() {
    return state.packages.find((p) => p.id === $("package").value);
  }

  function fillColumns(wanted = {}) {
    const pkg = currentPackage();
    const columns = pkg ? Object.keys(pkg.columns).filter((c) => c !== "cnt") : [];
    $("column").replaceChildren(...columns.map((c) => el("option", { value: c }, `${c} (${pkg.columns[c].type})`)));
    const first = columns.find((c) => c !== "site");
    $("column").value = columns.includes(wanted.column) ? wanted.column : first || columns[0] || "";
    fillStratifiers(wanted);
    if (wanted.filters) $("filters").value = wanted.filters.join("\n");
    if (wanted.kind) for (const radio of document.querySelectorAll("input[name=kind]")) radio.checked = radio.value === wanted.kind;
  }

  function fillStratifiers(wanted = {}) {
    const pkg = currentPackage();
    const column = $("column").value;
    const others = pkg ? Object.keys(pkg.columns).filter((c) => c !== "cnt" && c !== column) : [];
    const keep = wanted.stratifier !== undefined ? wanted.stratifier : $("stratifier").value;
    $("stratifier").replaceChildren(el("option", { value: "" }, "(nothing: one series)"), ...others.map((c) => el("option", { value: c }, c)));
    $("stratifier").value = others.includes(keep) ? keep : "";
  }

  // ---- the chart --------------------------------------------------------------

  function readForm() {
    return {
      study: $("study").value,
      package: $("package").value,
      column: $("column").value,
      stratifier: $("stratifier").value,
      filters: $("filters").value.split("\n").map((f) => f.trim()).filter(Boolean),
      kind: document.querySelector("input[name=kind]:checked").value,
    };
  }

  function toHash(q) {
    const p = new URLSearchParams();
    for (const k of ["study", "package", "column", "stratifier", "kind"]) if (q[k]) p.set(k, q[k]);
    for (const f of q.filters) p.append("filter", f);
    return p.toString();
  }

  function fromHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const q = {};
    for (const k of ["study", "package", "column", "stratifier", "kind"]) if (p.has(k)) q[k] = p.get(k);
    if (p.has("filter")) q.filters = p.getAll("filter");
    return q;
  }

  async function showChart() {
    const q = readForm();
    if (!q.package || !q.column) return;
    const params = new URLSearchParams({ column: q.column });
    if (q.stratifier) params.set("stratifier", q.stratifier);
    for (const f of q.filters) params.append("filter", f);
    // The x values to show: those of the answer, and those of the same
    // column over everything, less what a filter on that column excludes;
    // a value there but absent from a series was suppressed in it.
    const domainParams = new URLSearchParams({ column: q.column });
    for (const f of q.filters) if (f.split(",").every((alternative) => alternative.split(":")[0].trim() === q.column)) domainParams.append("filter", f);
    showError("");
    say("Loading the chart…");
    let chart, domain;
    try {
      const base = `/data-packages/${encodeURIComponent(q.package)}/chart?`;
      [chart, domain] = await Promise.all([api(base + params), api(base + domainParams)]);
    } catch (error) {
      if (error.status !== 401) fail(error);
      return;
    }
    chart.domain = domain.data.flatMap((d) => d.rows.map(([x]) => x));
    state.chart = chart;
    state.query = q;
    history.replaceState(null, "", `#${toHash(q)}`);
    render(model(chart, q), q);
    say(`Chart updated: ${chart.rowCount} ${chart.rowCount === 1 ? "cell" : "cells"}.`);
  }

  /// Series × x values; a cell absent from the API's answer is suppressed.
  /// Without a stratifier or filter the one series is the whole domain.
  function model(chart, q) {
    const series = chart.data.map((d) => ({
      value: q.stratifier ? d.stratifier : null,
      name: q.stratifier ? label(d.stratifier) : "count",
      cells: new Map(d.rows.map(([x, n]) => [keyOf(x), n])),
    }));
    const xs = new Map();
    for (const d of chart.data) for (const [x] of d.rows) xs.set(keyOf(x), x);
    for (const x of chart.domain || []) xs.set(keyOf(x), x);
    // Sums over sites that some site left out of: lower bounds.
    const partial = new Set((chart.partial || []).map((p) => `${keyOf(q.stratifier ? p.stratifier : null)} ${keyOf(p.value)}`));
    return { series, xs: [...xs.values()].sort(axisOrder), partial };
  }

  function render(m, q) {
    const pkg = currentPackage();
    const minCell = pkg ? pkg.min_cell_count : undefined;
    const where = q.filters.length ? ` where ${q.filters.join(" and ")}` : "";
    $("chart-caption").textContent = `${pkg.name} (version ${pkg.version}): count by ${q.column}${q.stratifier ? `, per ${q.stratifier}` : ""}${where}`;
    $("figure").hidden = false;
    $("numbers-block").hidden = false;
    if (!m.xs.length) {
      $("chart").replaceChildren(el("p", {}, "No cell passes these filters (or every one is suppressed)."));
      $("legend").replaceChildren();
      $("numbers").replaceChildren();
      return;
    }
    $("chart").replaceChildren(draw(m, q.kind, minCell));
    $("legend").replaceChildren(
      ...m.series.map((s, i) => {
        // Set through the DOM, not a style attribute, which the page's CSP forbids.
        const swatch = el("span", { class: "swatch" });
        swatch.style.background = PALETTE[i % PALETTE.length];
        return el("li", {}, swatch, s.name);
      }),
      el("li", {}, el("span", { class: "swatch suppressed-mark" }), `suppressed (fewer than ${minCell ?? "the minimum"})`),
      ...(m.partial.size ? [el("li", {}, el("span", { class: "swatch partial-mark" }), "at least (a site suppressed its part)")] : []),
    );
    $("suppression-note").textContent =
      `Sites never send a count under ${minCell ?? "the network's minimum"}, so a missing cell is shown as suppressed, not as zero: ` +
      "it may be none or a few. A count over several sites adds the sites that reported it, so where one site suppressed the cell it is a lower bound, marked ≥ and drawn hollow.";
    $("numbers").replaceChildren(...table(m, q, minCell));
  }

  function table(m, q, minCell) {
    const head = el("tr", {}, el("th", { scope: "col" }, q.column), ...m.series.map((s) => el("th", { scope: "col", class: "num" }, s.name)));
    const rows = m.xs.map((x) => el("tr", {}, el("th", { scope: "row" }, label(x)), ...m.series.map((s) => {
      const n = s.cells.get(keyOf(x));
      const at = { "data-series": keyOf(s.value), "data-x": keyOf(x) };
      if (n === undefined) return el("td", { ...at, class: "suppressed", "data-suppressed": "true", title: `fewer than ${minCell}` }, "suppressed");
      const partial = m.partial.has(`${keyOf(s.value)} ${keyOf(x)}`);
      return el("td", { ...at, class: "num", "data-value": n, "data-partial": partial ? "true" : undefined, title: partial ? "at least: a site suppressed its part" : undefined },
        `${partial ? "≥ " : ""}${n.toLocaleString("en-US")}`);
    })));
    return [el("thead", {}, head), el("tbody", {}, ...rows)];
  }

  /// Round axis ticks: 0 … top in steps of 1, 2 or 5 × 10^k, about five of them.
  function ticks(max) {
    let step = 10 ** Math.floor(Math.log10(Math.max(max, 1) / 5));
    for (const f of [1, 2, 5, 10]) if (max / (step * f) <= 5) { step *= f; break; }
    const top = Math.max(step, Math.ceil(max / step) * step);
    const out = [];
    for (let v = 0; v <= top + step / 2; v += step) out.push(v);
    return { top, ticks: out };
  }

  function draw(m, kind, minCell) {
    const W = 880, H = 420, left = 70, right = 16, top = 14;
    const labels = m.xs.map(label);
    const band = (W - left - right) / m.xs.length;
    const rotate = labels.some((l) => l.length * 7 > band - 4);
    const bottom = rotate ? 30 + Math.min(110, 6.5 * Math.max(...labels.map((l) => l.length))) : 52;
    const plotH = H - top - bottom;
    const base = top + plotH;
    const values = m.series.flatMap((s) => [...s.cells.values()]);
    const axis = ticks(Math.max(1, ...values));
    const y = (v) => base - (v / axis.top) * plotH;
    const cx = (i) => left + band * (i + 0.5);
    const n = m.series.length;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-caption", id: "chart-svg", "data-kind": kind });
    root.append(svg("defs", {}, svg("pattern", { id: "hatch", width: 4, height: 4, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 4, stroke: "#8c959f", "stroke-width": 1.5 }))));

    const yAxis = svg("g", { class: "axis" });
    for (const t of axis.ticks) {
      yAxis.append(svg("line", { class: "grid-line", x1: left, x2: W - right, y1: y(t), y2: y(t) }));
      yAxis.append(svg("text", { x: left - 8, y: y(t) + 4, "text-anchor": "end" }, t.toLocaleString("en-US")));
    }
    yAxis.append(svg("text", { transform: `translate(16 ${top + plotH / 2}) rotate(-90)`, "text-anchor": "middle" }, "count"));
    yAxis.append(svg("line", { x1: left, x2: W - right, y1: base, y2: base }));
    root.append(yAxis);

    const xAxis = svg("g", { class: "axis" });
    labels.forEach((l, i) => {
      const at = base + 26;
      xAxis.append(rotate
        ? svg("text", { transform: `translate(${cx(i) + 4} ${at}) rotate(-40)`, "text-anchor": "end" }, l)
        : svg("text", { x: cx(i), y: at, "text-anchor": "middle" }, l));
    });
    root.append(xAxis);

    // Bars share a band; line points sit at its centre. A suppressed cell
    // is a hatched mark just under the axis, in its series' slot and colour.
    const groupW = band * 0.8;
    const barW = groupW / n;
    const slot = (i, k) => (kind === "bar" ? left + band * i + band * 0.1 + barW * (k + 0.5) : cx(i) + (k - (n - 1) / 2) * Math.min(9, band / n));
    m.series.forEach((s, k) => {
      const colour = PALETTE[k % PALETTE.length];
      const g = svg("g", { class: "series", "data-series": keyOf(s.value) });
      let path = "";
      let open = false;
      m.xs.forEach((x, i) => {
        const v = s.cells.get(keyOf(x));
        const at = { "data-series": keyOf(s.value), "data-x": keyOf(x) };
        if (v === undefined) {
          open = false;
          g.append(svg("rect", { ...at, class: "suppressed-mark", "data-suppressed": "true", x: slot(i, k) - 4.5, y: base + 4, width: 9, height: 9, fill: "url(#hatch)", stroke: colour },
            svg("title", {}, `${s.name}, ${label(x)}: suppressed (fewer than ${minCell})`)));
          return;
        }
        // A lower bound is drawn hollow (a bar pale, outlined).
        const partial = m.partial.has(`${keyOf(s.value)} ${keyOf(x)}`);
        const title = svg("title", {}, `${s.name}, ${label(x)}: ${partial ? "at least " : ""}${v.toLocaleString("en-US")}`);
        const mark = { ...at, "data-value": v, "data-partial": partial ? "true" : undefined, stroke: colour };
        if (kind === "bar") {
          g.append(svg("rect", { ...mark, class: "value", x: slot(i, k) - barW / 2 + 0.5, y: y(v), width: Math.max(1, barW - 1), height: base - y(v), fill: colour, "fill-opacity": partial ? 0.3 : 1 }, title));
        } else {
          path += `${open ? "L" : "M"}${cx(i).toFixed(1)} ${y(v).toFixed(1)}`;
          open = true;
          g.append(svg("circle", { ...mark, class: "value point", cx: cx(i), cy: y(v), r: partial ? 4 : 3.5, fill: partial ? "#fff" : colour, "stroke-width": 2 }, title));
        }
      });
      if (path) g.prepend(svg("path", { d: path, fill: "none", stroke: colour, "stroke-width": 2 }));
      root.append(g);
    });
    return root;
  }

  function downloadChart() {
    const { chart, query: q } = state;
    if (!chart) return;
    const m = model(chart, q);
    const header = [q.column, ...(q.stratifier ? [q.stratifier] : []), "cnt", "suppressed"];
    const lines = [header.map(csvCell).join(",")];
    for (const s of m.series) {
      for (const x of m.xs) {
        const n = s.cells.get(keyOf(x));
        lines.push([x, ...(q.stratifier ? [s.value] : []), n, n === undefined].map(csvCell).join(","));
      }
    }
    save(`${q.package}__${q.column}${q.stratifier ? `__by_${q.stratifier}` : ""}.csv`, `${lines.join("\r\n")}\r\n`);
  }

  async function downloadTable() {
    const id = $("package").value;
    try {
      save(`${id}.csv`, await api(`/data-packages/${encodeURIComponent(id)}/download?type=csv`, "text"));
    } catch (error) {
      if (error.status !== 401) fail(error);
    }
  }

  // ---- wiring -------------------------------------------------------------------

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    load();
  });
  $("forget-key").addEventListener("click", () => signOut(""));
  $("study").addEventListener("change", () => showStudy());
  $("package").addEventListener("change", () => fillColumns());
  $("column").addEventListener("change", () => fillStratifiers());
  $("chart-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showChart();
  });
  $("download-chart").addEventListener("click", downloadChart);
  $("download-table").addEventListener("click", downloadTable);

  if (state.key) load();
  else showLogin("");
})();
