/* tenantgate console: small progressive enhancements. Every page works without this file.
   The CSP forbids inline scripts and handlers, so behaviour hangs off data-* attributes and delegated
   listeners on document; content swapped in by htmx is covered by the same listeners, and by htmx:load
   for the parts that need setting up (charts, filters). Loaded with `defer`, after htmx and Chart.js. */
(function () {
  "use strict";

  var root = document.documentElement;
  var THEME_KEY = "tenantgate.theme";

  // ---------- Theme ----------
  // Applied at the top level, i.e. as soon as this deferred script runs, before DOMContentLoaded. A cookie
  // mirrors the choice so that the server may render html[data-theme] itself and avoid any flash.
  function storedTheme() {
    try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; }  // storage may be blocked
  }
  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
    else root.removeAttribute("data-theme");
  }
  function currentTheme() {
    var explicit = root.getAttribute("data-theme");
    if (explicit === "light" || explicit === "dark") return explicit;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function setTheme(theme) {
    applyTheme(theme);
    try { localStorage.setItem(THEME_KEY, theme); } catch (e) { /* the cookie still remembers it */ }
    document.cookie = "tenantgate_theme=" + theme + "; Path=/console; Max-Age=31536000; SameSite=Lax";
    document.dispatchEvent(new CustomEvent("tenantgate:themechange", { detail: { theme: theme } }));
  }
  if (storedTheme()) applyTheme(storedTheme());
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
    if (!root.hasAttribute("data-theme")) redrawCharts();  // only matters while following the OS
  });

  // ---------- CSRF ----------
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrf();
    if (token) event.detail.headers["X-CSRF-Token"] = token;
  });

  // ---------- Copy to clipboard ----------
  function copyText(text) {
    // The async Clipboard API needs a secure context (https or localhost); fall back to execCommand for a
    // gateway served over plain http on a LAN. The fallback textarea is hidden by a class, not a style (CSP).
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.className = "visually-hidden";
      area.setAttribute("readonly", "");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error("copy failed"));
    });
  }
  function flashLabel(button, text) {
    if (!button.hasAttribute("data-label")) button.setAttribute("data-label", button.textContent);
    button.textContent = text;
    clearTimeout(button._tgTimer);
    button._tgTimer = setTimeout(function () { button.textContent = button.getAttribute("data-label"); }, 1500);
  }

  // ---------- Table sorting ----------
  function cellKey(row, index) {
    var cell = row.cells[index];
    if (!cell) return "";
    return (cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent).trim();
  }
  function parseNumber(text) {
    var cleaned = text.replace(/[,\s\u00a0\u202f]/g, "");  // "1,234" and "1 234" are numbers too
    return cleaned === "" ? NaN : Number(cleaned);
  }
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function sortTable(table, th) {
    var index = th.cellIndex;
    var descending = th.getAttribute("aria-sort") === "ascending";  // first click ascends, then it toggles
    th.parentElement.querySelectorAll("th[aria-sort]").forEach(function (other) {
      if (other !== th) other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    Array.prototype.forEach.call(table.tBodies, function (tbody) {
      var rows = Array.prototype.slice.call(tbody.rows).map(function (row) {
        return { row: row, key: cellKey(row, index) };
      });
      // Numeric only when every non-empty key is a number; empty cells always go last.
      var numeric = rows.every(function (r) { return r.key === "" || !isNaN(parseNumber(r.key)); });
      rows.sort(function (a, b) {
        if (a.key === "" || b.key === "") return (a.key === "") - (b.key === "");
        var order = numeric ? parseNumber(a.key) - parseNumber(b.key) : collator.compare(a.key, b.key);
        return descending ? -order : order;
      });
      var fragment = document.createDocumentFragment();
      rows.forEach(function (r) { fragment.appendChild(r.row); });
      tbody.appendChild(fragment);
    });
  }

  // ---------- Table filtering ----------
  // <input data-filter-table="#id" [data-filter-empty="#msg"]>: hides rows without the text (any case);
  // the optional element is shown when nothing matches.
  function filterTable(input) {
    var table = document.querySelector(input.getAttribute("data-filter-table"));
    if (!table) return;
    var needle = input.value.trim().toLowerCase();
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies, function (tbody) {
      Array.prototype.forEach.call(tbody.rows, function (row) {
        row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) === -1;
        if (!row.hidden) shown += 1;
      });
    });
    var empty = input.hasAttribute("data-filter-empty") && document.querySelector(input.getAttribute("data-filter-empty"));
    if (empty) { empty.hidden = shown > 0; empty.classList.remove("hidden"); }  // either way of hiding it
  }

  // ---------- Delegated events ----------
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var copy = target.closest("[data-copy-target]");
    if (copy) {
      var source = document.querySelector(copy.getAttribute("data-copy-target"));
      if (!source) return;
      var text = /^(INPUT|TEXTAREA|SELECT)$/.test(source.tagName) ? source.value : source.textContent;
      copyText(text.trim()).then(
        function () { flashLabel(copy, "Copied"); },
        function () { flashLabel(copy, "Copy failed"); }
      );
      return;
    }
    if (target.closest("[data-theme-toggle]")) {
      setTheme(currentTheme() === "dark" ? "light" : "dark");
      return;
    }
    var sort = target.closest("table[data-sortable] th button.sort");
    if (sort) sortTable(sort.closest("table"), sort.closest("th"));
  });

  // Confirmation. Capture phase on document runs before htmx's listeners on the element itself, so a
  // cancelled confirm stops a plain submit, a link and an hx-post alike. Buttons and links are asked on
  // click; a form's own data-confirm is asked on submit (so a confirmed button is not asked twice).
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("button[data-confirm], a[data-confirm], input[data-confirm]") : null;
    if (target && !target.disabled && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("input", function (event) {
    if (event.target instanceof Element && event.target.matches("input[data-filter-table]")) filterTable(event.target);
  });

  // ---------- Charts ----------
  var drawn = new Set();       // canvases with a chart, redrawn when the theme changes
  var specs = new WeakMap();   // canvas -> last spec

  function cssVar(name) { return getComputedStyle(root).getPropertyValue(name).trim(); }
  function alpha(hex, a) {    // "#rrggbb" + alpha; the palette variables are plain hex on purpose
    return /^#[0-9a-f]{6}$/i.test(hex) ? hex + Math.round(a * 255).toString(16).padStart(2, "0") : hex;
  }
  function chartMessage(canvas, text) {
    var box = canvas.parentElement;
    var note = box.querySelector(".chart-message");
    if (!note && text) {
      note = document.createElement("p");
      note.className = "chart-message";
      box.appendChild(note);
    }
    if (note) { note.textContent = text || ""; note.hidden = !text; }
  }

  function drawChart(canvas, spec) {
    if (!window.Chart) throw new Error("Chart.js is not loaded");
    var old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    specs.set(canvas, spec);
    drawn.add(canvas);
    var datasets = spec.datasets || [];
    var hasData = (spec.labels || []).length > 0 && datasets.some(function (d) { return (d.data || []).length > 0; });
    chartMessage(canvas, hasData ? "" : canvas.getAttribute("data-chart-empty") || "No data yet");
    if (!canvas.hasAttribute("aria-label")) {
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", spec.y_label || datasets.map(function (d) { return d.label; }).join(", ") || "Chart");
    }
    var palette = [1, 2, 3, 4, 5, 6].map(function (i) { return cssVar("--chart-" + i); });
    var text = cssVar("--muted"), grid = cssVar("--chart-grid"), line = spec.type === "line";
    var axis = { ticks: { color: text }, grid: { color: grid }, border: { color: grid } };
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    return new window.Chart(canvas, {
      type: line ? "line" : "bar",
      data: {
        labels: spec.labels || [],
        datasets: datasets.map(function (d, i) {
          var colour = palette[i % palette.length];
          return {
            label: d.label, data: d.data, borderColor: colour,
            backgroundColor: line ? alpha(colour, 0.15) : alpha(colour, 0.85),
            borderWidth: line ? 2 : 0, borderRadius: line ? 0 : 3, tension: 0.25,
            pointRadius: line ? 2 : 0, fill: line && datasets.length === 1, maxBarThickness: 48
          };
        })
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,   // the .chart container's CSS height rules
        animation: window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : { duration: 300 },
        color: text,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: datasets.length > 1, labels: { color: text, boxWidth: 12 } } },
        scales: {
          x: axis,
          y: Object.assign({}, axis, {
            beginAtZero: true,
            // counts (requests, tokens) get whole-number ticks; money keeps its decimals
            ticks: { color: text, precision: spec.integer === false ? undefined : 0 },
            title: { display: !!spec.y_label, text: spec.y_label || "", color: text }
          })
        }
      }
    });
  }

  function redrawCharts() {
    drawn.forEach(function (canvas) {
      if (canvas.isConnected) drawChart(canvas, specs.get(canvas));
      else drawn.delete(canvas);
    });
  }
  document.addEventListener("tenantgate:themechange", redrawCharts);

  function loadChart(canvas) {
    var url = new URL(canvas.getAttribute("data-chart"), window.location.href);
    if (url.origin !== window.location.origin) { chartMessage(canvas, "Chart source must be same-origin"); return; }
    chartMessage(canvas, "Loading…");
    fetch(url.href, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (spec) { drawChart(canvas, spec); })
      .catch(function () { chartMessage(canvas, "Could not load this chart."); });
  }

  // ---------- Set-up, for the first page and for every fragment htmx swaps in ----------
  function init(scope) {
    scope.querySelectorAll("[data-theme-toggle][hidden]").forEach(function (b) { b.hidden = false; });
    scope.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.hasAttribute("data-chart-loaded")) return;  // htmx:load also fires for the first page
      canvas.setAttribute("data-chart-loaded", "");
      loadChart(canvas);
    });
    // <form data-autosubmit>: submitted once on load (e.g. the one-time login link); its button stays the no-JS way.
    scope.querySelectorAll("form[data-autosubmit]:not([data-submitted])").forEach(function (form) {
      form.setAttribute("data-submitted", "");
      form.requestSubmit();
    });
    scope.querySelectorAll("input[data-filter-table]").forEach(function (input) {
      if (input.value) filterTable(input);  // a value restored by the browser's back button
    });
  }
  document.addEventListener("htmx:load", function (event) { if (event.target instanceof Element) init(event.target); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(document); });
  else init(document);

  window.tenantgate = { csrf: csrf, drawChart: drawChart, copyText: copyText, setTheme: setTheme };
})();
