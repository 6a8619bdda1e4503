// The enformer-batch serve page: a region's tracks, edits scored on the server, a mutagenesis heat map and, with
// --genes, a gene look-up and each edit's effect on the genes in range.
// Plain browser JavaScript; plots with the vendored uPlot. Every number shown comes from the JSON API.
"use strict";

const COLOURS = ["#1f6feb", "#d1495b", "#2a9d8f", "#e9a03b", "#7b5ea7", "#3d405b", "#8ab17d", "#b5838d"];
const BASES = "ACGT";
const SEQUENCE_SHOWN = 120; // bases drawn in the sequence strip
const token = new URLSearchParams(location.search).get("token");

const state = {
  info: null, region: null, sequence: null, edits: [], lastEdit: null, selection: null, gene: null,
  regionPlot: null, editPlot: null, diffPlot: null,
};
window.serveState = state; // for tests and the curious

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; return; }
  box.textContent = String(error.message || error);
  box.hidden = false;
}

function selectedTracks() {
  return [...document.querySelectorAll("#track-picker input:checked")].map((x) => x.value);
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
}

function parseRegion(text) {
  const m = /^\s*([^:\s]+):([\d,]+)-([\d,]+)\s*$/.exec(text);
  if (!m) throw new Error("region: write chr:start-end (0-based half-open)");
  return { chrom: m[1], start: +m[2].replace(/,/g, ""), end: +m[3].replace(/,/g, "") };
}

// --- plots -----------------------------------------------------------------------------------------

function plotWidth(el) { return Math.max(400, el.clientWidth || 700); }

