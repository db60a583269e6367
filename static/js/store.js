// The store's app runner: streams answers from /apps/<slug>/run (server-sent events over a POST), with a stop
// button that aborts the request (the server then frees the model's slot). No dependencies, no CDN.
// Its words go through Django's JavaScript catalog (/jsi18n/, loaded first by base.html): gettext, interpolate.
// Loaded by base.html on every page: the first part below is page-wide, the runner returns where there is no app.

// Page-wide behaviour that the templates once wrote inline (the Content-Security-Policy runs no inline script):
// a form with data-confirm asks first; a select with data-autosubmit submits its form on change; a button with
// data-copy="<id>" copies the value of that element.
(function () {
  "use strict";
  document.addEventListener("submit", (e) => {
    const message = e.target.dataset ? e.target.dataset.confirm : null;
    if (message && !window.confirm(message)) e.preventDefault();
  });
  document.addEventListener("change", (e) => {
    if (e.target.matches("select[data-autosubmit]") && e.target.form) e.target.form.submit();
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-copy]");
    const source = button && document.getElementById(button.dataset.copy);
    if (!source) return;
    const done = () => {
      const label = button.textContent;
      button.textContent = "✓";
      setTimeout(() => { button.textContent = label; }, 1200);
    };
    if (navigator.clipboard) {
      navigator.clipboard.writeText(source.value).then(done, () => source.select());
    } else {
      source.select();  // no clipboard here (not a secure context): leave the text selected to copy by hand
    }
  });
})();

// Reading a run's answer: a POST answered with server-sent events ({"delta"}, {"notice"}, {"error"}, then {"done",
// ...}), or with a JSON error before anything streamed. Shared by the app runner below and /compare/ (compare.js).
window.StoreRun = (function () {
  "use strict";
  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // POST `body` to `url`, read the events: handlers.onDelta(text), onNotice(text), onError(message, code). Resolves
  // with the final event, or null (an error, given to onError, or an abort through `signal`).
  async function stream(url, body, handlers, signal) {
    let final = null;
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(body),
        signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        let message = interpolate(gettext("Something went wrong (%(status)s). Please try again."), { status: response.status }, true);
        let explained = false, code = null;
        try {
          const data = await response.json();
          if (data.error && data.error.message) { message = data.error.message; code = data.error.code; explained = true; }
        } catch (e) { /* not JSON: keep the generic message */ }
        // A 403 the server did not explain is Django's CSRF page: the session expired.
        if (response.status === 403 && !explained) message = gettext("Your session has expired: reload the page and try again.");
        handlers.onError(message, code);
        return null;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (!chunk.startsWith("data: ")) continue;
          const event = JSON.parse(chunk.slice(6));
          if (event.delta) handlers.onDelta(event.delta);
          if (event.notice) handlers.onNotice(event.notice);
          if (event.error) handlers.onError(event.error.message || gettext("The model failed to answer. Please try again."));
          if (event.done) final = event;
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") handlers.onError(gettext("The connection was lost. Check your network and try again."));
    }
    return final;
  }

  return { csrfToken, stream };
})();

