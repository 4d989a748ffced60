/* tenantgate console: the chat playground (/console/playground).
   It calls the gateway like any client would: with an API key, on /v1/chat/completions, streaming. The key is a
   short-lived personal key the console makes for it (POST /console/playground/key, session + CSRF token); it is
   kept in sessionStorage (this tab only) and replaced when it expires or is refused (401).
   No inline script or style (CSP): everything hangs off ids in playground.html. Loaded with `defer`. */
(function () {
  "use strict";

  var STORE = "tenantgate.playground.key";
  var form = document.getElementById("pg-form");
  if (!form) return;  // no team or no model: the page explains, nothing to drive
  var transcript = document.getElementById("pg-transcript");
  var emptyNote = document.getElementById("pg-empty");
  var input = document.getElementById("pg-message");
  var modelSelect = document.getElementById("pg-model");
  var sendButton = document.getElementById("pg-send");
  var stopButton = document.getElementById("pg-stop");
  var clearButton = document.getElementById("pg-clear");
  var statusLine = document.getElementById("pg-status");

  var history = [];          // the conversation sent with every turn: {role, content}
  var prices = {};           // model -> {input, output} USD per million tokens
  var controller = null;     // aborts the running turn
  var conversation = 0;      // bumped by "New chat": a turn of an earlier conversation shows nothing more

  function csrf() {
    return window.tenantgate && window.tenantgate.csrf ? window.tenantgate.csrf() : "";
  }
  function setStatus(text) { statusLine.textContent = text || ""; }

  // ---------- Prices (for the cost of each turn) ----------
  fetch("/me/models", { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { return r.ok ? r.json() : { data: [] }; })
    .then(function (body) {
      (body.data || []).forEach(function (m) {
        prices[m.id] = { input: Number(m.input_price_per_mtok) || 0, output: Number(m.output_price_per_mtok) || 0 };
      });
    })
    .catch(function () { /* costs show as unknown */ });

  // ---------- The playground key ----------
  function storedKey() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
      // A key of another login (same tab, other session) or one about to expire is not reused.
      if (!saved || saved.session !== csrf() || !saved.key) return null;
      if (saved.expires_at && Date.parse(saved.expires_at) - Date.now() < 5 * 60 * 1000) return null;
      return saved.key;
    } catch (e) { return null; }
  }
  function dropKey() {
    try { sessionStorage.removeItem(STORE); } catch (e) { /* storage blocked: nothing kept anyway */ }
  }
  async function newKey() {
    var response = await fetch("/console/playground/key", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), Accept: "application/json" }
    });
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok || !body.key) throw new Error(errorText(body, "Could not get a playground key (HTTP " + response.status + ")."));
    try {
      sessionStorage.setItem(STORE, JSON.stringify({ key: body.key, expires_at: body.expires_at, session: csrf() }));
    } catch (e) { /* kept for this page only */ }
    return body.key;
  }
  async function getKey() { return storedKey() || newKey(); }

  function errorText(body, fallback) {
    return body && body.error && body.error.message ? String(body.error.message) : fallback;
  }

  // ---------- The transcript ----------
  function bubble(role, text) {
    if (emptyNote) { emptyNote.remove(); emptyNote = null; }
    var node = document.createElement("div");
    node.className = "msg " + role;
    var body = document.createElement("span");
    body.className = "msg-text";
    body.textContent = text;
    node.appendChild(body);
    transcript.appendChild(node);
    scrollDown();
    return node;
  }
  function meta(node, text) {
    var line = document.createElement("span");
    line.className = "msg-meta";
    line.textContent = text;
    node.appendChild(line);
    scrollDown();
  }
  function scrollDown() { transcript.scrollTop = transcript.scrollHeight; }

  function formatCost(usd) {
    if (usd === 0) return "$0.00";
    if (usd >= 0.01) return "$" + usd.toFixed(2);
    return "$" + usd.toFixed(6).replace(/0+$/, "");
  }
  function usageLine(model, usage, seconds) {
    var parts = [];
    var p = usage.prompt_tokens || 0, c = usage.completion_tokens || 0;
    parts.push(p + " prompt + " + c + " completion tokens");
    var price = prices[model];
    parts.push(price ? formatCost((p * price.input + c * price.output) / 1e6) : "cost unknown");
    parts.push(seconds.toFixed(1) + " s");
    return parts.join(" · ");
  }

  // ---------- Streaming a turn ----------
  function call(key, model, signal) {
    return fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "omit",  // the key is the credential, not the console's cookie
      signal: signal,
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({
        model: model, messages: history, stream: true, stream_options: { include_usage: true }
      })
    });
  }

  // Reads an SSE body, calling onEvent(parsed JSON) per data event until [DONE] or the end of the stream.
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
      var end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        var block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        var data = block.split("\n").filter(function (line) { return line.indexOf("data:") === 0; })
          .map(function (line) { return line.slice(5).replace(/^ /, ""); }).join("\n");
        if (!data) continue;
        if (data === "[DONE]") { reader.cancel().catch(function () {}); return; }
        var parsed;
        try { parsed = JSON.parse(data); } catch (e) { continue; }  // not JSON: not ours to show
        onEvent(parsed);
      }
    }
  }

  async function send(text) {
    var model = modelSelect.value;
    var mine = conversation;
    history.push({ role: "user", content: text });
    bubble("user", text);
    var reply = bubble("assistant", "");
    var replyText = reply.querySelector(".msg-text");
    reply.setAttribute("aria-busy", "true");
    replyText.textContent = "…";
    var started = performance.now();
    var usage = null, content = "", failed = null;
    busy(true);
    controller = new AbortController();
    try {
      var key = await getKey();
      var response = await call(key, model, controller.signal);
      if (response.status === 401) {  // expired, revoked or rotated elsewhere: one fresh key, one retry
        dropKey();
        key = await newKey();
        response = await call(key, model, controller.signal);
      }
      if (!response.ok) {
        var body = await response.json().catch(function () { return {}; });
        throw new Error(errorText(body, "The gateway answered HTTP " + response.status + "."));
      }
      await readEvents(response, function (event) {
        if (event.error) { failed = errorText(event, "The stream failed."); return; }
        if (event.usage) usage = event.usage;
        var choice = event.choices && event.choices[0];
        var piece = choice && choice.delta && choice.delta.content;
        if (piece) {
          content += piece;
          replyText.textContent = content;
          scrollDown();
        }
      });
      if (failed) throw new Error(failed);
    } catch (error) {
      failed = error && error.name === "AbortError" ? "Stopped." : (error && error.message) || "The request failed.";
    } finally {
      busy(false);
      controller = null;
      reply.removeAttribute("aria-busy");
    }
    var seconds = (performance.now() - started) / 1000;
    if (mine !== conversation) return;  // the transcript was cleared meanwhile
    if (failed && !content) {
      reply.remove();
      var note = bubble("error", failed);
      note.setAttribute("role", "alert");
      history.pop();  // the turn did not happen: the message can be sent again
      input.value = input.value || text;
      return;
    }
    replyText.textContent = content;
    history.push({ role: "assistant", content: content });
    meta(reply, (usage ? usageLine(model, usage, seconds) : "usage not reported · " + seconds.toFixed(1) + " s")
      + (failed ? " · " + failed : ""));
  }

  function busy(on) {
    sendButton.disabled = on;
    modelSelect.disabled = on;
    stopButton.classList.toggle("hidden", !on);
    setStatus(on ? "Waiting for the reply…" : "");
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (controller) return;
    var text = input.value.trim();
    if (!text) { input.focus(); return; }
    input.value = "";
    send(text).then(function () { input.focus(); });
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stopButton.addEventListener("click", function () { if (controller) controller.abort(); });
  clearButton.addEventListener("click", function () {
    conversation += 1;
    if (controller) controller.abort();
    history = [];
    transcript.replaceChildren();
    var note = document.createElement("p");
    note.className = "muted";
    note.textContent = "New conversation. Send a message to start.";
    transcript.appendChild(note);
    emptyNote = note;
    input.focus();
  });
})();
