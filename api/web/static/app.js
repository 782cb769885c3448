// ocgate's reviewer page: plain JavaScript over the JSON API, no framework and no build step.
// The API key lives in this tab's session storage only; every request sends it, and the key's role (GET /v1/me)
// decides which actions the page shows. The API checks the role again on every action.
"use strict";

(() => {
  const KEY = "ocgate.key";
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  const state = {
    key: null,
    me: null,
    queue: { items: [], cursors: [null], page: 0, next: null, current: -1, selected: new Set() },
    entry: { id: null, version: null, detail: null },
  };

  // Elements ---------------------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || "plain"}`, text });
  }

  const SEVERITY_MARK = { error: "\u2716", warning: "\u26a0", info: "\u2139" };

  // A rule with its severity: the word (and a mark) says the severity, so colour is never the only cue.
  function severityBadge(ruleId, severity) {
    const kind = SEVERITY_MARK[severity] ? severity : "plain";
    return el("span", { class: `badge ${kind}` },
      el("span", { class: "mark", "aria-hidden": "true" }, SEVERITY_MARK[severity] || "\u2022"), " ",
      el("span", { class: "sev" }, severity || "flag"), " ", el("span", { class: "rule" }, ruleId));
  }

  function table(headers, rows, attrs) {
    return el("table", { class: "grid compact", ...(attrs || {}) },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", class: h.num ? "num" : null }, h.label || h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) =>
        el("td", { class: headers[i] && headers[i].num ? "num" : null }, c ?? ""))))));
  }

  function flash(message, bad) {
    const node = $("#flash");
    node.textContent = message || "";
    node.classList.toggle("bad", Boolean(bad));
  }

  const show = (value) => (value === null || value === undefined || value === "" ? "\u2014" : String(value));
  const money = (byCurrency) => Object.entries(byCurrency || {}).map(([c, v]) => `${v} ${c}`).join(", ") || "0";

  // Decimal arithmetic on strings (money and hours are never floats): "1.5" -> {digits: 15n, scale: 1}.
  function decimal(text) {
    const match = /^\s*(-?)(\d*)(?:\.(\d*))?\s*$/.exec(String(text ?? ""));
    if (!match || (match[2] === "" && !match[3])) return null;
    const fraction = match[3] || "";
    const digits = BigInt((match[2] || "0") + fraction) * (match[1] ? -1n : 1n);
    return { digits, scale: fraction.length };
  }

  function cents(value) { // round half to even to two places, as the store's Decimal quantize does
    if (value.scale <= 2) return value.digits * 10n ** BigInt(2 - value.scale);
    const unit = 10n ** BigInt(value.scale - 2);
    const negative = value.digits < 0n;
    const abs = negative ? -value.digits : value.digits;
    let quotient = abs / unit;
    const rest = abs % unit;
    if (rest * 2n > unit || (rest * 2n === unit && quotient % 2n === 1n)) quotient += 1n;
    return negative ? -quotient : quotient;
  }

  function centsText(value) {
    const negative = value < 0n;
    const abs = negative ? -value : value;
    const whole = abs / 100n;
    const part = String(abs % 100n).padStart(2, "0");
    return `${negative ? "-" : ""}${whole}.${part}`;
  }

  // The API ------------------------------------------------------------------------------------------------

  async function api(method, path, options = {}) {
    const headers = { Accept: options.accept || "application/json" };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    if (options.ifMatch !== undefined) headers["If-Match"] = `"${options.ifMatch}"`;
    let body;
    if (options.text !== undefined) {
      headers["Content-Type"] = options.contentType || "text/plain";
      body = options.text;
    } else if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
    } catch (error) {
      return { status: 0, ok: false, data: null, error: { code: "network", message: `the server did not answer (${error})` } };
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
    const result = { status: response.status, ok: response.ok, data, headers: response.headers,
                     error: !response.ok && data && data.error ? data.error : null };
    if (!response.ok && !result.error) result.error = { code: String(response.status), message: response.statusText };
    if (response.status === 401 && path !== "/v1/me") {
      signOut("The API key was refused; sign in again.");
    }
    return result;
  }

  function problem(result) {
    return result.error ? `${result.error.message} (${result.error.code})` : `HTTP ${result.status}`;
  }

  // Signing in and out ---------------------------------------------------------------------------------------

  async function signIn(key) {
    state.key = key;
    const result = await api("GET", "/v1/me");
    if (!result.ok) {
      state.key = null;
      $("#signin-error").textContent = result.status === 401 ? "That API key is unknown or revoked."
        : `Could not sign in: ${problem(result)}`;
      return false;
    }
    sessionStorage.setItem(KEY, key);
    state.me = result.data;
    $("#signin-error").textContent = "";
    $("#signin-key").value = "";
    $("#who").textContent = `${result.data.name} (${result.data.role})`;
    for (const node of $$("[data-needs]")) node.hidden = !result.data.may[node.dataset.needs];
    for (const id of ["#nav", "#signout", "#help-open"]) $(id).hidden = false;
    return true;
  }

  function signOut(message) {
    clearTimeout(previewTimer); // a preview on its way would go out without a key
    previewSeq += 1;
    sessionStorage.removeItem(KEY);
    state.key = null;
    state.me = null;
    state.queue = { items: [], cursors: [null], page: 0, next: null, current: -1, selected: new Set() };
    state.entry = { id: null, version: null, detail: null };
    $("#who").textContent = "";
    for (const id of ["#nav", "#signout", "#help-open"]) $(id).hidden = true;
    for (const node of $$("[data-needs]")) node.hidden = true;
    clear($("#queue tbody"));
    flash(message || "", Boolean(message));
    if (location.hash !== "#/signin") location.hash = "#/signin";
    else route();
  }

  const may = (what) => Boolean(state.me && state.me.may[what]);

  // Views ------------------------------------------------------------------------------------------------------

  function showView(name) {
    for (const view of $$(".view")) view.hidden = view.id !== `view-${name}`;
    for (const link of $$("#nav a")) {
      if (link.dataset.view === name || (name === "entry" && link.dataset.view === "queue")) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  async function route() {
    if (!state.key) {
      showView("signin");
      $("#signin-key").focus();
      return;
    }
    const [, view, id] = (location.hash || "#/queue").split("/");
    if (view === "entry" && /^\d+$/.test(id || "")) {
      showView("entry");
      await openEntry(Number(id));
    } else if (view === "rulesets") {
      showView("rulesets");
      await loadRulesets();
    } else if (view === "invoices") {
      showView("invoices");
      await loadInvoices();
    } else if (view === "overview") {
      showView("overview");
      await loadOverview();
    } else {
      showView("queue");
      if (!state.queue.items.length || state.queue.stale) await loadQueue();
      else renderQueue();
    }
  }

  // The queue ----------------------------------------------------------------------------------------------

  function filterParams() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData($("#filters"))) {
      if (String(value).trim()) params.set(name, String(value).trim());
    }
    if (!params.has("sort")) params.set("sort", "work_date");
    return params;
  }

  async function loadQueue() {
    const params = filterParams();
    const cursor = state.queue.cursors[state.queue.page];
    if (cursor) params.set("cursor", cursor);
    if (!params.has("limit")) params.set("limit", "50");
    params.append("include", "rules"); // each rule with its severity, and the start of the narrative
    params.append("include", "narrative");
    const result = await api("GET", `/v1/review-items?${params}`);
    if (!result.ok) {
      flash(`The queue could not be loaded: ${problem(result)}`, true);
      return;
    }
    state.queue.items = result.data.items;
    state.queue.stale = false;
    state.queue.next = result.data.next_cursor;
    state.queue.selected.clear();
    state.queue.current = Math.min(Math.max(state.queue.current, 0), state.queue.items.length - 1);
    renderQueue();
    loadRuleCounts(params);
  }

  function renderQueue() {
    const reviewer = may("review");
    const rows = state.queue.items.map((item, index) => {
      const rules = (item.rules || item.rule_ids.map((r) => ({ rule_id: r, severity: item.worst_severity })))
        .map((r) => severityBadge(r.rule_id, r.severity));
      const row = el("tr", { "data-id": item.id, "aria-selected": index === state.queue.current ? "true" : "false",
                             class: index === state.queue.current ? "current" : null, onclick: (event) => {
        if (event.target.closest("input,a,button")) return;
        location.hash = `#/entry/${item.id}`;
      } },
      reviewer ? el("td", {}, el("input", { type: "checkbox", class: "pick", "aria-label": `Select entry ${item.id}`,
                                            checked: state.queue.selected.has(item.id), onchange: (event) => {
        if (event.target.checked) state.queue.selected.add(item.id); else state.queue.selected.delete(item.id);
      } })) : null,
      el("td", {}, el("a", { href: `#/entry/${item.id}` }, item.timekeeper_name || item.timekeeper || "(unknown)")),
      el("td", { text: item.work_date }),
      el("td", { text: show(item.law_firm_matter_id) }),
      el("td", { class: "num", text: show(item.hours_billed) }),
      el("td", { class: "num", text: show(item.rate) }),
      el("td", { class: "num", text: show(item.amount) }),
      el("td", { class: "excerpt", text: show(item.narrative_excerpt) }),
      el("td", { class: "rules" }, rules),
      el("td", {}, item.data_quality_flags.map((f) => badge(f, "warning"))),
      el("td", { text: item.portal_reasons.join("; ") }),
      el("td", { text: item.source_system }),
      el("td", { text: item.state }));
      return row;
    });
    clear($("#queue tbody"), rows);
    $("#queue-empty").hidden = rows.length > 0;
    $("#page-next").disabled = !state.queue.next;
    $("#page-first").disabled = state.queue.page === 0;
    $("#page-info").textContent = `Page ${state.queue.page + 1}, ${state.queue.items.length} entries`;
    $("#select-all").checked = false;
  }

  async function loadRuleCounts(params) {
    const query = new URLSearchParams();
    if (params.get("date_from")) query.set("from", params.get("date_from"));
    if (params.get("date_to")) query.set("to", params.get("date_to"));
    if (params.get("client")) query.set("client", params.get("client"));
    const result = await api("GET", `/v1/reports/findings?${query}`);
    if (!result.ok) return;
    clear($("#rule-counts tbody"), (result.data.by.rule || []).map((g) => el("tr", {},
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => {
        $("#filters [name=rule_id]").value = g.key || "";
        applyFilters();
      } }, g.key || "(none)")),
      el("td", { class: "num", text: g.findings }), el("td", { class: "num", text: g.entries }))));
  }

  function applyFilters() {
    state.queue.cursors = [null];
    state.queue.page = 0;
    state.queue.current = 0;
    return loadQueue();
  }

  function moveCurrent(step) {
    const items = state.queue.items;
    if (!items.length) return;
    state.queue.current = Math.min(Math.max(state.queue.current + step, 0), items.length - 1);
    const rows = $$("#queue tbody tr");
    rows.forEach((row, index) => {
      const here = index === state.queue.current;
      row.classList.toggle("current", here);
      row.setAttribute("aria-selected", here ? "true" : "false");
      if (here) row.scrollIntoView({ block: "nearest" });
    });
  }

  async function bulk(action) {
    const reason = $("#bulk-reason").value.trim();
    const items = state.queue.items.filter((i) => state.queue.selected.has(i.id)).map((i) => ({ id: i.id, version: i.version }));
    if (!items.length) {
      $("#bulk-status").textContent = "Select entries first.";
      return;
    }
    const result = await api("POST", "/v1/review-items/bulk", { json: { action, reason: reason || null, items } });
    if (!result.ok) {
      $("#bulk-status").textContent = `Refused: ${problem(result)}`;
      return;
    }
    const failed = result.data.filter((r) => !r.ok);
    $("#bulk-status").textContent = `${result.data.length - failed.length} done, ${failed.length} refused`
      + (failed.length ? `: ${failed.map((r) => `${r.id}: ${r.error.message}`).join("; ")}` : "");
    if (!failed.length) $("#bulk-reason").value = "";
    await loadQueue();
  }

  // One entry ----------------------------------------------------------------------------------------------

  const ENTRY_FIELDS = [
    ["Timekeeper", (r) => `${r.timekeeper_name || ""} ${r.timekeeper_ledes_id ? `(${r.timekeeper_ledes_id})` : ""}`.trim()],
    ["Work date", (r) => r.work_date], ["Client", (r) => r.ledes_client_id || r.client_source_id],
    ["Matter", (r) => r.law_firm_matter_id || r.client_matter_id], ["Hours billed", (r) => r.hours_billed],
    ["Rate", (r) => r.rate && `${r.rate} ${r.currency || ""}`], ["Amount", (r) => r.amount],
    ["Task / activity", (r) => [r.utbms_task_code, r.utbms_activity_code, r.utbms_expense_code].filter(Boolean).join(" / ")],
    ["Narrative", (r) => r.narrative], ["Source", (r) => `${r.source_system || ""} ${r.source_id || ""}`.trim()],
  ];
  const ADJUSTABLE = { "adjust-rate": "rate", "adjust-hours": "hours_billed", "adjust-narrative": "narrative",
                       "adjust-task": "utbms_task_code", "adjust-activity": "utbms_activity_code" };

  async function fetchEntry(id) {
    const result = await api("GET", `/v1/entries/${id}`);
    if (!result.ok) return result;
    const tag = (result.headers.get("etag") || "").replace(/^W\//, "").replace(/"/g, "");
    result.version = tag ? Number(tag) : result.data.version;
    return result;
  }

  async function openEntry(id) {
    const changedEntry = state.entry.id !== id;
    if (changedEntry) {
      for (const form of ["#approve-form", "#reject-form", "#adjust-form"]) $(form).reset();
      for (const input of $$("#adjust-form input, #adjust-form textarea")) delete input.dataset.dirty;
      clear($("#entry-result"));
      $("#entry-result").className = "result";
      $("#entry-conflict").hidden = true;
    }
    const result = await fetchEntry(id);
    if (!result.ok) {
      flash(`Entry ${id} could not be loaded: ${problem(result)}`, true);
      return;
    }
    const index = state.queue.items.findIndex((i) => i.id === id);
    if (index >= 0) state.queue.current = index;
    renderEntry(result.data, result.version);
    if (state.focusAfterOpen) {
      $(state.focusAfterOpen).focus();
      state.focusAfterOpen = null;
    }
  }

  function renderEntry(detail, version) {
    state.entry = { id: detail.id, version, detail };
    const record = detail.entry;
    const flags = detail.data_quality_flags || [];
    $("#entry-title").textContent = `Entry ${detail.id}: ${record.timekeeper_name || ""} on ${record.work_date}`;
    clear($("#entry-fields"),
      ENTRY_FIELDS.flatMap(([label, get]) => [el("dt", { text: label }), el("dd", { text: show(get(record)) })]),
      el("dt", { text: "State" }), el("dd", {}, badge(detail.state, detail.state === "ready" ? "ok" : "plain"),
                                       ` version ${version}`),
      el("dt", { text: "Data quality" }),
      el("dd", { id: "entry-quality" }, flags.length ? flags.map((f) => badge(f, "warning")) : "no flags"),
      detail.pending_record ? [el("dt", { text: "Changed at the source" }),
                               el("dd", { text: JSON.stringify(detail.pending_record) })] : null);
    const findings = detail.violations.map((v) => el("article", { class: `finding ${v.severity}` },
      el("h3", {}, badge(v.severity, v.severity), ` ${v.rule_id}: ${v.title}`,
         v.rule_status !== "active" ? ` (${v.rule_status})` : ""),
      el("p", { text: v.message }),
      v.evidence.length ? table(["Field", "Expected", "Actual"], v.evidence.map((e) =>
        [show(e.field), show(e.expected), show(e.actual)])) : null,
      v.adjustment ? el("p", {}, el("strong", { text: "Proposed write-down: " }),
                        Object.entries(v.adjustment).map(([k, val]) => `${k} ${typeof val === "object" ? JSON.stringify(val) : val}`).join(", ")) : null,
      v.references.length ? el("p", { class: "hint" }, "Guideline: ", v.references.join("; ")) : null,
      v.contributing.length ? el("p", { class: "hint" }, "With entries: ", v.contributing.join(", ")) : null));
    clear($("#entry-findings"), findings.length ? findings : el("p", { text: "No findings." }));
    clear($("#entry-portal"), detail.portal_rejections.length
      ? table(["Invoice", "Line", "Reason", "Code", "Comment"], detail.portal_rejections.map((p) =>
        [show(p.invoice_id), show(p.line_number), p.reason, show(p.reason_code), show(p.comment)]))
      : el("p", { text: "None open." }));
    const needsReason = detail.violations.some((v) => v.severity === "error" && v.rule_status === "active")
      || detail.portal_rejections.length > 0 || flags.length > 0;
    $("#approve-required").textContent = needsReason
      ? "(required: this entry has error findings, a portal rejection or data-quality flags)" : "(optional)";
    $("#approve-reason").setAttribute("aria-required", needsReason ? "true" : "false");
    for (const [id, field] of Object.entries(ADJUSTABLE)) {
      const input = $(`#${id}`);
      if (!input.dataset.dirty) input.value = record[field] ?? "";
    }
    previewAdjustment();
    clear($("#entry-history tbody"), detail.history.slice().reverse().map((h) => el("tr", {},
      el("td", { text: new Date(h.at).toLocaleString() }), el("td", { text: h.action }), el("td", { text: h.actor }),
      el("td", { text: show(h.reason) }), el("td", { text: describeChange(h) }))));
  }

  function describeChange(h) {
    const parts = [];
    if (h.before && h.after && h.before.state !== h.after.state) parts.push(`${h.before.state} \u2192 ${h.after.state}`);
    if (h.before && h.before.values && h.after && h.after.values) {
      for (const [k, v] of Object.entries(h.after.values)) parts.push(`${k}: ${show(h.before.values[k])} \u2192 ${show(v)}`);
    }
    if (h.after && h.after.write_down) parts.push(`write-down ${h.after.write_down}`);
    return parts.join("; ");
  }

  function changes() {
    const record = state.entry.detail ? state.entry.detail.entry : {};
    const out = {};
    for (const [id, field] of Object.entries(ADJUSTABLE)) {
      const value = $(`#${id}`).value.trim();
      if (value !== String(record[field] ?? "")) out[field] = value;
    }
    return out;
  }

  // The re-evaluation before saving: the API adjusts the entry, judges it and undoes it all (a dry run of the very
  // code that saves), so what shows here is what saving stores. Asked again as the reviewer types, once typing
  // pauses; an answer for what is no longer typed is dropped.
  const PREVIEW_DELAY_MS = 300;
  let previewTimer = null;
  let previewSeq = 0;

  function previewAdjustment() {
    clearTimeout(previewTimer);
    const seq = ++previewSeq;
    const node = $("#adjust-preview");
    if (!state.entry.detail || !may("review")) {
      clear(node);
      return;
    }
    const changed = changes();
    if (!Object.keys(changed).length) {
      node.removeAttribute("aria-busy");
      clear(node, el("p", { class: "hint", text: "Change the rate, hours, narrative or a code: the findings the entry "
        + "would then have and the write-down show here before you save." }));
      return;
    }
    node.setAttribute("aria-busy", "true");
    const id = state.entry.id;
    previewTimer = setTimeout(() => runPreview(id, changed, seq), PREVIEW_DELAY_MS);
  }

  async function runPreview(id, changed, seq) {
    const result = await api("POST", `/v1/entries/${id}/adjust/preview`, { json: { changes: changed } });
    if (seq !== previewSeq || state.entry.id !== id) return; // typed on meanwhile, or another entry is open
    const node = $("#adjust-preview");
    node.removeAttribute("aria-busy");
    if (!result.ok) {
      clear(node, el("p", { class: "error", text: `No preview: ${problem(result)}` }));
      return;
    }
    clear(node, renderPreview(result.data));
  }

  function amountText(value) {
    const d = decimal(value);
    return d ? centsText(cents(d)) : show(value);
  }

  const evidenceText = (e) => `${show(e.field)}: expected ${show(e.expected)}, actual ${show(e.actual)}`;

  function renderPreview(p) {
    const money = p.write_down === null || p.write_down === undefined
      ? `No write-down can be worked out (the entry has no amount).`
      : `Write-down ${amountText(p.write_down)}: amount ${amountText(p.amount_before)} \u2192 ${amountText(p.amount_after)}.`;
    const active = p.findings.filter((f) => f.rule_status === "active");
    const outcome = active.length
      ? `If saved, the entry stays ${p.state} with ${active.length} finding${active.length === 1 ? "" : "s"} `
        + `(worst: ${p.worst_severity}).`
      : `If saved, the entry would be ${p.state}: no findings remain.`;
    const moved = [p.cleared.length ? `clears ${p.cleared.join(", ")}` : null,
                   p.new.length ? `newly flagged by ${p.new.join(", ")}` : null].filter(Boolean);
    return [
      el("h3", { text: "Before saving: the entry judged again" }),
      el("p", { class: "preview-money", text: money }),
      el("p", { class: "preview-outcome", text: outcome + (moved.length ? ` It ${moved.join("; ")}.` : "") }),
      p.findings.length ? el("ul", { class: "preview-findings", "aria-label": "Findings that would remain" },
        p.findings.map((f) => el("li", {},
          severityBadge(f.rule_id, f.severity), f.rule_status !== "active" ? ` (${f.rule_status})` : "", " ", f.message,
          f.evidence.length ? el("span", { class: "hint" }, ` (${f.evidence.map(evidenceText).join("; ")})`) : null,
          f.adjustment && f.adjustment.amount !== undefined
            ? el("span", {}, `; proposed write-down ${amountText(f.adjustment.amount)}`) : null))) : null,
      p.proposed_write_down !== null && p.proposed_write_down !== undefined
        ? el("p", { text: `The rules that remain propose a further write-down of ${amountText(p.proposed_write_down)}.` })
        : null,
    ];
  }

  async function act(action) {
    const id = state.entry.id;
    if (!id) return;
    const reasonField = { approve: "#approve-reason", reject: "#reject-reason", adjust: "#adjust-reason" }[action];
    const reason = $(reasonField).value.trim();
    const body = { reason: reason || null };
    if (action === "adjust") {
      body.changes = changes();
      if (!Object.keys(body.changes).length) {
        showResult(false, "Change the rate, hours, narrative or a code first.");
        return;
      }
    }
    if (action === "approve" && $("#approve-reason").getAttribute("aria-required") === "true" && !reason) {
      showResult(false, "Approving this entry needs a reason.");
      $("#approve-reason").focus();
      return;
    }
    const before = state.entry.detail;
    const result = await api("POST", `/v1/entries/${id}/${action}`, { json: body, ifMatch: state.entry.version });
    if (result.status === 412) {
      await conflict(id);
      return;
    }
    if (!result.ok) {
      showResult(false, `${action} refused: ${problem(result)}`);
      return;
    }
    $(reasonField).value = "";
    if (action === "adjust") {
      for (const input of $$("#adjust-form input, #adjust-form textarea")) delete input.dataset.dirty;
    }
    $("#entry-conflict").hidden = true;
    const fresh = await fetchEntry(id);
    if (fresh.ok) renderEntry(fresh.data, fresh.version);
    const lines = [`${action}: done. The entry is now ${result.data.state} (version ${result.data.version}).`];
    if (action === "adjust") {
      lines.push(`Write-down: ${show(result.data.write_down)}.`);
      if (fresh.ok) lines.push(reevaluation(before, fresh.data));
    }
    showResult(true, lines.join(" "));
    state.queue.stale = true; // read again when the queue is shown; j and k still walk the page as it was
  }

  function reevaluation(before, after) {
    const active = (d) => new Set(d.violations.filter((v) => v.rule_status === "active").map((v) => v.rule_id));
    const was = active(before), now = active(after);
    const cleared = [...was].filter((r) => !now.has(r));
    const added = [...now].filter((r) => !was.has(r));
    const still = [...now].filter((r) => was.has(r));
    return `Judged again: ${cleared.length ? `cleared ${cleared.join(", ")}` : "nothing cleared"}`
      + `${added.length ? `; newly flagged ${added.join(", ")}` : ""}${still.length ? `; still flagged ${still.join(", ")}` : ""}.`;
  }

  function showResult(ok, message) {
    const node = $("#entry-result");
    node.className = `result ${ok ? "ok" : "bad"}`;
    node.textContent = message;
  }

  async function conflict(id) {
    const known = state.entry.version;
    const fresh = await fetchEntry(id);
    const notice = $("#entry-conflict");
    notice.hidden = false;
    if (!fresh.ok) {
      notice.textContent = `Someone changed this entry meanwhile, and it could not be reloaded: ${problem(fresh)}`;
      return;
    }
    const since = fresh.data.history.filter((h) => h.before && h.before.version >= known);
    const who = since.length ? since.map((h) => `${h.actor} (${h.action}${h.reason ? `: ${h.reason}` : ""}, `
      + `${new Date(h.at).toLocaleString()})`).join("; ") : "another reviewer or a new version from the source";
    notice.textContent = `This entry changed while you were looking at it: ${who}. It is now ${fresh.data.state}, `
      + `version ${fresh.version}. It has been reloaded; what you typed is kept, so check it and submit again.`;
    renderEntry(fresh.data, fresh.version);
    showResult(false, "Not saved: the entry had changed.");
  }

  // Rule sets -------------------------------------------------------------------------------------------------

  async function loadRulesets() {
    const result = await api("GET", "/v1/rulesets");
    if (!result.ok) {
      flash(`Rule sets could not be loaded: ${problem(result)}`, true);
      return;
    }
    const author = may("author");
    clear($("#rulesets tbody"), result.data.map((v) => el("tr", {},
      el("td", { text: v.id }), el("td", { text: v.ruleset_id }), el("td", { text: v.version_label }),
      el("td", {}, badge(v.status, v.status === "active" ? "ok" : "plain")), el("td", { text: show(v.created_by) }),
      el("td", { text: new Date(v.created_at).toLocaleString() }),
      el("td", {}, author && v.status !== "active" ? [
        el("button", { type: "button", class: "secondary", onclick: () => backtest(v) }, "Backtest"), " ",
        el("button", { type: "button", class: "secondary", onclick: () => setStatus(v, "shadow") }, "Shadow"), " ",
        el("button", { type: "button", onclick: () => setStatus(v, "activate") }, "Activate")] : null))));
  }

  async function setStatus(version, action) {
    const result = await api("POST", `/v1/rulesets/${version.id}/${action}`);
    flash(result.ok ? `${version.ruleset_id} ${version.version_label} is now ${result.data.status}.`
      : `${action} refused: ${problem(result)}`, !result.ok);
    await loadRulesets();
  }

  async function uploadRuleset(event) {
    event.preventDefault();
    const text = $("#ruleset-text").value;
    const result = await api("POST", "/v1/rulesets", { text, contentType: "application/yaml" });
    const list = $("#ruleset-errors");
    if (!result.ok) {
      const details = (result.error && result.error.details) || [];
      clear(list, details.length ? details.map((d) => el("li", {},
        el("button", { type: "button", class: "link", onclick: () => goToLine(d.line, d.column) },
           `line ${d.line}, column ${d.column}`), `: ${d.message}`, d.where ? ` (${d.where})` : ""))
        : el("li", { text: problem(result) }));
      flash("The rule file was not stored: see its problems beside the text.", true);
      return;
    }
    clear(list);
    flash(`Stored ${result.data.ruleset_id} ${result.data.version_label} as ${result.data.status} (version id ${result.data.id}).`);
    await loadRulesets();
  }

  function goToLine(line, column) {
    const area = $("#ruleset-text");
    const lines = area.value.split("\n");
    let offset = 0;
    for (let i = 0; i < Math.max(0, line - 1) && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    area.focus();
    area.setSelectionRange(offset, Math.min(area.value.length, offset + 1));
  }

  async function backtest(version) {
    const box = $("#backtest");
    clear(box, el("p", { text: `Backtesting ${version.ruleset_id} ${version.version_label}\u2026` }));
    const result = await api("POST", `/v1/rulesets/${version.id}/backtest`, { json: { examples: 3 } });
    if (!result.ok) {
      clear(box, el("p", { class: "error", text: `Backtest refused: ${problem(result)}` }));
      return;
    }
    const b = result.data;
    clear(box,
      el("h2", { text: `Backtest of ${b.draft.ruleset_id} ${b.draft.version_label} against ${b.active ? b.active.version_label : "nothing active"}` }),
      el("p", { text: `${b.entries_checked} entries checked; write-down change ${money(b.write_down_change)}; `
        + `${b.unchanged_rules.length} rules unchanged.` }),
      b.rules.length ? table(["Rule", "Change", "Differs in", { label: "Flagged before", num: true },
        { label: "Flagged after", num: true }, { label: "Newly flagged", num: true }, { label: "No longer", num: true },
        "Write-down change"], b.rules.map((r) => [r.rule_id, r.change, r.differs.join(", "), r.flagged_before,
        r.flagged_after, r.newly_flagged, r.no_longer_flagged, money(r.write_down_change)]), { id: "backtest-rules" })
        : el("p", { text: "No rule differs." }),
      b.examples.length ? [el("h3", { text: "Examples" }), table(["Entry", "Rule", "Change", "Message"],
        b.examples.map((x) => [el("a", { href: `#/entry/${x.entry_id}` }, String(x.entry_id)), x.rule_id, x.change, x.message]))]
        : null);
  }

  // Invoices ---------------------------------------------------------------------------------------------------

  async function loadInvoices() {
    const result = await api("GET", "/v1/invoices");
    if (!result.ok) {
      flash(`Invoices could not be loaded: ${problem(result)}`, true);
      return;
    }
    const biller = may("bill");
    clear($("#invoices tbody"), result.data.map((inv) => el("tr", {},
      el("td", { text: inv.number }), el("td", { text: inv.client_id }),
      el("td", { text: `${inv.period_start} to ${inv.period_end}` }), el("td", { class: "num", text: `${inv.total} ${inv.currency || ""}` }),
      el("td", { text: inv.status }), el("td", { text: show(inv.portal_state) }),
      el("td", {},
        el("button", { type: "button", class: "secondary", onclick: () => showInvoice(inv) }, "Open"), " ",
        el("button", { type: "button", class: "secondary", onclick: () => showLedes(inv) }, "LEDES"), " ",
        biller && inv.status !== "void" ? [
          el("button", { type: "button", onclick: () => invoiceAction(inv, "submit") }, "Submit"), " ",
          el("button", { type: "button", class: "secondary", onclick: () => invoiceAction(inv, "poll") }, "Status")] : null,
        biller && voidable(inv) ? [" ", el("button", { type: "button", class: "secondary", "aria-label": `Void invoice ${inv.number}`,
                                                      onclick: () => askVoid(inv) }, "Void")] : null))));
  }

  // Only an invoice the client does not hold can be voided here: a draft, or one its portal rejected.
  const voidable = (inv) => inv.status === "draft" || (inv.status === "submitted" && inv.portal_state === "rejected");

  function askVoid(inv) {
    const out = $("#invoice-out");
    clear(out, el("form", { id: "void-form", class: "stack narrow", onsubmit: (event) => {
      event.preventDefault();
      voidInvoice(inv);
    } },
    el("h2", { text: `Void invoice ${inv.number}` }),
    el("p", { class: "hint", text: "Voiding withdraws the invoice and releases its entries (back to ready, or judged "
      + "again where the source changed them meanwhile). It cannot be undone." }),
    el("label", { for: "void-reason", text: "Reason for voiding" }),
    el("textarea", { id: "void-reason", rows: 2, "aria-required": "true" }),
    el("span", { class: "buttons" },
      el("button", { type: "submit", id: "void-confirm" }, `Void ${inv.number}`),
      el("button", { type: "button", class: "secondary", onclick: () => clear(out) }, "Cancel")),
    el("p", { id: "void-error", class: "error", role: "alert" })));
    $("#void-reason").focus();
  }

  async function voidInvoice(inv) {
    const reason = $("#void-reason").value.trim();
    if (!reason) {
      $("#void-error").textContent = "Voiding an invoice needs a reason.";
      $("#void-reason").focus();
      return;
    }
    const result = await api("POST", `/v1/invoices/${inv.id}/void`, { json: { reason } });
    if (!result.ok) {
      $("#void-error").textContent = `Void refused: ${problem(result)}`;
      return;
    }
    flash(`Invoice ${inv.number} is void; its entries are released.`);
    await loadInvoices();
    await showInvoice(result.data);
  }

  async function showInvoice(inv) {
    const result = await api("GET", `/v1/invoices/${inv.id}`);
    const out = $("#invoice-out");
    if (!result.ok) {
      clear(out, el("p", { class: "error", text: `Invoice ${inv.number} could not be read: ${problem(result)}` }));
      return;
    }
    const d = result.data;
    clear(out, el("h2", { text: `Invoice ${d.number}` }),
      el("p", { text: `${d.status}; portal: ${show(d.portal_state)}; total ${d.total} ${d.currency || ""}; `
        + `${d.line_count} lines${d.last_error ? `; last error: ${d.last_error}` : ""}`
        + `${d.void_reason ? `; voided: ${d.void_reason}` : ""}` }),
      el("h3", { text: "Portal rejections" }),
      d.rejections.length ? table(["Line", "Reason", "Code", "Comment", { label: "Amount", num: true }],
        d.rejections.map((r) => [show(r.line_number), r.reason, show(r.reason_code), show(r.comment), show(r.amount)]))
        : el("p", { text: "None." }),
      el("h3", { text: "Events" }),
      table(["When", "Action", "By"], d.events.map((e) => [new Date(e.at).toLocaleString(), e.action, e.actor])));
  }

  async function showLedes(inv) {
    const result = await api("GET", `/v1/invoices/${inv.id}/ledes`, { accept: "text/plain" });
    const pre = $("#ledes");
    pre.hidden = false;
    pre.textContent = result.ok ? result.data : `The LEDES file could not be read: ${problem(result)}`;
  }

  async function invoiceAction(inv, action) {
    const result = await api("POST", `/v1/invoices/${inv.id}/${action}`, action === "submit" ? { json: {} } : {});
    flash(result.ok ? `Invoice ${inv.number}: ${action} done${result.data.status ? ` (${result.data.status})` : ""}.`
      : `${action} refused: ${problem(result)}`, !result.ok);
    await loadInvoices();
  }

  async function buildInvoice(event) {
    event.preventDefault();
    const build = event.submitter && event.submitter.value === "build";
    const form = new FormData($("#invoice-form"));
    const body = { client_id: form.get("client_id"), period_start: form.get("period_start"), period_end: form.get("period_end"),
                   matters: String(form.get("matters") || "").split(",").map((m) => m.trim()).filter(Boolean) };
    const result = await api("POST", build ? "/v1/invoices" : "/v1/invoices/preview", { json: body });
    const out = $("#invoice-out");
    if (!result.ok) {
      clear(out, el("p", { class: "error", text: `${build ? "Build" : "Preview"} refused: ${problem(result)}` }));
      return;
    }
    const d = result.data;
    clear(out, el("p", { text: `${build ? `Invoice ${d.number} built` : "Preview"}: total ${d.total}, fees ${d.fees_total}, `
      + `expenses ${d.expenses_total}, adjustments ${d.adjustments_total}, ${d.lines.length} lines.` }),
    table(["Line", "Matter", "Date", { label: "Units", num: true }, { label: "Rate", num: true },
      { label: "Adjustment", num: true }, { label: "Total", num: true }, "Description"],
    d.lines.map((l) => [l.line_number, l.law_firm_matter_id, show(l.date), show(l.units), show(l.unit_cost),
      l.adjustment, l.total, show(l.description)])));
    if (build) await loadInvoices();
  }

  // The findings overview ------------------------------------------------------------------------------------------

  // The charts are drawn by Chart.js (chart.umd.min.js, shipped with the page and loaded before this script):
  // horizontal bars on a canvas that assistive technology reads as one image named by a summary of its figures.
  // Each chart has a table beside it with every figure, exact, as text. No animation: what is drawn first is final.
  const CHART_BARS = 10; // bars per chart at most; the tables list every group
  const CHART_INK = "#1a1a1a"; // the page's --ink: labels and ticks
  const CHART_GRID = "#c8c8c8"; // the page's --line
  // Bar colours, one per currency (a chart has more than one only for write-downs in several currencies): the
  // page's accent, error, ok and warning inks, each at least 4.5:1 against the white behind the chart.
  const CHART_COLOURS = ["#1d4f91", "#a4161a", "#1e6b2e", "#7a4b00"];
  const overviewCharts = []; // the Chart instances on the overview now, destroyed before it is drawn again

  function dropOverviewCharts() {
    while (overviewCharts.length) overviewCharts.pop().destroy();
  }

  // A chart of rows [{label, figures: [exact decimal text, one per series]}] in series [{name}]: a box holding the
  // canvas, and a function that draws it once the box is in the page. Without Chart.js (the file failed to load)
  // there is no chart, only the table.
  function barChart(title, rows, series, total, whole) {
    if (!window.Chart || !rows.length) return { box: null, draw: () => {} };
    const labels = rows.map((r) => show(r.label));
    const described = rows.map((r, i) => `${labels[i]} ${series.length > 1
      ? r.figures.map((f, j) => `${f ?? 0} ${series[j].name}`).join(" and ") : r.figures[0]}`).join(", ");
    const shown = total > rows.length ? ` (${rows.length} of ${total})` : "";
    const canvas = el("canvas", { role: "img", "aria-label": `${title}${shown}: ${described}` });
    const box = el("div", { class: "chart" }, canvas);
    box.style.height = `${rows.length * (series.length > 1 ? 30 : 22) + (series.length > 1 ? 64 : 40)}px`;
    const shorten = (text) => (text.length > 24 ? `${text.slice(0, 23)}\u2026` : text);
    const draw = () => overviewCharts.push(new window.Chart(canvas, {
      type: "bar",
      data: {
        labels,
        datasets: series.map((s, j) => ({
          label: s.name, data: rows.map((r) => Number(r.figures[j] ?? 0)),
          backgroundColor: CHART_COLOURS[j % CHART_COLOURS.length], borderWidth: 0,
        })),
      },
      options: {
        indexAxis: "y", animation: false, responsive: true, maintainAspectRatio: false,
        color: CHART_INK,
        plugins: {
          legend: { display: series.length > 1, labels: { color: CHART_INK } },
          tooltip: { callbacks: { // the exact figure, not the number the bar was drawn from
            label: (item) => `${item.dataset.label}: ${rows[item.dataIndex].figures[item.datasetIndex] ?? 0}`,
          } },
        },
        scales: {
          x: { beginAtZero: true, grid: { color: CHART_GRID }, ticks: { color: CHART_INK, precision: whole ? 0 : undefined } },
          y: { grid: { display: false }, ticks: { color: CHART_INK, autoSkip: false,
            callback(value) { return shorten(String(this.getLabelForValue(value))); } } },
        },
      },
    }));
    return { box, draw };
  }

  async function loadOverview(event) {
    if (event) event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData($("#overview-form"))) if (String(value).trim()) params.set(name, String(value).trim());
    const result = await api("GET", `/v1/reports/findings?${params}`);
    const box = $("#overview");
    dropOverviewCharts();
    if (!result.ok) {
      clear(box, el("p", { class: "error", text: `The report could not be read: ${problem(result)}` }));
      return;
    }
    const r = result.data;
    const draws = [];
    const section = (title, chart, body) => {
      draws.push(chart.draw);
      return el("section", { "aria-label": title }, el("h2", { text: title }), chart.box, body);
    };
    const count = [{ name: "Findings" }];
    const group = (title, key) => {
      const groups = r.by[key] || [];
      const picked = key === "month" ? groups.slice(-CHART_BARS) : groups.slice(0, CHART_BARS); // the latest months
      return section(title,
        barChart(`Findings ${title.toLowerCase()}`, picked.map((g) => ({ label: g.key, figures: [String(g.findings)] })),
          count, groups.length, true),
        groups.length ? table([key[0].toUpperCase() + key.slice(1), { label: "Findings", num: true }, { label: "Entries", num: true }],
          groups.map((g) => [show(g.key), g.findings, g.entries]))
          : el("p", { text: "No findings in this window." }));
    };

    // Write-downs: what each rule proposes, one bar per currency it proposes in (negative: the bill goes down).
    const proposing = (r.by.rule || []).filter((g) => Object.keys(g.write_down || {}).length);
    const currencies = [...new Set(proposing.flatMap((g) => Object.keys(g.write_down)))].sort();
    const writeDowns = section("Write-downs",
      barChart("Write-downs proposed per rule", proposing.slice(0, CHART_BARS).map((g) => ({
        label: g.key, figures: currencies.map((c) => g.write_down[c] ?? null) })),
      currencies.map((c) => ({ name: c })), proposing.length, false),
      [el("p", { text: `Proposed: ${money(r.write_downs.proposed.amount)} over ${r.write_downs.proposed.findings} findings. `
        + `Made by reviewers: ${money(r.write_downs.reviewed.amount)} in ${r.write_downs.reviewed.actions} adjustments.` }),
      proposing.length ? table(["Rule", { label: "Findings", num: true }, "Write-down proposed"],
        proposing.map((g) => [show(g.key), g.findings, money(g.write_down)]))
        : el("p", { text: "No rule proposes a write-down in this window." })]);

    const rejections = r.portal_rejections;
    const rejected = section("Portal rejections by reason",
      barChart("Portal rejections by reason", rejections.slice(0, CHART_BARS).map((p) => ({
        label: p.reason_code ? `${p.reason_code} ${p.reason}` : p.reason, figures: [String(p.count)] })),
      [{ name: "Rejections" }], rejections.length, true),
      rejections.length ? table(["Reason", "Code", "Kind", { label: "Count", num: true }, "Amount"],
        rejections.map((p) => [p.reason, show(p.reason_code), p.kind, p.count, money(p.amount)]))
        : el("p", { text: "No portal rejections in this window." }));

    clear(box,
      el("div", { class: "kpis" },
        el("div", {}, el("strong", { text: r.entries }), "entries"),
        el("div", {}, el("strong", { text: r.flagged_entries }), "flagged"),
        el("div", {}, el("strong", { text: r.findings }), "findings"),
        el("div", {}, el("strong", { text: money(r.write_downs.proposed.amount) }), "write-downs proposed"),
        el("div", {}, el("strong", { text: money(r.write_downs.reviewed.amount) }), "written down by reviewers"),
        el("div", {}, el("strong", { text: show(r.billed.clean_share) }), "billed clean")),
      el("div", { class: "overview-grid", id: "overview-groups" },
        group("By rule", "rule"), group("By client", "client"), group("By timekeeper", "timekeeper"),
        group("By month", "month"), writeDowns, rejected));
    for (const draw of draws) draw(); // now that the canvases are in the page and have their size
  }

  // Keyboard -----------------------------------------------------------------------------------------------------

  function toggleHelp(open) {
    const help = $("#help");
    help.hidden = !open;
    if (open) $("#help-close").focus();
  }

  function keyAction(field) {
    if (!may("review")) return;
    if ($("#view-entry").hidden) { // from the queue: open the current entry, then go to the field
      const item = state.queue.items[state.queue.current];
      if (!item) return;
      state.focusAfterOpen = field;
      location.hash = `#/entry/${item.id}`;
      return;
    }
    $(field).focus();
  }

  function onKey(event) {
    if (event.key === "Escape" && !$("#help").hidden) {
      toggleHelp(false);
      return;
    }
    if (!state.key || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    const inQueue = !$("#view-queue").hidden;
    const inEntry = !$("#view-entry").hidden;
    switch (event.key) {
      case "?": toggleHelp($("#help").hidden); break;
      case "j":
      case "k":
        if (inQueue) moveCurrent(event.key === "j" ? 1 : -1);
        else if (inEntry && state.queue.items.length) {
          const next = state.queue.current + (event.key === "j" ? 1 : -1);
          const item = state.queue.items[next];
          if (item) location.hash = `#/entry/${item.id}`;
        } else return;
        break;
      case "Enter":
        if (inQueue && state.queue.items[state.queue.current] && !event.target.closest("a, button")) {
          location.hash = `#/entry/${state.queue.items[state.queue.current].id}`;
        } else return;
        break;
      case "a": keyAction("#approve-reason"); break;
      case "r": keyAction("#reject-reason"); break;
      case "e": keyAction("#adjust-rate"); break;
      default: return;
    }
    event.preventDefault();
  }

  // Wiring ---------------------------------------------------------------------------------------------------------

  function runRoute() {
    return route().catch((error) => flash(`Something went wrong: ${error}`, true));
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("#signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await signIn($("#signin-key").value.trim())) {
        if (!location.hash || location.hash === "#/signin") location.hash = "#/queue";
        else runRoute();
      }
    });
    $("#signout").addEventListener("click", () => signOut("Signed out."));
    $("#help-open").addEventListener("click", () => toggleHelp(true));
    $("#help-close").addEventListener("click", () => toggleHelp(false));
    $("#filters").addEventListener("submit", (event) => {
      event.preventDefault();
      applyFilters();
    });
    $("#filters").addEventListener("reset", () => setTimeout(applyFilters, 0));
    $("#page-next").addEventListener("click", () => {
      if (!state.queue.next) return;
      state.queue.cursors[state.queue.page + 1] = state.queue.next;
      state.queue.page += 1;
      state.queue.current = 0;
      loadQueue();
    });
    $("#page-first").addEventListener("click", () => applyFilters());
    $("#select-all").addEventListener("change", (event) => {
      for (const box of $$("#queue tbody .pick")) box.checked = event.target.checked;
      state.queue.selected = new Set(event.target.checked ? state.queue.items.map((i) => i.id) : []);
    });
    $("#bulk-approve").addEventListener("click", () => bulk("approve"));
    $("#bulk-reject").addEventListener("click", () => bulk("reject"));
    $("#approve-form").addEventListener("submit", (event) => { event.preventDefault(); act("approve"); });
    $("#reject-form").addEventListener("submit", (event) => { event.preventDefault(); act("reject"); });
    $("#adjust-form").addEventListener("submit", (event) => { event.preventDefault(); act("adjust"); });
    for (const input of $$("#adjust-form input, #adjust-form textarea")) {
      if (input.id === "adjust-reason") continue; // the reason changes nothing the rules judge
      input.addEventListener("input", () => {
        input.dataset.dirty = "1";
        previewAdjustment();
      });
    }
    $("#ruleset-form").addEventListener("submit", uploadRuleset);
    $("#ruleset-file").addEventListener("change", async (event) => {
      const file = event.target.files[0];
      if (file) $("#ruleset-text").value = await file.text();
    });
    $("#invoice-form").addEventListener("submit", buildInvoice);
    $("#overview-form").addEventListener("submit", loadOverview);
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", runRoute);
    const saved = sessionStorage.getItem(KEY);
    if (saved && await signIn(saved)) {
      if (!location.hash || location.hash === "#/signin") location.hash = "#/queue";
      else runRoute();
    } else {
      runRoute();
    }
  });
})();
