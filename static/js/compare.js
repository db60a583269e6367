// /compare/: start a comparison (JSON), then read both answers at once with the app runner's reader
// (StoreRun.stream, static/js/store.js), one request per side; once both have ended, the vote buttons appear and a
// vote redraws the leaderboard. No inline script (the Content-Security-Policy runs none).
(function () {
  "use strict";
  const configNode = document.getElementById("compare-config");
  const root = document.getElementById("compare");
  if (!configNode || !root) return;
  const config = JSON.parse(configNode.textContent);
  const form = root.querySelector('[data-role="compare-form"]');
  const errorBox = root.querySelector('[data-role="error"]');
  const sendButton = form.querySelector('[data-role="send"]');
  const stopButton = form.querySelector('[data-action="stop"]');
  const panes = document.querySelector('[data-role="panes"]');
  const voteBox = document.querySelector('[data-role="vote"]');
  const voted = voteBox.querySelector('[data-role="voted"]');
  const board = document.querySelector('[data-role="leaderboard"]');
  let controller = null;
  let comparison = null;

  function show(box, message) {
    box.textContent = message || "";
    box.hidden = !message;
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": StoreRun.csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const message = data && data.error ? data.error.message
        : interpolate(gettext("Something went wrong (%(status)s). Please try again."), { status: response.status }, true);
      throw new Error(message);
    }
    return data;
  }

  function fillPane(pane, answer) {
    pane.querySelector('[data-role="label"]').textContent = answer.label;
    const facts = pane.querySelector('[data-role="settings"]');
    facts.replaceChildren();
    for (const [name, value] of Object.entries(answer.settings)) {
      if (value === null || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = name.replace(/_/g, " ");
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      facts.append(dt, dd);
    }
    show(pane.querySelector('[data-role="error"]'), "");
    show(pane.querySelector('[data-role="notice"]'), "");
    const output = pane.querySelector('[data-role="output"]');
    output.textContent = "";
    output.classList.add("streaming");
  }

  function runPane(answer, signal) {
    const pane = panes.querySelector(`[data-side="${answer.side}"]`);
    const output = pane.querySelector('[data-role="output"]');
    const handlers = {
      onDelta: (text) => { output.textContent += text; },
      onNotice: (text) => show(pane.querySelector('[data-role="notice"]'), text),
      onError: (message) => show(pane.querySelector('[data-role="error"]'), message),
    };
    return StoreRun.stream(answer.runUrl, {}, handlers, signal).finally(() => output.classList.remove("streaming"));
  }

  // "User: ..." / "Assistant: ..." lines → messages; a line without a prefix goes on with the turn before.
  function conversation(text) {
    const messages = [];
    for (const line of text.split("\n")) {
      const match = line.match(/^\s*(user|assistant)\s*:\s*(.*)$/i);
      if (match) messages.push({ role: match[1].toLowerCase(), content: match[2] });
      else if (messages.length) messages[messages.length - 1].content += "\n" + line;
      else if (line.trim()) messages.push({ role: "user", content: line });
    }
    return messages;
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    show(errorBox, "");
    voteBox.hidden = true;
    show(voted, "");
    const data = Object.fromEntries(new FormData(form).entries());
    const history = conversation(data.history || "");
    delete data.history;
    if (history.length) data.messages = [...history, { role: "user", content: data.prompt }];
    setBusy(true);
    try {
      comparison = await postJson(config.startUrl, data);
    } catch (err) {
      show(errorBox, err.message);
      setBusy(false);
      return;
    }
    panes.hidden = false;
    controller = new AbortController();
    for (const answer of comparison.answers) fillPane(panes.querySelector(`[data-side="${answer.side}"]`), answer);
    // Both at once: the two requests stream side by side.
    const finals = await Promise.all(comparison.answers.map((answer) => runPane(answer, controller.signal)));
    controller = null;
    setBusy(false);
    if (finals.every((f) => f && f.done)) {
      voteBox.hidden = false;
      for (const button of voteBox.querySelectorAll("button[data-outcome]")) button.disabled = false;
    }
  });

  stopButton.addEventListener("click", () => { if (controller) controller.abort(); });

  function drawBoard(rows) {
    board.replaceChildren();
    const kinds = [...new Set(rows.map((r) => r.kind))];
    for (const kind of kinds) {
      const heading = document.createElement("h3");
      heading.textContent = config.kinds[kind] || kind;
      board.appendChild(heading);
      const table = document.createElement("table");
      const head = table.createTHead().insertRow();
      for (const title of ["#", gettext("Model or app"), gettext("Rating"), gettext("Wins"), gettext("Losses"), gettext("Ties")]) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = title;
        head.appendChild(th);
      }
      const body = table.createTBody();
      for (const row of rows.filter((r) => r.kind === kind)) {
        const tr = body.insertRow();
        tr.dataset.entry = row.entry;
        for (const [i, value] of [row.rank, row.label, row.rating.toFixed(1), row.wins, row.losses, row.ties].entries()) {
          const td = tr.insertCell();
          td.textContent = String(value);
          if (i === 2) td.dataset.role = "rating";
        }
      }
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      wrap.appendChild(table);
      board.appendChild(wrap);
    }
  }

  voteBox.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-outcome]");
    if (!button || !comparison) return;
    const buttons = voteBox.querySelectorAll("button[data-outcome]");
    for (const b of buttons) b.disabled = true;
    try {
      const result = await postJson(comparison.voteUrl, { outcome: button.dataset.outcome });
      show(voted, interpolate(gettext("Your vote is counted: %(choice)s."), { choice: button.textContent }, true));
      drawBoard(result.leaderboard);
    } catch (err) {
      show(voted, err.message);
      for (const b of buttons) b.disabled = false;
    }
  });
})();
