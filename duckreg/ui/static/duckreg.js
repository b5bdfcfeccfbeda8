// duckreg ui: copy buttons, confirmed write actions, "try it", batch jobs, live job progress, the metrics chart.
"use strict";

const csrf = () => document.querySelector('meta[name="duckreg-csrf"]').content;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Duckreg-CSRF": csrf() },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  if (!response.ok || data.error) throw new Error(data.error || response.statusText);
  return data;
}

function toast(text, bad) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = bad ? "bad" : "";
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.hidden = true; }, bad ? 9000 : 2500);
}

function formObject(form) {
  const out = {};
  for (const field of form.querySelectorAll("input[name], select[name], textarea[name]")) out[field.name] = field.value;
  return out;
}

// Write actions: a button or form with data-post, always behind a confirmation.
function wireWrites() {
  for (const el of document.querySelectorAll("[data-post]")) {
    const isForm = el.tagName === "FORM";
    el.addEventListener(isForm ? "submit" : "click", async (event) => {
      event.preventDefault();
      if (!window.confirm(el.dataset.confirm || "Are you sure?")) return;
      const body = isForm ? formObject(el) : JSON.parse(el.dataset.body || "{}");
      try {
        await post(el.dataset.post, body);
        if (el.dataset.then) window.location.href = el.dataset.then; else window.location.reload();
      } catch (error) { toast(error.message, true); }
    });
  }
}

function wireCopy() {
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = button.dataset.copy;
      const pre = button.closest("section").querySelector("pre.example");
      if (pre) pre.textContent = text;
      try { await navigator.clipboard.writeText(text); toast("Copied: " + text); }
      catch (e) { toast("Shown below: select and copy it."); }
    });
  }
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ base64: String(reader.result).split(",", 2)[1] || "" });
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function tryRows(form) {
  if (form.querySelector(".as-json").checked) {
    const rows = JSON.parse(form.querySelector(".json-rows").value || "[]");
    if (!Array.isArray(rows)) throw new Error("The JSON table must be a list of row objects.");
    return rows;
  }
  const rows = [];
  for (const tr of form.querySelectorAll("tr.try-row")) {
    const row = {};
    for (const field of tr.querySelectorAll("[name]")) {
      if (field.dataset.kind === "file") {
        if (field.files.length) row[field.name] = await readFile(field.files[0]);
      } else if (field.value !== "") row[field.name] = field.value;
    }
    rows.push(row);
  }
  return rows;
}

// A result value as text: long lists (embeddings) show their first values and their length.
function cell(value) {
  if (value === null || value === undefined) return "NULL";
  if (Array.isArray(value) && value.length > 12) {
    return "[" + value.slice(0, 8).map((v) => JSON.stringify(v)).join(", ") + `, … ${value.length} values]`;
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function resultTable(data) {
  const table = document.createElement("table");
  table.className = "grid result-rows";
  const head = table.createTHead().insertRow();
  for (const name of data.columns) { const th = document.createElement("th"); th.textContent = name; head.appendChild(th); }
  const body = table.createTBody();
  for (const row of data.rows) {
    const tr = body.insertRow();
    for (const name of data.columns) tr.insertCell().textContent = cell(row[name]);
  }
  return table;
}

function wireTry() {
  for (const form of document.querySelectorAll("form.try")) {
    form.querySelector(".add-row").addEventListener("click", () => {
      const rows = form.querySelector("tbody");
      const copy = rows.querySelector("tr.try-row").cloneNode(true);
      for (const field of copy.querySelectorAll("[name]")) field.value = "";
      rows.appendChild(copy);
    });
    form.querySelector(".as-json").addEventListener("change", (event) => {
      form.querySelector(".json-rows").hidden = !event.target.checked;
      form.querySelector(".try-rows").hidden = event.target.checked;
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = form.querySelector(".result");
      const timing = form.querySelector(".timing");
      result.replaceChildren();
      timing.textContent = "running…";
      try {
        const params = {};
        for (const field of form.querySelectorAll("input.param")) if (field.value !== "") params[field.name] = field.value;
        const data = await post(form.dataset.run, { function: form.dataset.function, rows: await tryRows(form), params });
        result.appendChild(resultTable(data));
        timing.textContent = `${data.rows.length} row(s) in ${(data.seconds * 1000).toFixed(1)} ms`;
        if (data.warnings && data.warnings.length) toast(data.warnings.join("\n"));
      } catch (error) {
        const box = document.createElement("p");
        box.className = "error";
        box.textContent = error.message;
        result.appendChild(box);
        timing.textContent = "";
      }
    });
  }
}

// A table's columns mapped onto the chosen function's inputs: same name first, else the user's pick.
// Only the newest refresh of a form draws its mapping: an older one whose columns arrive late (the page's
// first refresh, overtaken by the user's pick of a table) is dropped, so each input has one select.
const mappingRefreshes = new WeakMap();

async function refreshMapping(form) {
  const box = form.querySelector("fieldset.mapping");
  if (!box) return;
  const refresh = (mappingRefreshes.get(form) || 0) + 1;
  mappingRefreshes.set(form, refresh);
  const inputs = JSON.parse(box.dataset.inputs)[form.elements.function.value] || [];
  const source = form.elements.input.value;
  for (const old of box.querySelectorAll("label")) old.remove();
  const note = box.querySelector("p");
  if (!source || source.startsWith("@")) { note.hidden = false; return; }
  note.hidden = true;
  let columns = [];
  try {
    const response = await fetch(`/api/tables/${encodeURIComponent(source)}/columns`);
    columns = await response.json();
    if (!response.ok) throw new Error(columns.error || response.statusText);
  } catch (error) {
    if (mappingRefreshes.get(form) === refresh) toast(error.message, true);
    return;
  }
  if (mappingRefreshes.get(form) !== refresh) return;
  for (const old of box.querySelectorAll("label")) old.remove();
  const names = columns.map(([column]) => column);
  for (const [name, optional, type] of inputs) {
    const label = document.createElement("label");
    label.append(`${name} ← `);
    const select = document.createElement("select");
    select.dataset.input = name;
    const choices = optional ? ["", ...names] : names;
    for (const column of choices) select.add(new Option(column || "(none)", column));
    // The column of the same name, else (for a required input) the first of the input's type, else the first.
    const same = names.find((c) => c.toLowerCase() === name.toLowerCase());
    const typed = columns.find(([, kind]) => kind === type);
    select.value = same !== undefined ? same : (optional ? "" : (typed ? typed[0] : names[0]));
    label.append(select);
    box.append(label);
  }
}

function wireBatch() {
  for (const form of document.querySelectorAll("form[data-batch]")) {
    form.elements.input.addEventListener("change", () => refreshMapping(form));
    form.elements.function.addEventListener("change", () => refreshMapping(form));
    refreshMapping(form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!window.confirm(form.dataset.confirm)) return;
      const body = formObject(form);
      body.columns = {};
      for (const select of form.querySelectorAll("fieldset.mapping select")) {
        if (select.value) body.columns[select.dataset.input] = select.value;
      }
      try {
        const data = await post(form.dataset.batch, body);
        window.location.href = data.url;
      } catch (error) { toast(error.message, true); }
    });
  }
}