// A vertical line at each of ``marks`` (bp): the edit on the plots of its window.
function markPlugin(marks) {
  return {
    hooks: {
      draw: (u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "rgba(209, 73, 91, 0.55)";
        ctx.setLineDash([4, 3]);
        ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
        for (const m of marks) {
          const x = Math.round(u.valToPos(m, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        }
        ctx.restore();
      },
    },
  };
}

function linePlot(el, old, title, xs, series, extra = {}) {
  if (old) old.destroy();
  el.innerHTML = "";
  const opts = {
    title, width: plotWidth(el), height: extra.height || 220,
    scales: { x: { time: false, ...(extra.range ? { range: () => extra.range } : {}) } },
    axes: [{ values: (u, ticks) => ticks.map((t) => t.toLocaleString()) }, { size: 60 }],
    series: [{ label: "bp" }, ...series.map((s) => ({ points: { show: false }, ...s.style }))],
    legend: { show: !extra.noLegend, live: false },
    cursor: { drag: { x: true, y: false } },
    plugins: extra.marks ? [markPlugin(extra.marks)] : [],
  };
  return new uPlot(opts, [xs, ...series.map((s) => s.values)], el);
}

function drawRegion(answer) {
  const tracks = Object.keys(answer.values);
  const g = state.gene; // the picked gene's TSS, marked while it is in view
  const marks = g && g.chrom === answer.chrom && g.tss >= answer.start && g.tss < answer.end ? [g.tss] : null;
  const stepped = uPlot.paths.stepped({ align: 1 });
  const series = tracks.map((t, i) => ({
    values: answer.values[t], style: { label: t, stroke: COLOURS[i % COLOURS.length], width: 1.5, paths: stepped },
  }));
  state.regionPlot = linePlot($("region-plot"), state.regionPlot,
    `${answer.chrom}:${answer.start.toLocaleString()}-${answer.end.toLocaleString()} (${answer.bin_size}-bp bins)`,
    answer.bins, series, marks ? { marks } : {});
  $("region-source").textContent = answer.source === "atlas" ? "from the atlas" : "predicted now (no atlas)";
}

const EDIT_VIEW_BP = 12000; // the edit plots open on this much around the edit; drag to zoom, double-click for all

function drawEdit(answer) {
  const tracks = Object.keys(answer.ref).slice(0, 4);
  const overlay = [], difference = [];
  tracks.forEach((t, i) => {
    const colour = COLOURS[i % COLOURS.length];
    overlay.push({ values: answer.ref[t], style: { label: `${t} reference`, stroke: colour, width: 1, dash: [3, 3],
                                                   alpha: 0.8 } });
    overlay.push({ values: answer.alt[t], style: { label: `${t} edited`, stroke: colour, width: 1.6 } });
    difference.push({ values: answer.alt[t].map((a, b) => (a === null || answer.ref[t][b] === null ? null :
      a - answer.ref[t][b])), style: { label: t, stroke: colour, width: 1.4 } });
  });
  const centre = answer.start;
  const range = [Math.max(answer.bins[0], centre - EDIT_VIEW_BP / 2), centre + EDIT_VIEW_BP / 2];
  const marks = [answer.start];
  const el = $("edit-plot");
  state.editPlot = linePlot(el, state.editPlot, `${answer.name}: ${answer.chrom}:${answer.start}-${answer.end}`,
    answer.bins, overlay, { range, marks, noLegend: true, height: 200 });
  state.diffPlot = linePlot($("diff-plot"), state.diffPlot, "edited − reference", answer.bins, difference,
    { range, marks, noLegend: true, height: 140 });
  const legend = $("edit-legend");
  legend.innerHTML = "";
  tracks.forEach((t, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLOURS[i % COLOURS.length];
    item.append(swatch, t);
    legend.append(item);
  });
  const note = document.createElement("span");
  note.className = "dim";
  note.textContent = "dashed: reference · solid: edited · red line: the edit";
  legend.append(note);
  el.dataset.edit = answer.name;
  el.dataset.bins = String(answer.bins.length);
  $("edit-title").textContent = `${answer.name} · ${tracks.length} track${tracks.length > 1 ? "s" : ""} · ` +
    "drag to zoom, double-click for the whole window";
}

function drawScores(answer) {
  const scores = state.info.scores;
  const tracks = [...new Set(Object.keys(answer.scores).map((k) => k.slice(k.indexOf(":") + 1)))];
  const table = $("scores");
  table.innerHTML = "";
  const head = table.createTHead().insertRow();
  ["track", ...scores].forEach((s) => { const th = document.createElement("th"); th.textContent = s; head.append(th); });
  const body = table.createTBody();
  for (const t of tracks) {
    const row = body.insertRow();
    row.insertCell().textContent = t;
    for (const s of scores) {
      const key = `${s}:${t}`;
      const cell = row.insertCell();
      const v = answer.scores[key];
      cell.dataset.key = key;
      if (v !== undefined) {
        cell.dataset.value = v === null ? "" : String(v);
        cell.textContent = fmt(v);
        if (v > 0) cell.className = "pos"; else if (v < 0) cell.className = "neg";
      }
    }
  }
  table.dataset.edit = answer.name;
}

// The gene effects of an edit on one track (picked among the edit's tracks): one row per gene in range, largest
// |value| first, nulls last (a gene in range through its TSS flank alone has no exon bins, so no SED; a track of
// the other strand is null too).
function drawGenes(answer) {
  const table = $("gene-effects");
  table.innerHTML = "";
  table.dataset.edit = answer.name;
  if (!answer.genes) {
    $("gene-status").textContent = answer.genes === null ? `not scored (status ${answer.status})` : "";
    table.dataset.genes = "0";
    return;
  }
  const tracks = [...new Set(Object.keys(answer.scores).map((k) => k.slice(k.indexOf(":") + 1)))];
  const picker = $("gene-track"), kept = picker.value;
  if ([...picker.options].map((o) => o.value).join() !== tracks.join()) {
    picker.innerHTML = "";
    tracks.forEach((t) => { const o = document.createElement("option"); o.value = o.textContent = t; picker.append(o); });
    picker.value = tracks.includes(kept) ? kept : tracks[0];
  }
  const key = `${$("gene-score").value}:${picker.value}`;
  const value = (g) => (g.scores[key] === undefined ? null : g.scores[key]);
  const genes = [...answer.genes].sort((a, b) => (value(b) === null ? -1 : Math.abs(value(b))) -
                                                 (value(a) === null ? -1 : Math.abs(value(a))));
  const max = Math.max(1e-30, ...genes.map(value).filter((v) => v !== null).map(Math.abs));
  const head = table.createTHead().insertRow();
  [["gene", "name and strand; the gene_id on hover"],
   ["TSS dist", "the edit's start minus the gene's nearest TSS, in the gene's orientation (+: downstream)"],
   [key, "as score-variants --genes writes it for this allele"], ["", ""]].forEach(([text, title]) => {
    const th = document.createElement("th"); th.textContent = text; th.title = title; head.append(th);
  });
  const body = table.createTBody();
  for (const g of genes) {
    const row = body.insertRow();
    row.dataset.gene = g.gene_id;
    const name = row.insertCell();
    const strand = document.createElement("span");
    strand.className = "dim";
    strand.textContent = g.strand === "+" ? " +" : " −";
    name.append(g.gene_name, strand);
    name.title = g.gene_id;
    row.insertCell().textContent = g.tss_distance.toLocaleString();
    const v = value(g), cell = row.insertCell();
    cell.dataset.key = key;
    cell.dataset.value = v === null ? "" : String(v);
    cell.textContent = fmt(v);
    if (v > 0) cell.className = "pos"; else if (v < 0) cell.className = "neg";
    const bar = document.createElement("i"); // |value| against the largest in the table
    bar.className = "bar " + (v < 0 ? "neg" : "pos");
    bar.style.width = v === null ? "0" : `${(100 * Math.abs(v) / max).toFixed(1)}%`;
    const barCell = row.insertCell();
    barCell.className = "bar-cell";
    barCell.append(bar);
  }
  $("gene-status").textContent = genes.length ? `${genes.length} gene${genes.length > 1 ? "s" : ""} in range of ` +
    answer.name : `no gene in range of ${answer.name}'s window`;
  table.dataset.genes = String(genes.length);
  table.dataset.key = key;
}

function drawHeat(answer, track, score) {
  const canvas = $("heat");
  const key = `${score}:${track}`;
  const values = answer.scores[key];
  const positions = [...new Set(answer.pos)];
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 560, left = 26, top = 8, rowH = 24;
  const height = top + 4 * rowH + 66;
  canvas.width = width * ratio; canvas.height = height * ratio; canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, width, height);
  const cellW = (width - left - 8) / positions.length;
  const max = Math.max(1e-30, ...values.filter((v) => v !== null).map(Math.abs));
  const colour = (v) => {
    const x = Math.min(1, Math.abs(v) / max);
    const [r, g, b] = v >= 0 ? [209, 73, 91] : [31, 111, 235];
    return `rgb(${Math.round(255 - (255 - r) * x)},${Math.round(255 - (255 - g) * x)},${Math.round(255 - (255 - b) * x)})`;
  };
  ctx.font = "12px DejaVu Sans Mono, monospace"; ctx.textBaseline = "middle";
  for (let r = 0; r < 4; r++) { ctx.fillStyle = "#1d232b"; ctx.fillText(BASES[r], 8, top + r * rowH + rowH / 2); }
  const refs = {};
  answer.pos.forEach((p, i) => { refs[p] = answer.ref[i]; });
  const every = Math.max(1, Math.ceil(positions.length / Math.floor((width - left) / 70)));
  positions.forEach((p, c) => {
    const x = left + c * cellW;
    for (let r = 0; r < 4; r++) {
      if (refs[p] === BASES[r]) { ctx.fillStyle = "#eef0f3"; ctx.fillRect(x, top + r * rowH, cellW - 1, rowH - 1); }
    }
    if (c % every === 0) {
      ctx.fillStyle = "#6b7480";
      ctx.fillText(`${refs[p]} ${p.toLocaleString()}`, x + 2, top + 4 * rowH + 10);
    }
  });
  answer.pos.forEach((p, i) => {
    const c = positions.indexOf(p), r = BASES.indexOf(answer.alt[i]);
    if (values[i] === null || r < 0) return;
    ctx.fillStyle = colour(values[i]);
    ctx.fillRect(left + c * cellW, top + r * rowH, cellW - 1, rowH - 1);
  });
  ctx.fillStyle = "#1d232b";
  ctx.font = "12px system-ui, DejaVu Sans, sans-serif";
  ctx.fillText(`${answer.region} · ${key} · largest |score| ${fmt(max)}`, left, top + 4 * rowH + 32);
  ctx.fillStyle = "#6b7480";
  ctx.fillText("red: up · blue: down · grey: the reference base", left, top + 4 * rowH + 50);
  canvas.dataset.region = answer.region;
  canvas.dataset.cells = String(values.length);
}

// --- the sequence strip ------------------------------------------------------------------------------

async function loadSequence(chrom, centre) {
  const length = state.info.chromosomes[chrom];
  const start = Math.max(0, Math.min(centre - SEQUENCE_SHOWN / 2, length - SEQUENCE_SHOWN));
  const end = Math.min(length, start + SEQUENCE_SHOWN);
  state.sequence = await api(`/api/sequence?region=${encodeURIComponent(`${chrom}:${start}-${end}`)}`);
  drawSequence();
}

function drawSequence() {
  const s = state.sequence, box = $("sequence");
  if (!s) return;
  box.innerHTML = "";
  const tick = document.createElement("span");
  tick.className = "tick";
  tick.textContent = `${s.chrom}:${s.start.toLocaleString()} `;
  box.append(tick);
  const e = state.lastEdit, sel = state.selection;
  [...s.sequence].forEach((base, i) => {
    const q = s.start + i;
    const span = document.createElement("span");
    span.textContent = base;
    span.dataset.pos = String(q);
    let cls = BASES.includes(base) ? base : "N";
    if (e && e.chrom === s.chrom && q >= e.start && q < Math.max(e.end, e.start + 1)) cls += " edited";
    if (sel && q >= sel.start && q < sel.end) cls += " selected";
    span.className = cls;
    box.append(span);
  });
}

function onBaseClick(event) {
  const q = event.target.dataset && event.target.dataset.pos;
  if (q === undefined) return;
  const pos = +q, s = state.sequence;
  if (event.shiftKey) {
    const anchor = state.anchor === undefined ? pos : state.anchor;
    state.anchor = state.anchor === undefined ? pos : undefined;
    state.selection = { start: Math.min(anchor, pos), end: Math.max(anchor, pos) + 1 };
    $("mut-start").value = state.selection.start;
    $("mut-end").value = state.selection.end;
    drawSequence();
    return;
  }
  const ref = s.sequence[pos - s.start];
  const alt = BASES[(BASES.indexOf(ref) + 1) % 4] || "A";
  $("edit-name").value = `snv_${s.chrom}_${pos + 1}_${ref}_${alt}`;
  $("edit-chrom").value = s.chrom;
  $("edit-start").value = pos;
  $("edit-end").value = pos + 1;
  $("edit-sequence").value = alt;
  submitEdit();
}

// --- actions ---------------------------------------------------------------------------------------

async function showRegion() {
  showError(null);
  try {
    const r = parseRegion($("region").value);
    state.region = r;
    const tracks = selectedTracks().join(",");
    const q = `region=${encodeURIComponent(`${r.chrom}:${r.start}-${r.end}`)}&tracks=${encodeURIComponent(tracks)}`;
    // The strip stays on the last edit while it is in the region (a redraw for other tracks keeps it in view),
    // else on the picked gene's TSS.
    const e = state.lastEdit, g = state.gene;
    const inside = (chrom, q) => chrom === r.chrom && q >= r.start && q < r.end;
    const focus = e && inside(e.chrom, e.start) ? e.start : g && inside(g.chrom, g.tss) ? g.tss
      : Math.floor((r.start + r.end) / 2);
    const [view] = await Promise.all([api(`/api/atlas?${q}`), loadSequence(r.chrom, focus)]);
    drawRegion(view);
    if (!$("edit-chrom").value) $("edit-chrom").value = r.chrom;
  } catch (error) { showError(error); }
}

// The region around a gene: the gene and some flank; one longer than the view allows is shown around its TSS.
function geneRegion(g) {
  const limit = state.info.limits.atlas_bp, length = state.info.chromosomes[g.chrom];
  const pad = Math.max(2048, Math.round((g.end - g.start) / 10));
  let lo = g.start - pad, hi = g.end + pad;
  if (hi - lo > limit) { lo = g.tss - Math.floor(limit / 2); hi = lo + limit; }
  if (lo < 0) { hi -= lo; lo = 0; }
  if (hi > length) { lo = Math.max(0, lo - (hi - length)); hi = length; }
  return `${g.chrom}:${lo}-${hi}`;
}

async function pickGene() {
  showError(null);
  const name = $("gene-name").value.trim();
  if (!name) return;
  try {
    const answer = await api(`/api/gene?name=${encodeURIComponent(name)}`);
    const g = answer.genes[0];
    state.gene = g;
    const others = answer.matches > 1 ? ` · ${answer.matches - 1} more of that name, e.g. on ` +
      answer.genes.slice(1, 3).map((x) => x.chrom).join(", ") : "";
    $("gene-info").textContent = `${g.gene_name} (${g.gene_id}) ${g.chrom}:${g.start.toLocaleString()}-` +
      `${g.end.toLocaleString()} ${g.strand} · TSS ${g.tss.toLocaleString()}${others}`;
    $("region").value = geneRegion(g);
    $("edit-chrom").value = g.chrom;
    await showRegion();
    document.getElementById("gene-form").dataset.gene = g.gene_id;
  } catch (error) { showError(error); }
}

function editKind(start, end, sequence) {
  if (!sequence) return "deletion";
  if (start === end) return "insertion";
  if (end - start === 1 && sequence.length === 1) return "SNV";
  return "replacement";
}

function submitEdit() {
  return scoreEdit({
    name: $("edit-name").value.trim() || "edit", chrom: $("edit-chrom").value.trim(),
    start: parseInt($("edit-start").value, 10), end: parseInt($("edit-end").value, 10),
    sequence: $("edit-sequence").value.trim().toUpperCase(),
  }, true);
}

// Score ``edit`` for the selected tracks; ``remember``: add it to the page's edits (not when only the tracks changed).
async function scoreEdit(fields, remember) {
  showError(null);
  const edit = { ...fields, tracks: selectedTracks(), scores: state.info.scores };
  $("edit-kind").textContent = editKind(edit.start, edit.end, edit.sequence);
  $("edit-submit").disabled = true;
  $("edit-status").textContent = "scoring…";
  const started = performance.now();
  try {
    const answer = await api("/api/edit", edit);
    $("edit-status").textContent = `${editKind(edit.start, edit.end, edit.sequence)} · status ${answer.status} · ` +
      `${Math.round(performance.now() - started)} ms`;
    state.lastEdit = answer;
    if (answer.bins) drawEdit(answer);
    drawScores(answer);
    if (state.info.genes) drawGenes(answer);
    if (remember) rememberEdit(answer);
    const seq = state.sequence;
    if (!seq || seq.chrom !== answer.chrom || answer.start < seq.start || answer.start >= seq.end) {
      await loadSequence(answer.chrom, answer.start); // the strip follows the edit
    } else drawSequence();
  } catch (error) {
    $("edit-status").textContent = "";
    showError(error);
  } finally { $("edit-submit").disabled = false; }
}

function rememberEdit(answer) {
  const row = { name: answer.name, chrom: answer.chrom, start: answer.start, end: answer.end,
                sequence: answer.sequence };
  state.edits = state.edits.filter((e) => e.name !== row.name);
  state.edits.push(row);
  const table = $("edits-list");
  table.innerHTML = "";
  for (const e of state.edits) {
    const tr = table.insertRow();
    [e.name, e.chrom, e.start, e.end, e.sequence || "(deletion)"].forEach((v) => { tr.insertCell().textContent = v; });
  }
  $("download").disabled = state.edits.length === 0;
  const n = state.edits.length + 1;
  $("edit-name").value = `edit${n}`;
}

function editsTsv() {
  return "# name\tchrom\tstart\tend\tsequence (0-based half-open; for enformer-batch edits)\n" +
    state.edits.map((e) => [e.name, e.chrom, e.start, e.end, e.sequence].join("\t")).join("\n") + "\n";
}

function download() {
  const url = URL.createObjectURL(new Blob([editsTsv()], { type: "text/tab-separated-values" }));
  const a = document.createElement("a");
  a.href = url; a.download = "EDITS.tsv";
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function runMutagenesis() {
  showError(null);
  const chrom = (state.sequence && state.sequence.chrom) || $("edit-chrom").value;
  const body = { chrom, start: parseInt($("mut-start").value, 10), end: parseInt($("mut-end").value, 10),
                 tracks: [$("mut-track").value], scores: [$("mut-score").value] };
  $("mut-submit").disabled = true;
  $("mut-status").textContent = `${3 * (body.end - body.start)} mutants…`;
  const started = performance.now();
  try {
    const answer = await api("/api/mutagenesis", body);
    $("mut-status").textContent = `${answer.pos.length} mutants · ${Math.round(performance.now() - started)} ms`;
    drawHeat(answer, body.tracks[0], body.scores[0]);
  } catch (error) {
    $("mut-status").textContent = "";
    showError(error);
  } finally { $("mut-submit").disabled = false; }
}

async function refreshHealth() {
  try {
    const h = await api("/api/health");
    $("health").textContent = `${h.replicas} replica${h.replicas > 1 ? "s" : ""} · ${h.running} running · ` +
      `${h.queued}/${h.queue_limit} queued`;
  } catch (error) { $("health").textContent = "unreachable"; }
}

async function start() {
  try {
    state.info = await api("/api/tracks");
  } catch (error) { showError(error); return; }
  const info = state.info;
  $("model").textContent = `${info.model} · ${info.head} · ${info.tracks.length} tracks`;
  $("mut-limit").textContent = info.limits.mutagenesis_bp;
  const picker = $("track-picker");
  info.tracks.forEach((t, i) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = t.name; box.checked = i < 3;
    label.title = t.description || t.name;
    label.append(box, t.name);
    picker.append(label);
    const opt = document.createElement("option");
    opt.value = opt.textContent = t.name;
    $("mut-track").append(opt);
  });
  info.scores.forEach((s) => { const o = document.createElement("option"); o.value = o.textContent = s; $("mut-score").append(o); });
  if (info.genes) {
    $("gene-form").hidden = false;
    $("gene-section").hidden = false;
    $("gene-name").title = `${info.genes.genes.toLocaleString()} genes from ${info.genes.annotation}`;
    info.genes.scores.forEach((s) => {
      const o = document.createElement("option"); o.value = o.textContent = s; $("gene-score").append(o);
    });
    $("gene-score").value = "logsed";
    const redraw = () => { if (state.lastEdit) drawGenes(state.lastEdit); };
    $("gene-score").addEventListener("change", redraw);
    $("gene-track").addEventListener("change", redraw);
    $("gene-form").addEventListener("submit", (e) => { e.preventDefault(); pickGene(); });
  }
  const params = new URLSearchParams(location.search);
  let region = params.get("region");
  if (!region) {
    const [chrom, length] = Object.entries(info.chromosomes)[0];
    const centre = Math.min(Math.floor(length / 2), 10000), half = Math.min(2048, Math.floor(length / 2));
    region = `${chrom}:${Math.max(0, centre - half)}-${Math.min(length, centre + half)}`;
  }
  $("region").value = region;
  $("region-form").addEventListener("submit", (e) => { e.preventDefault(); showRegion(); });
  $("edit-form").addEventListener("submit", (e) => { e.preventDefault(); submitEdit(); });
  $("mut-form").addEventListener("submit", (e) => { e.preventDefault(); runMutagenesis(); });
  $("sequence").addEventListener("click", onBaseClick);
  $("download").addEventListener("click", download);
  picker.addEventListener("change", () => {
    showRegion();
    const e = state.lastEdit;
    if (e) scoreEdit({ name: e.name, chrom: e.chrom, start: e.start, end: e.end, sequence: e.sequence }, false);
  });
  refreshHealth();
  setInterval(refreshHealth, 5000);
  await showRegion();
  document.body.dataset.ready = "1";
}

window.addEventListener("DOMContentLoaded", start);
window.serveEditsTsv = editsTsv;