(function () {
  "use strict";
  const configNode = document.getElementById("app-config");
  const panel = document.getElementById("use");
  if (!configNode || !panel) return;
  const config = JSON.parse(configNode.textContent);
  const $ = (sel) => panel.querySelector(sel);
  const errorBox = $('[data-role="error"]');
  const noticeBox = $('[data-role="notice"]');
  const composer = $('[data-role="composer"]');
  const sendButton = $('[data-role="send"]');
  const stopButton = $('[data-action="stop"]');
  let controller = null;

  const csrfToken = StoreRun.csrfToken;

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  // Markdown, safely: everything is escaped first, then a few patterns become tags. No raw HTML ever passes.
  function renderMarkdown(text) {
    const parts = escapeHtml(text).split(/```/);
    return parts.map((part, i) => {
      if (i % 2 === 1) return "<pre><code>" + part.replace(/^[a-z0-9+-]*\n/i, "") + "</code></pre>";
      return part
        .replace(/`([^`\n]+)`/g, "<code>$1</code>")
        .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
        .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
        .replace(/\n/g, "<br>");
    }).join("");
  }

  function showError(message, code) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
    if (code === "trial_limit" || code === "login_required") {  // the way on: an account
      const link = document.createElement("a");
      link.href = "/accounts/signup/?next=" + encodeURIComponent(location.pathname);
      link.textContent = gettext("Sign up");
      errorBox.append(" ", link);
    }
  }

  function showNotice(message) {
    noticeBox.textContent = message;
    noticeBox.hidden = !message;
  }

  function setBusy(busy) {
    if (sendButton) sendButton.disabled = busy;
    if (stopButton) stopButton.hidden = !busy;
    panel.classList.toggle("busy", busy);
  }

  // POST `body`, read the event stream; onDelta(text) for each piece, resolves with the final event.
  async function streamRun(body, onDelta) {
    controller = new AbortController();
    setBusy(true);
    showError("");
    showNotice("");
    try {
      return await StoreRun.stream(config.runUrl, body, { onDelta, onNotice: showNotice, onError: showError }, controller.signal);
    } finally {
      controller = null;
      setBusy(false);
    }
  }

  if (stopButton) stopButton.addEventListener("click", () => { if (controller) controller.abort(); });

  // The knowledge passages an answer was given (file, heading, passage), under it: text only, so a passage of an
  // HTML file shows its words and never renders.
  function showSources(container, sources) {
    const old = container.querySelector(":scope > .sources");
    if (old) old.remove();
    if (!sources || !sources.length) return;
    const box = document.createElement("details");
    box.className = "sources";
    const summary = document.createElement("summary");
    summary.textContent = interpolate(ngettext("%s source", "%s sources", sources.length), [sources.length]);
    box.appendChild(summary);
    const list = document.createElement("ol");
    for (const source of sources) {
      const item = document.createElement("li");
      item.value = source.index;
      const title = document.createElement("strong");
      title.className = "source-file";
      title.textContent = source.heading ? source.file + " › " + source.heading : source.file;
      const passage = document.createElement("blockquote");
      passage.className = "source-passage";
      passage.textContent = source.text;
      item.append(title, passage);
      list.appendChild(item);
    }
    box.appendChild(list);
    container.appendChild(box);
  }

  function copyText(text, button) {
    if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => {
      const label = button.textContent;
      button.textContent = "✓";
      setTimeout(() => { button.textContent = label; }, 1200);
    });
  }

  // ---- single-output apps: generator and translator ----
  const output = $('[data-role="output"]');
  const copyOutput = $('[data-action="copy-output"]');
  if (copyOutput) copyOutput.addEventListener("click", () => copyText(output.textContent, copyOutput));

  // A run's answer is complete: feedback.js puts its thumbs under it (the run's id, and what it ran on).
  function answered(final, inputs, answer) {
    panel.dispatchEvent(new CustomEvent("store:answer", { detail: { anchor: copyOutput || output, run: final.run, inputs, answer } }));
  }

  if (config.kind === "translator") {
    $('[data-action="swap"]').addEventListener("click", () => {
      const source = composer.elements.source, target = composer.elements.target;
      [source.value, target.value] = [target.value, source.value];
      if (output.textContent) {
        composer.elements.text.value = output.textContent;
        output.textContent = "";
      }
    });
    composer.addEventListener("submit", async (e) => {
      e.preventDefault();
      output.textContent = "";
      const f = composer.elements;
      const inputs = { text: f.text.value, source: f.source.value, target: f.target.value };
      const final = await streamRun(inputs, (d) => { output.textContent += d; });
      if (final) answered(final, inputs, output.textContent);
    });
  }

  if (config.kind === "generator") {
    composer.addEventListener("submit", async (e) => {
      e.preventDefault();
      output.textContent = "";
      const fields = {};
      for (const el of composer.querySelectorAll("textarea, select")) fields[el.name] = el.value;
      let text = "";
      const final = await streamRun({ fields }, (d) => { text += d; output.innerHTML = renderMarkdown(text); });
      if (final) showSources(output, final.sources);
      if (final) answered(final, { fields }, text);
    });
  }

  // ---- classifier: one JSON answer, the label and a bar per label's probability ----
  if (config.kind === "classifier") {
    const result = $('[data-role="classification"]');
    composer.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError("");
      result.hidden = true;
      const text = composer.elements.text.value;
      if (!text.trim()) { showError(gettext("Type a text to classify.")); return; }
      setBusy(true);
      try {
        const response = await fetch(config.runUrl, {
          method: "POST", credentials: "same-origin", body: JSON.stringify({ text }),
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        });
        let data = null;
        try { data = await response.json(); } catch (err) { /* not JSON: the generic message below */ }
        if (!response.ok || !data || !data.scores) {
          showError((data && data.error && data.error.message) ||
            interpolate(gettext("Something went wrong (%(status)s). Please try again."), { status: response.status }, true));
          return;
        }
        $('[data-role="label"]').textContent = data.label;
        const list = $('[data-role="scores"]');
        list.textContent = "";
        for (const [label, p] of Object.entries(data.scores).sort((a, b) => b[1] - a[1])) {
          const item = document.createElement("li");
          const name = document.createElement("span");
          name.className = "label-name";
          name.textContent = label;
          const bar = document.createElement("span");
          bar.className = "label-bar";
          const fill = document.createElement("span");
          fill.style.width = (100 * p).toFixed(1) + "%";
          bar.appendChild(fill);
          const value = document.createElement("span");
          value.className = "label-value";
          value.textContent = (100 * p).toFixed(1) + "%";
          item.append(name, bar, value);
          list.appendChild(item);
        }
        result.hidden = false;
      } catch (err) {
        showError(gettext("The connection was lost. Check your network and try again."));
      } finally {
        setBusy(false);
      }
    });
  }

  // ---- chat ----
  if (config.kind === "chatbot") {
    const log = $('[data-role="log"]');
    const input = composer.elements.message;
    const regenerate = $('[data-action="regenerate"]');
    const list = $('[data-role="conversations"]');
    let conversation = null;
    let history = []; // anonymous visitors keep the conversation in the page

    function addMessage(role, text, id) {
      const item = document.createElement("div");
      item.className = "message-item " + role;
      const body = document.createElement("div");
      body.className = "body";
      body.innerHTML = role === "assistant" ? renderMarkdown(text) : escapeHtml(text).replace(/\n/g, "<br>");
      item.appendChild(body);
      const tools = document.createElement("div");
      tools.className = "tools";
      const copy = document.createElement("button");
      copy.type = "button"; copy.className = "link-button"; copy.textContent = gettext("Copy");
      copy.addEventListener("click", () => copyText(item.dataset.text, copy));
      tools.appendChild(copy);
      if (role === "user" && id && config.loggedIn) {
        const edit = document.createElement("button");
        edit.type = "button"; edit.className = "link-button"; edit.textContent = gettext("Edit");
        edit.addEventListener("click", () => editMessage(item));
        tools.appendChild(edit);
      }
      item.appendChild(tools);
      item.dataset.text = text;
      if (id) item.dataset.id = id;
      log.appendChild(item);
      log.scrollTop = log.scrollHeight;
      return item;
    }

    function setText(item, text) {
      item.dataset.text = text;
      item.querySelector(".body").innerHTML = renderMarkdown(text);
      log.scrollTop = log.scrollHeight;
    }

    async function send(body, userText) {
      const starters = $('[data-role="starters"]');
      if (starters) starters.hidden = true;
      if (userText !== null) addMessage("user", userText);
      const answer = addMessage("assistant", "");
      answer.classList.add("streaming");
      let text = "";
      const final = await streamRun(body, (d) => { text += d; setText(answer, text); });
      answer.classList.remove("streaming");
      if (!final) {
        if (!text) answer.remove();
        return;
      }
      if (!config.loggedIn) {
        history.push({ role: "user", content: body.message }, { role: "assistant", content: text });
      } else if (final.conversation && final.conversation !== conversation) {
        conversation = final.conversation;
        await openConversation(conversation); // picks up message ids (for edit) and the new list entry
        refreshList(conversation, userText);
      } else if (conversation) {
        await openConversation(conversation);
      }
      if (regenerate) regenerate.hidden = !config.loggedIn;
      const answers = log.querySelectorAll(".message-item.assistant");
      if (answers.length) showSources(answers[answers.length - 1], final.sources);
    }

    function refreshList(id, title) {
      if (!list || list.querySelector('[data-id="' + id + '"]')) return;
      const li = document.createElement("li");
      li.dataset.id = id;
      const open = document.createElement("button");
      open.type = "button"; open.className = "link-button"; open.dataset.action = "open-chat"; open.dataset.id = id;
      open.textContent = (title || gettext("New chat")).slice(0, 60);
      li.appendChild(open);
      list.prepend(li);
    }

    async function openConversation(id) {
      const response = await fetch("/conversations/" + id + "/", { credentials: "same-origin" });
      if (!response.ok) { showError(gettext("This conversation could not be opened.")); return; }
      const data = await response.json();
      conversation = data.id;
      log.innerHTML = "";
      for (const m of data.messages) addMessage(m.role, m.content, m.id);
      if (regenerate) regenerate.hidden = data.messages.length === 0;
      const starters = $('[data-role="starters"]');
      if (starters) starters.hidden = data.messages.length > 0;
      panel.dispatchEvent(new CustomEvent("store:conversation", { detail: { id: data.id } }));  // feedback.js
    }

    function editMessage(item) {
      const text = window.prompt(gettext("Edit your message"), item.dataset.text);
      if (text === null || !text.trim()) return;
      let node = item;
      while (node) { const next = node.nextSibling; node.remove(); node = next; }
      send({ conversation, edit_message: Number(item.dataset.id), message: text }, text);
    }

    composer.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text || controller) return;
      input.value = "";
      const body = config.loggedIn ? { message: text, conversation } : { message: text, history };
      send(body, text);
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); composer.requestSubmit(); }
    });
    panel.addEventListener("click", async (e) => {
      const button = e.target.closest("button[data-action]");
      if (!button) return;
      const action = button.dataset.action;
      if (action === "starter") { input.value = button.textContent; composer.requestSubmit(); }
      if (action === "new-chat") {
        conversation = null; history = []; log.innerHTML = "";
        const starters = $('[data-role="starters"]');
        if (starters) starters.hidden = false;
        if (regenerate) regenerate.hidden = true;
        input.focus();
      }
      if (action === "open-chat") openConversation(button.dataset.id);
      if (action === "regenerate" && conversation) {
        const last = log.lastElementChild;
        if (last && last.classList.contains("assistant")) last.remove();
        send({ conversation, regenerate: true }, null);
      }
      if (action === "rename-chat") {
        const li = button.closest("li");
        const title = window.prompt(gettext("New title"), li.querySelector('[data-action="open-chat"]').textContent);
        if (!title) return;
        const r = await fetch("/conversations/" + button.dataset.id + "/rename", {
          method: "POST", headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify({ title }), credentials: "same-origin",
        });
        if (r.ok) li.querySelector('[data-action="open-chat"]').textContent = (await r.json()).title;
      }
      if (action === "delete-chat" && window.confirm(gettext("Delete this conversation?"))) {
        const r = await fetch("/conversations/" + button.dataset.id + "/delete", {
          method: "POST", headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin",
        });
        if (r.ok) {
          button.closest("li").remove();
          if (String(conversation) === button.dataset.id) { conversation = null; log.innerHTML = ""; }
        }
      }
    });
  }
})();