function wireVerify() {
  const button = document.getElementById("verify");
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "hashing…";
    try {
      const response = await fetch(button.dataset.files);
      const files = await response.json();
      const body = document.querySelector("#files tbody");
      for (const file of files) {
        let row = body.querySelector(`tr[data-path="${CSS.escape(file.path)}"]`);
        if (!row) {
          row = body.insertRow();
          row.dataset.path = file.path;
          row.innerHTML = "<td><code></code></td><td class='num'></td><td></td><td class='check'></td>";
          row.querySelector("code").textContent = file.path;
        }
        const check = row.querySelector(".check");
        check.textContent = file.status === "ok" ? "✓ verified" : file.status;
        check.className = "check " + (file.status === "ok" ? "ok" : "bad");
      }
      button.textContent = files.every((f) => f.status === "ok") ? "All files verify" : "Some files do not verify";
    } catch (error) { toast(error.message, true); button.textContent = "Verify sha256"; }
    button.disabled = false;
  });
}

function showJob(job, root) {
  const set = (id, text) => { const el = root.querySelector(id); if (el) el.textContent = text; };
  const status = root.querySelector("#job-status");
  status.textContent = job.status;
  status.className = "status " + job.status.toLowerCase();
  set("#job-message", job.message || "");
  root.querySelector("#job-progress").value = job.percent;
  set("#job-rows", `${job.rows_done} / ${job.rows_total === null ? "?" : job.rows_total}`);
  set("#job-rate", job.rows_per_second || 0);
  set("#job-success", job.success_file ? "written" : "not written");
  set("#job-logs", (job.logs || []).join("\n"));
  const cancel = root.querySelector("#cancel-job");
  if (cancel) cancel.hidden = !job.cancellable;
}

function showJobRow(job, row) {
  const status = row.querySelector(".status");
  status.textContent = job.status;
  status.className = "status " + job.status.toLowerCase();
  row.querySelector("progress").value = job.percent;
  row.querySelector(".rows").textContent = `${job.rows_done} / ${job.rows_total === null ? "?" : job.rows_total}`;
  row.querySelector(".rate").textContent = job.rows_per_second === null ? "" : job.rows_per_second;
  row.querySelector(".success").textContent = job.success_file ? "✓" : "–";
}

const FINAL = ["DONE", "FAILED", "CANCELLED"];

function wireLive() {
  const single = document.querySelector("#job[data-live]");
  if (single) {
    const tick = async () => {
      try {
        const job = await (await fetch(single.dataset.live)).json();
        showJob(job, single);
        if (!FINAL.includes(job.status)) setTimeout(tick, 500);
      } catch (e) { setTimeout(tick, 2000); }
    };
    setTimeout(tick, 300);
  }
  const table = document.querySelector("#jobs[data-live]");
  if (table) {
    const tick = async () => {
      try {
        const jobs = await (await fetch(table.dataset.live)).json();
        const known = new Set([...table.querySelectorAll("tr[data-job]")].map((r) => r.dataset.job));
        if (jobs.some((j) => !known.has(j.name))) { window.location.reload(); return; }
        for (const job of jobs) showJobRow(job, table.querySelector(`tr[data-job="${CSS.escape(job.name)}"]`));
        if (jobs.some((j) => !FINAL.includes(j.status))) setTimeout(tick, 1000); else setTimeout(tick, 5000);
      } catch (e) { setTimeout(tick, 3000); }
    };
    setTimeout(tick, 1000);
  }
}

function drawChart() {
  const canvas = document.getElementById("metrics-chart");
  if (!canvas || !window.Chart) return;
  const palette = ["#b45309", "#1d4ed8", "#15803d", "#7c3aed", "#be123c", "#0e7490"];
  const series = JSON.parse(canvas.dataset.series);
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: JSON.parse(canvas.dataset.versions),
      datasets: series.map((s, i) => ({ label: s.metric, data: s.values, backgroundColor: palette[i % palette.length] })),
    },
    options: { animation: false, responsive: true, plugins: { legend: { position: "bottom" } } },
  });
  canvas.dataset.drawn = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  wireWrites(); wireCopy(); wireTry(); wireBatch(); wireVerify(); wireLive(); drawChart();
});
