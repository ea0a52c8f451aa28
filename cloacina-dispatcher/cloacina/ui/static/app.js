// Cloacina dashboard: vanilla JavaScript, no framework, nothing loaded from elsewhere.
// Every string from the API is inserted with textContent / setAttribute (never innerHTML).
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Status names come from the engine (GET /api/health) before the first page is drawn.
  let FINAL = [];
  let STATUSES = [];
  let TASK_STATUSES = [];
  let FINAL_TASK = [];
  // Waiting: a task sleeping, waiting for an event, snoozed or waiting out a retry's delay (its
  // reason says which); Snoozed: an attempt that ended with `raise Snooze(...)`.
  const COLORS = { Pending: "#9ca3af", Waiting: "#64748b", Running: "#3b82f6", Completed: "#16a34a",
                   Failed: "#dc2626", Cancelled: "#a16207", Skipped: "#c4b5fd", Lost: "#f97316",
                   Snoozed: "#0891b2" };
  const PAGE_SIZE = 25;
  const INSTANCE_PAGE = 50;  // instances of a mapped task fetched at a time: never all of them
  const TOKEN = new URLSearchParams(location.search).get("token");
  let timer = null;

  // --- helpers -----------------------------------------------------------------------------

  function withToken(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
    }
    if (TOKEN) query.set("token", TOKEN);
    const text = query.toString();
    return text ? path + "?" + text : path;
  }

  async function api(path, params) {
    const response = await fetch(withToken("/api/" + path, params), { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
    return body;
  }

  // el("a", {href: ...}, child, "text", ...): attributes via setAttribute, strings as text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    return fill(node, attrs, children);
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    return fill(node, attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function link(path, text, params) {
    return el("a", { href: withToken(path, params) }, text);
  }

  function executionPath(id) { return "/executions/" + encodeURIComponent(id); }

  // The child execution of a subworkflow task; a click on it must not select the task's row.
  function childLink(id) {
    const a = link(executionPath(id), id);
    a.setAttribute("data-child-execution-id", id);
    a.addEventListener("click", (event) => event.stopPropagation());
    return a;
  }
  function workflowPath(name) { return "/workflows/" + encodeURIComponent(name); }

  function badge(status) {
    return el("span", { class: "badge status-" + String(status).replace(/[^A-Za-z]/g, ""), "data-status": status },
              status);
  }

  function when(text) {
    if (!text) return "—";
    const date = new Date(text);
    return isNaN(date) ? String(text) : date.toLocaleString();
  }

  function seconds(value) {
    if (value === null || value === undefined) return "—";
    if (value < 1) return (value * 1000).toFixed(0) + " ms";
    if (value < 120) return value.toFixed(2) + " s";
    return (value / 60).toFixed(1) + " min";
  }

  // A mapped task's instance counts (TaskResult.map) in words, as the command line writes them:
  // "150/300 completed, 2 running, 1 failed"; statuses but Pending and Completed only when present.
  function mapText(counts) {
    const total = counts.count || 0;
    if (!total) return "no instances";
    let text = (counts.completed || 0) + "/" + total + " completed";
    for (const status of TASK_STATUSES) {
      const key = status.toLowerCase();
      if (key === "pending" || key === "completed") continue;
      if (counts[key]) text += ", " + counts[key] + " " + key;
    }
    return text;
  }

  function mapEnded(counts) {
    return FINAL_TASK.reduce((sum, status) => sum + (counts[status.toLowerCase()] || 0), 0);
  }

  // Rects filling `width` from x: one per status with instances, ended ones first, then Running;
  // the rest (Pending) is the background.
  function mapSegments(counts, x, y, width, height) {
    const total = counts.count || 0;
    const rects = [svg("rect", { class: "map-rest", x: x, y: y, width: width, height: height })];
    if (!total) return rects;
    let at = x;
    for (const status of [...FINAL_TASK, "Running"]) {
      const n = counts[status.toLowerCase()] || 0;
      if (!n) continue;
      const w = (n / total) * width;
      rects.push(svg("rect", { class: "map-part", "data-status": status, x: at, y: y, width: w, height: height,
                               fill: COLORS[status] || "#6b7280" }));
      at += w;
    }
    return rects;
  }

  // A progress bar and the counts of a mapped task's instances.
  function mapProgress(counts) {
    const W = 120, H = 10;
    const text = mapText(counts);
    return el("span", { class: "map-progress", "data-count": counts.count || 0, "data-ended": mapEnded(counts) },
      svg("svg", { class: "map-bar", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img",
                   "aria-label": text }, mapSegments(counts, 0, 0, W, H)),
      " ", el("span", { class: "map-text" }, text));
  }

  function time(text) {
    const value = text ? Date.parse(text) : NaN;
    return isNaN(value) ? null : value;
  }

  function setMain(...children) {
    const main = document.getElementById("app");
    main.replaceChildren(...children);
    return main;
  }

  function showError(target, error) {
    target.replaceChildren(el("p", { class: "error" }, "Error: " + (error && error.message || error)));
  }

  function poll(fn, delay) {
    clearTimeout(timer);
    timer = setTimeout(fn, delay);
  }

  // --- executions page ---------------------------------------------------------------------

  function executionsPage() {
    const params = new URLSearchParams(location.search);
    const state = { workflow: params.get("workflow") || "", status: params.get("status") || "",
                    offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0), next: null };

    const workflowInput = el("input", { type: "search", id: "filter-workflow", placeholder: "workflow name" });
    workflowInput.value = state.workflow;
    const statusSelect = el("select", { id: "filter-status" }, el("option", { value: "" }, "any status"),
                            STATUSES.map((s) => el("option", { value: s }, s)));
    statusSelect.value = state.status;
    const findInput = el("input", { type: "search", id: "find-id", placeholder: "execution id", size: 38 });
    const findForm = el("form", { id: "find-form" }, findInput, el("button", { type: "submit" }, "Open"));
    findForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = findInput.value.trim();
      if (id) location.href = withToken(executionPath(id));
    });
    const filterForm = el("form", { id: "filter-form" }, workflowInput, statusSelect,
                          el("button", { type: "submit" }, "Filter"));
    filterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      state.workflow = workflowInput.value.trim();
      state.offset = 0;
      refresh();
    });
    statusSelect.addEventListener("change", () => { state.status = statusSelect.value; state.offset = 0; refresh(); });

    const body = el("tbody", { id: "executions" });
    const message = el("div", { id: "message" });
    const prev = el("button", { type: "button", id: "prev" }, "← Newer");
    const next = el("button", { type: "button", id: "next" }, "Older →");
    const where = el("span", { class: "muted", id: "page-info" });
    prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refresh(); });
    next.addEventListener("click", () => { if (state.next !== null) { state.offset = state.next; refresh(); } });

    setMain(
      el("h1", {}, "Executions"),
      el("div", { class: "controls" }, filterForm, findForm),
      message,
      el("table", {}, el("thead", {}, el("tr", {}, ["Execution", "Workflow", "Status", "Started", "Duration"]
        .map((h) => el("th", {}, h)))), body),
      el("div", { class: "pager" }, prev, where, next));

    async function load() {
      try {
        const page = await api("executions", { workflow: state.workflow, status: state.status,
                                                limit: PAGE_SIZE, offset: state.offset });
        state.next = page.next_offset;
        body.replaceChildren(...page.executions.map((e) => el("tr", { "data-execution-id": e.execution_id },
          el("td", { class: "id" }, link(executionPath(e.execution_id), e.execution_id)),
          el("td", {}, link(workflowPath(e.workflow_name), e.workflow_name),
            e.parent_execution_id ? el("div", { class: "muted parent" }, "child of ",
              el("a", { href: withToken(executionPath(e.parent_execution_id)), title: e.parent_execution_id },
                 e.parent_execution_id.slice(0, 8)),
              " (", e.parent_task_id || "?", ")") : null),
          el("td", {}, badge(e.status)),
          el("td", {}, when(e.started_at)),
          el("td", {}, seconds(e.duration_seconds)))));
        if (!page.executions.length) body.appendChild(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No executions.")));
        prev.disabled = state.offset === 0;
        next.disabled = page.next_offset === null;
        where.textContent = page.executions.length
          ? (state.offset + 1) + "–" + (state.offset + page.executions.length) : "";
        message.replaceChildren();
      } catch (error) {
        showError(message, error);
      }
      poll(load, 2000);
    }

    function refresh() {
      const query = { workflow: state.workflow, status: state.status, offset: state.offset || "" };
      history.replaceState(null, "", withToken("/", query));
      load();
    }

    load();
  }

  // --- execution page ----------------------------------------------------------------------

  function layers(tasks) {
    const byId = new Map(tasks.map((t) => [t.task_id, t]));
    const layer = new Map();
    function of(id, seen) {
      if (layer.has(id)) return layer.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      const task = byId.get(id);
      const deps = (task && task.dependencies || []).filter((d) => byId.has(d));
      const value = deps.length ? 1 + Math.max(...deps.map((d) => of(d, seen))) : 0;
      layer.set(id, value);
      return value;
    }
    tasks.forEach((t) => of(t.task_id, new Set()));
    return layer;
  }

  // Long ids keep their end, where names built from prefixes differ.
  function shorten(text, max) {
    return text.length > max ? "…" + text.slice(text.length - max + 1) : text;
  }

  function drawGraph(tasks, selected, onSelect) {
    const W = 200, H = 36, GX = 60, GY = 16, PAD = 10;
    const layer = layers(tasks);
    const columns = [];
    const pos = new Map();
    for (const task of tasks) {
      const l = layer.get(task.task_id);
      columns[l] = columns[l] || [];
      pos.set(task.task_id, { x: PAD + l * (W + GX), y: PAD + columns[l].length * (H + GY) });
      columns[l].push(task);
    }
    const width = PAD * 2 + columns.length * (W + GX) - GX;
    const height = PAD * 2 + Math.max(1, ...columns.map((c) => (c || []).length)) * (H + GY) - GY;
    const root = svg("svg", { id: "graph", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                              role: "img", "aria-label": "workflow graph" });
    for (const task of tasks) {
      const to = pos.get(task.task_id);
      for (const dep of task.dependencies || []) {
        const from = pos.get(dep);
        if (!from) continue;
        const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2, mx = (x1 + x2) / 2;
        root.appendChild(svg("path", { class: "edge", "data-from": dep, "data-to": task.task_id,
                                       d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
      }
    }
    for (const task of tasks) {
      const p = pos.get(task.task_id);
      const counts = task.map;
      // A mapped task: its instances that ended, over how many, and a strip along its bottom edge.
      const tally = counts ? mapEnded(counts) + "/" + (counts.count || 0) : "";
      const node = svg("g", { class: "node" + (counts ? " mapped" : "") + (task.task_id === selected ? " selected" : ""),
                              "data-task-id": task.task_id, "data-status": task.status,
                              transform: `translate(${p.x},${p.y})`, tabindex: 0 },
        svg("title", {}, task.task_id + " — " + task.status + (task.status === "Waiting" && task.reason ? ": " + task.reason : "")
                         + (counts ? " — instances: " + mapText(counts) : "")),
        svg("rect", { width: W, height: H, rx: 6, fill: COLORS[task.status] || "#6b7280" }),
        svg("text", { x: 8, y: H / 2 + (counts ? 1 : 4) }, shorten(task.task_id, counts ? 27 - tally.length : 28)),
        counts ? [svg("text", { class: "map-tally", x: W - 8, y: H / 2 + 1, "text-anchor": "end" }, tally),
                  ...mapSegments(counts, 6, H - 9, W - 12, 5)] : null);
      node.addEventListener("click", () => onSelect(task.task_id));
      root.appendChild(node);
    }
    return root;
  }

  function attemptsOf(task, now) {
    if (task.map) {  // a mapped task has no attempts of its own: one bar for the time its instances ran
      const start = time(task.started_at), end = time(task.completed_at);
      return start === null ? [] : [{ attempt: "instances", status: task.status, start: start, end: end === null ? now : end }];
    }
    const list = (task.history || []).map((h) => ({ attempt: h.attempt, status: h.status,
      start: time(h.started_at), end: time(h.completed_at) }));
    if (task.status === "Running" && task.started_at
        && !list.some((a) => a.attempt === task.attempts)) {
      list.push({ attempt: task.attempts || list.length + 1, status: "Running", start: time(task.started_at), end: null });
    }
    return list.filter((a) => a.start !== null).map((a) => ({ ...a, end: a.end === null ? now : a.end }));
  }

  function drawTimeline(tasks, selected, onSelect) {
    const now = Date.now();
    const rows = tasks.map((t) => ({ task: t, attempts: attemptsOf(t, now) }));
    const all = rows.flatMap((r) => r.attempts);
    const LABEL = 220, WIDTH = 900, ROW = 24, PAD = 6;
    const height = PAD * 2 + Math.max(1, rows.length) * ROW + 18;
    const root = svg("svg", { id: "timeline", width: LABEL + WIDTH + PAD, height: height,
                              role: "img", "aria-label": "timeline of task attempts" });
    if (!all.length) {
      root.appendChild(svg("text", { x: PAD, y: 20, class: "label" }, "No attempt has started yet."));
      return root;
    }
    const t0 = Math.min(...all.map((a) => a.start));
    const t1 = Math.max(t0 + 1, ...all.map((a) => a.end));
    const x = (t) => LABEL + ((t - t0) / (t1 - t0)) * (WIDTH - 10);
    root.appendChild(svg("line", { class: "axis", x1: LABEL, x2: LABEL, y1: 0, y2: height - 18 }));
    root.appendChild(svg("text", { class: "label", x: LABEL, y: height - 4 }, "0 s"));
    root.appendChild(svg("text", { class: "label", x: LABEL + WIDTH - 80, y: height - 4 },
                         seconds((t1 - t0) / 1000)));
    rows.forEach((row, i) => {
      const y = PAD + i * ROW;
      const label = svg("text", { class: "label", x: PAD, y: y + 15, "data-task-id": row.task.task_id },
                        shorten(row.task.task_id, 30));
      label.addEventListener("click", () => onSelect(row.task.task_id));
      root.appendChild(label);
      for (const a of row.attempts) {
        const bar = svg("rect", { class: "attempt", "data-task-id": row.task.task_id, "data-attempt": a.attempt,
                                  "data-status": a.status, x: x(a.start), y: y + 3,
                                  width: Math.max(3, x(a.end) - x(a.start)), height: ROW - 8, rx: 3,
                                  fill: COLORS[a.status] || "#6b7280" },
                        svg("title", {}, row.task.task_id + (row.task.map ? " instances (" + mapText(row.task.map) + ")"
                                                                  : " attempt " + a.attempt) + ": " + a.status + ", "
                                         + seconds((a.end - a.start) / 1000)));
        bar.addEventListener("click", () => onSelect(row.task.task_id));
        root.appendChild(bar);
      }
    });
    return root;
  }

  // A JSON value as nested <details>; values the API truncated say so.
  function jsonView(value, open) {
    if (value && typeof value === "object" && !Array.isArray(value) && value.truncated === true
        && typeof value.size === "number") {
      return el("span", { class: "truncated" }, "truncated (" + value.size + " characters): ",
                el("code", {}, String(value.preview || "")));
    }
    if (value && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
      const summary = Array.isArray(value) ? "[" + entries.length + " items]" : "{" + entries.length + " keys}";
      return el("details", { open: open ? "" : null }, el("summary", {}, summary),
        el("ul", {}, entries.map(([k, v]) => el("li", {}, el("span", { class: "key" }, k), ": ", jsonView(v, false)))));
    }
    const kind = typeof value === "string" ? "str" : typeof value === "number" ? "num" : "lit";
    return el("span", { class: kind }, JSON.stringify(value));
  }

  function taskDetails(record, taskId, instancesPanel) {
    const task = (record.task_results || []).find((t) => t.task_id === taskId);
    if (!task) return el("p", { class: "muted" }, "Click a task in the graph, the timeline or the table to see its details.");
    const meta = el("dl", { class: "meta" });
    const add = (name, value) => { meta.append(el("dt", {}, name), el("dd", {}, value)); };
    add("task", task.task_id);
    add("status", badge(task.status));
    if (task.map) add("instances", mapProgress(task.map));
    else add("attempts", String(task.attempts));
    if (task.child_execution_id) add("child execution", childLink(task.child_execution_id));
    add("dependencies", (task.dependencies || []).join(", ") || "—");
    add("started", when(task.started_at));
    add("completed", when(task.completed_at));
    if (task.reason) add("reason", task.reason);
    const history = el("table", { class: "history" }, el("thead", {}, el("tr", {},
      ["Attempt", "Status", "Started", "Completed", "Error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, (task.history || []).map((h) => el("tr", { "data-attempt": h.attempt },
        el("td", {}, String(h.attempt)), el("td", {}, badge(h.status)), el("td", {}, when(h.started_at)),
        el("td", {}, when(h.completed_at)), el("td", { class: "error" }, h.error || "")))));
    const context = record.final_context || record.input_context;
    return el("div", { id: "task-details", "data-task-id": task.task_id },
      el("h2", {}, "Task ", task.task_id), meta,
      task.error ? [el("h3", {}, "Error"), el("pre", { class: "error", id: "task-error" }, task.error)] : null,
      task.traceback ? [el("h3", {}, "Traceback"), el("pre", { id: "task-traceback" }, task.traceback)] : null,
      task.map ? instancesPanel : [el("h3", {}, "Attempts"), history],
      el("h3", {}, record.final_context ? "Output (the execution's final context)" : "Input context"),
      el("div", { class: "json", id: "task-output" }, context ? jsonView(context, true) : el("span", { class: "muted" }, "none")));
  }

  // The instances of the selected mapped task, a page at a time (GET .../tasks/<id>/instances): the
  // panel is made once per page and moved into each redraw of the details, so it keeps its place.
  function instancesView(executionId) {
    const state = { taskId: null, offset: 0, count: 0, ended: false, next: null, focus: null, seq: 0 };
    const body = el("tbody", { id: "instances" });
    const info = el("span", { class: "muted", id: "instances-info" });
    const message = el("div", { id: "instances-message" });
    const button = (id, text, offset) => {
      const b = el("button", { type: "button", id: id }, text);
      b.addEventListener("click", () => { const to = offset(); if (to !== null) show(to, null); });
      return b;
    };
    const lastOffset = () => Math.max(0, Math.floor((state.count - 1) / INSTANCE_PAGE) * INSTANCE_PAGE);
    const first = button("instances-first", "⇤ First", () => 0);
    const prev = button("instances-prev", "← Previous", () => Math.max(0, state.offset - INSTANCE_PAGE));
    const next = button("instances-next", "Next →", () => state.next);
    const last = button("instances-last", "Last ⇥", lastOffset);
    const goto = el("input", { type: "number", id: "instances-goto", min: 0, step: 1, placeholder: "map_index" });
    const gotoForm = el("form", { id: "instances-goto-form" }, goto, el("button", { type: "submit" }, "Go to index"));
    gotoForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const index = parseInt(goto.value, 10);
      if (!isNaN(index) && index >= 0) show(Math.floor(index / INSTANCE_PAGE) * INSTANCE_PAGE, index);
    });
    const panel = el("div", { id: "instances-panel" }, el("h3", {}, "Instances"),
      el("div", { class: "pager" }, first, prev, info, next, last, gotoForm), message,
      el("table", { class: "instances" }, el("thead", {}, el("tr", {},
        ["Index", "Status", "Attempts", "Started", "Duration", "Error"].map((h) => el("th", {}, h)))), body));

    function show(offset, focus) {
      state.offset = offset;
      state.focus = focus;
      load();
    }

    function draw(page) {
      state.next = page.next_offset;
      body.replaceChildren(...page.instances.map((i) => {
        const start = time(i.started_at), end = time(i.completed_at);
        return el("tr", { class: i.map_index === state.focus ? "selected" : null, "data-map-index": i.map_index,
                          "data-status": i.status },
          el("td", { class: "index" }, String(i.map_index)), el("td", {}, badge(i.status)),
          el("td", {}, String(i.attempts)), el("td", {}, when(i.started_at)),
          el("td", {}, start !== null && end !== null ? seconds((end - start) / 1000) : "—"),
          el("td", { class: "error" }, i.error || ""));
      }));
      if (!page.instances.length) {
        body.appendChild(el("tr", {}, el("td", { colspan: 6, class: "muted" },
          state.count ? "No instance at index " + state.offset + " or after."
            : state.ended ? "No instances." : "No instances yet.")));
      }
      info.textContent = page.instances.length
        ? page.instances[0].map_index + "–" + page.instances[page.instances.length - 1].map_index + " of " + state.count
        : "";
      goto.setAttribute("max", String(Math.max(0, state.count - 1)));
      first.disabled = prev.disabled = state.offset === 0;
      next.disabled = state.next === null;
      last.disabled = state.next === null;
    }

    async function load() {
      const taskId = state.taskId;
      if (taskId === null) return;
      const seq = ++state.seq;  // only the answer to the latest request is drawn
      try {
        const page = await api("executions/" + encodeURIComponent(executionId) + "/tasks/"
                               + encodeURIComponent(taskId) + "/instances", { offset: state.offset, limit: INSTANCE_PAGE });
        if (seq !== state.seq) return;
        draw(page);
        message.replaceChildren();
      } catch (error) {
        if (seq === state.seq) showError(message, error);
      }
    }

    // Shows the instances of `task` (a mapped task of the record) from the first page when it is
    // another task, else reloads the page shown: its counts moved, so the page may have too.
    function follow(task) {
      if (task.task_id !== state.taskId) {
        state.taskId = task.task_id;
        state.offset = 0;
        state.focus = null;
        body.replaceChildren();
        info.textContent = "";
      }
      state.count = (task.map && task.map.count) || 0;
      state.ended = FINAL_TASK.includes(task.status);
      load();
    }

    return { panel: panel, follow: follow };
  }

  function executionPage(id) {
    let record = null, selected = null, lastText = null;
    const header = el("div", { id: "header" });
    const graph = el("div", { class: "panel", id: "graph-panel" });
    const timeline = el("div", { class: "panel", id: "timeline-panel" });
    const taskHead = el("thead", {});
    const tasks = el("tbody", { id: "tasks" });
    const details = el("div", { class: "panel", id: "details" });
    const message = el("div", { id: "message" });
    const instances = instancesView(id);
    setMain(header, message, el("h2", {}, "Graph"), graph, el("h2", {}, "Timeline"), timeline,
      el("h2", {}, "Tasks"), el("table", {}, taskHead, tasks),
      el("h2", {}, "Details"), details);

    function selectedMapTask() {
      const task = record && (record.task_results || []).find((t) => t.task_id === selected);
      return task && task.map ? task : null;
    }

    function select(taskId) {
      selected = taskId;
      render();
      const mapTask = selectedMapTask();
      if (mapTask) instances.follow(mapTask);
      details.scrollIntoView({ block: "nearest" });
    }

    function render() {
      const r = record;
      const meta = el("dl", { class: "meta" });
      const add = (name, value) => { meta.append(el("dt", {}, name), el("dd", {}, value)); };
      add("workflow", link(workflowPath(r.workflow_name), r.workflow_name));
      // A child execution (of a subworkflow task) links to its parent; the parent links back
      // from the task's row and details (child_execution_id).
      if (r.parent_execution_id) {
        add("parent", el("span", { id: "parent-execution" },
          link(executionPath(r.parent_execution_id), r.parent_execution_id),
          " (task ", el("span", { class: "id" }, r.parent_task_id || "?"), ")"));
      }
      add("version", r.workflow_version || "—");
      add("started", when(r.started_at));
      add("completed", when(r.completed_at));
      add("duration", seconds(r.duration_seconds));
      if (r.reason) add("reason", r.reason);
      if (r.error) add("error", el("span", { class: "error" }, r.error));
      header.replaceChildren(el("h1", {}, "Execution ", el("span", { id: "execution-id" }, r.execution_id), " ",
                                el("span", { id: "execution-status" }, badge(r.status))), meta);
      const results = r.task_results || [];
      const mapped = results.some((t) => t.map);
      const parents = results.some((t) => t.child_execution_id);
      graph.replaceChildren(drawGraph(results, selected, select));
      timeline.replaceChildren(drawTimeline(results, selected, select));
      taskHead.replaceChildren(el("tr", {}, ["Task", "Status", "Attempts", mapped ? "Instances" : null,
                                             parents ? "Child execution" : null, "Error or reason"]
        .filter((h) => h).map((h) => el("th", {}, h))));
      tasks.replaceChildren(...results.map((t) => {
        const row = el("tr", { class: "clickable" + (t.task_id === selected ? " selected" : ""),
                               "data-task-id": t.task_id, "data-status": t.status },
          el("td", { class: "id" }, t.task_id), el("td", {}, badge(t.status)), el("td", {}, String(t.attempts)),
          mapped ? el("td", { class: "instances" }, t.map ? mapProgress(t.map) : "") : null,
          parents ? el("td", { class: "id child" }, t.child_execution_id ? childLink(t.child_execution_id) : "") : null,
          t.error ? el("td", { class: "error" }, t.error) : el("td", { class: "reason" }, t.reason || ""));
        row.addEventListener("click", () => select(t.task_id));
        return row;
      }));
      details.replaceChildren(taskDetails(r, selected, instances.panel));
    }

    async function load() {
      try {
        const text = JSON.stringify(await api("executions/" + encodeURIComponent(id)));
        if (text !== lastText) {  // unchanged: keep the page (and its open <details>) as it is
          lastText = text;
          record = JSON.parse(text);
          document.title = "Cloacina · " + record.workflow_name + " · " + record.status;
          render();
          const mapTask = selectedMapTask();
          if (mapTask) instances.follow(mapTask);
        } else if (record && record.status === "Running") {
          timeline.replaceChildren(drawTimeline(record.task_results || [], selected, select));
        }
        message.replaceChildren();
      } catch (error) {
        showError(message, error);
      }
      if (!record || !FINAL.includes(record.status)) poll(load, 1000);
    }
    load();
  }

  // --- workflow page -----------------------------------------------------------------------

  function drawDurations(points) {
    const W = 900, H = 240, L = 60, B = 24, T = 10;
    const root = svg("svg", { id: "durations", width: W, height: H, role: "img", "aria-label": "durations over time" });
    if (!points.length) {
      root.appendChild(svg("text", { class: "label", x: L, y: 30 }, "No ended execution yet."));
      return root;
    }
    const ts = points.map((p) => time(p.started_at) || 0);
    const t0 = Math.min(...ts), t1 = Math.max(t0 + 1, ...ts);
    const top = Math.max(0.001, ...points.map((p) => p.seconds));
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 20);
    const y = (s) => T + (1 - s / top) * (H - T - B);
    root.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.appendChild(svg("line", { class: "axis", x1: L, x2: W - 10, y1: H - B, y2: H - B }));
    root.appendChild(svg("text", { class: "label", x: 4, y: T + 10 }, seconds(top)));
    root.appendChild(svg("text", { class: "label", x: 4, y: H - B }, "0"));
    root.appendChild(svg("text", { class: "label", x: L, y: H - 6 }, when(points[0].started_at)));
    root.appendChild(svg("polyline", { class: "line", points: points.map((p, i) => x(ts[i]) + "," + y(p.seconds)).join(" ") }));
    points.forEach((p, i) => {
      const dot = svg("circle", { class: "point", cx: x(ts[i]), cy: y(p.seconds), r: 4, fill: COLORS[p.status] || "#6b7280",
                                  "data-execution-id": p.execution_id },
                      svg("title", {}, p.execution_id + ": " + seconds(p.seconds) + " (" + p.status + ")"));
      const a = svg("a", { href: withToken(executionPath(p.execution_id)) }, dot);
      root.appendChild(a);
    });
    return root;
  }

  function workflowPage(name) {
    const message = el("div", { id: "message" });
    const summary = el("div", { id: "summary" });
    const chart = el("div", { class: "panel" });
    const body = el("tbody", { id: "executions" });
    setMain(el("h1", {}, "Workflow ", el("span", { id: "workflow-name" }, name)), message, summary,
      el("h2", {}, "Durations"), chart, el("h2", {}, "Recent executions"),
      el("table", {}, el("thead", {}, el("tr", {}, ["Execution", "Status", "Started", "Duration"].map((h) => el("th", {}, h)))), body));
    async function load() {
      try {
        const w = await api("workflows/" + encodeURIComponent(name));
        const rate = w.success_rate === null ? "—" : (w.success_rate * 100).toFixed(1) + " %";
        summary.replaceChildren(el("dl", { class: "meta" }, el("dt", {}, "success rate"),
          el("dd", { id: "success-rate" }, rate), el("dt", {}, "executions shown"), el("dd", {}, String(w.executions.length))));
        chart.replaceChildren(drawDurations(w.durations));
        body.replaceChildren(...w.executions.map((e) => el("tr", { "data-execution-id": e.execution_id },
          el("td", { class: "id" }, link(executionPath(e.execution_id), e.execution_id)), el("td", {}, badge(e.status)),
          el("td", {}, when(e.started_at)), el("td", {}, seconds(e.duration_seconds)))));
        message.replaceChildren();
      } catch (error) {
        showError(message, error);
      }
      poll(load, 5000);
    }
    load();
  }

  // --- list pages --------------------------------------------------------------------------

  // A page listing what GET /api/<name> returns under <name> (workers, schedules, limits) in a
  // table, tbody#<name>, redrawn every `every` ms: `row` draws one item, `none` says there is none.
  function listPage(title, name, headers, row, none, every) {
    const message = el("div", { id: "message" });
    const body = el("tbody", { id: name });
    setMain(el("h1", {}, title), message,
      el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), body));
    async function load() {
      try {
        const items = (await api(name))[name];
        body.replaceChildren(...items.map((item) => row(item)));
        if (!items.length) body.appendChild(el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, none)));
        message.replaceChildren();
      } catch (error) {
        showError(message, error);
      }
      poll(load, every);
    }
    load();
  }

  // --- workers page ------------------------------------------------------------------------

  function ago(text) {
    const value = time(text);
    if (value === null) return "—";
    const s = Math.max(0, Math.round((Date.now() - value) / 1000));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function flag(value, yes, no, yesClass, noClass) {
    return el("span", { class: "badge " + (value ? yesClass : noClass), "data-value": value ? "true" : "false" },
              value ? yes : no);
  }

  function workerRow(w) {
    return el("tr", { "data-worker-id": w.worker_id },
      el("td", { class: "id" }, w.worker_id),
      el("td", { class: "host" }, w.hostname || "—"),
      el("td", { class: "pid" }, w.pid === null || w.pid === undefined ? "—" : String(w.pid)),
      el("td", { class: "alive" }, flag(w.alive, "alive", "gone", "yes", "dead")),
      el("td", { class: "heartbeat" }, el("span", { title: w.heartbeat_at || "" }, ago(w.heartbeat_at))),
      el("td", { class: "running" }, (w.running || []).length
        ? el("ul", { class: "runs" }, w.running.map((r) => el("li", { "data-execution-id": r.execution_id },
            link(executionPath(r.execution_id), r.task_id || r.execution_id))))
        : el("span", { class: "muted" }, "idle")));
  }

  function workersPage() {
    listPage("Workers", "workers", ["Worker", "Host", "PID", "Alive", "Heartbeat", "Running"], workerRow,
             "No workers.", 2000);
  }

  // --- schedules page ----------------------------------------------------------------------

  function scheduleRow(s) {
    return el("tr", { "data-schedule": s.name },
      el("td", { class: "name" }, s.name),
      el("td", { class: "workflow" }, link(workflowPath(s.workflow_name), s.workflow_name)),
      el("td", { class: "cron" }, el("code", {}, s.cron)),
      el("td", { class: "timezone" }, s.timezone || "UTC"),
      el("td", { class: "catchup" }, s.catchup ? "yes" : "no"),
      el("td", { class: "paused" }, flag(s.paused, "paused", "active", "paused", "yes")),
      el("td", { class: "next-fire" }, el("span", { title: s.next_fire_time || "" }, when(s.next_fire_time))),
      el("td", { class: "last-fire" }, el("span", { title: s.last_fire_time || "" }, when(s.last_fire_time))),
      el("td", { class: "id last-execution" }, s.last_execution_id
        ? link(executionPath(s.last_execution_id), s.last_execution_id) : "—"));
  }

  function schedulesPage() {
    listPage("Schedules", "schedules", ["Name", "Workflow", "Cron", "Timezone", "Catch-up", "Paused", "Next fire",
             "Last fire", "Last execution"], scheduleRow, "No schedules.", 5000);
  }

  // --- limits page -------------------------------------------------------------------------

  // A count, or "-" where there is none (a "*" default has no running or waiting count), as the
  // command line's `limits list` writes it.
  function count(value) {
    return value === null || value === undefined ? "-" : String(value);
  }

  function rate(limit) {
    return limit.rate === null || limit.rate === undefined ? "-" : limit.rate + " per " + limit.per + " s";
  }

  function limitRow(l) {
    return el("tr", { "data-limit": l.name },
      el("td", { class: "name" }, l.name),
      el("td", { class: "concurrency" }, count(l.concurrency)),
      el("td", { class: "rate" }, rate(l)),
      el("td", { class: "running" }, count(l.running)),
      el("td", { class: "waiting" }, count(l.waiting)));
  }

  function limitsPage() {
    listPage("Limits", "limits", ["Name", "Concurrency", "Rate", "Running", "Waiting"], limitRow, "No limits.", 2000);
  }

  // --- router ------------------------------------------------------------------------------

  function route() {
    document.getElementById("home").setAttribute("href", withToken("/"));
    const path = location.pathname;
    for (const a of document.querySelectorAll("#nav a[data-nav]")) {
      const target = a.getAttribute("data-nav");
      a.setAttribute("href", withToken(target));
      const current = target === "/" ? path === "/" || path.startsWith("/executions/") : path === target;
      if (current) a.classList.add("current");
    }
    let match;
    if ((match = /^\/executions\/(.+)$/.exec(path))) executionPage(decodeURIComponent(match[1]));
    else if ((match = /^\/workflows\/(.+)$/.exec(path))) workflowPage(decodeURIComponent(match[1]));
    else if (path === "/workers") workersPage();
    else if (path === "/schedules") schedulesPage();
    else if (path === "/limits") limitsPage();
    else executionsPage();
  }

  async function start() {
    try {
      const health = await api("health");
      STATUSES = health.execution_statuses;
      FINAL = health.final_execution_statuses;
      TASK_STATUSES = health.task_statuses || [];
      FINAL_TASK = health.final_task_statuses || [];
    } catch (error) {
      // The page's own requests fail the same way and show why.
    }
    route();
  }

  start();
})();
