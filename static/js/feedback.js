// Thumbs up/down under each answer of an app (chat messages, and a generator's or translator's run), with an
// optional better answer, saved through /api/v1/feedback/ with the page's session. store.js tells this script
// when answers appear: `store:answer` (a run's answer: {anchor, run, inputs, answer}) and `store:conversation`
// (a conversation's messages are shown: {id}). Nothing here without a signed-in user (the panel's config).
(function () {
  "use strict";
  const panel = document.getElementById("use");
  const configNode = document.getElementById("app-config");
  if (!panel || !configNode || !JSON.parse(configNode.textContent).loggedIn) return;
  const API = "/api/v1/feedback/";

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function send(method, url, body) {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      throw new Error(data && data.error ? data.error.message : interpolate(gettext("Something went wrong (%(status)s). Please try again."), { status: response.status }, true));
    }
    return data;
  }

  // The tools of one answer. `target`: {message} or {run, inputs, answer}; `saved`: its feedback, if any.
  function tools(target, saved) {
    const box = document.createElement("div");
    box.className = "feedback-tools";
    let feedback = saved || null;
    const up = button("👍", gettext("Good answer"));
    const down = button("👎", gettext("Bad answer"));
    const better = button(gettext("Write a better answer"), null, "link-button");
    const status = document.createElement("span");
    status.className = "meta";
    status.setAttribute("role", "status");
    const form = document.createElement("form");
    form.className = "feedback-correction";
    form.hidden = true;
    const label = document.createElement("label");
    label.textContent = gettext("The answer you wanted (it replaces this one in your training data)");
    const text = document.createElement("textarea");
    text.rows = 3; text.maxLength = 8000; text.name = "correction";
    label.appendChild(text);
    const save = document.createElement("button");
    save.type = "submit"; save.className = "small"; save.textContent = gettext("Save");
    form.append(label, save);
    box.append(up, down, better, status, form);

    // `withText`: also put the saved correction in the box (never while the user may be typing in it).
    function show(withText) {
      up.setAttribute("aria-pressed", String(!!feedback && feedback.rating === "up"));
      down.setAttribute("aria-pressed", String(!!feedback && feedback.rating === "down"));
      if (withText) text.value = feedback ? feedback.correction : "";
    }

    // One change at a time, in the order the user made them: a Save clicked while the thumb's request is still
    // out waits for it (and then updates that feedback instead of creating a second one).
    let queue = Promise.resolve();
    function rate(rating, correction) {
      queue = queue.then(() => change(rating, correction));
      return queue;
    }

    async function change(rating, correction) {
      status.textContent = "";
      if (rating === null) rating = feedback ? feedback.rating : "down";  // a correction keeps the thumb it was given
      try {
        if (feedback && feedback.rating === rating && correction === undefined) {  // the same thumb again: take it back
          await send("DELETE", API + feedback.id + "/");
          feedback = null;
        } else if (feedback) {
          feedback = await send("PATCH", API + feedback.id + "/", correction === undefined ? { rating } : { rating, correction });
        } else {
          feedback = await send("POST", API, Object.assign({ rating }, correction === undefined ? {} : { correction }, target));
        }
        status.textContent = feedback ? gettext("Thanks: saved in your rated answers.") : "";
      } catch (err) {
        status.textContent = err.message;
      }
      show(correction !== undefined);
    }

    up.addEventListener("click", () => rate("up"));
    down.addEventListener("click", () => { rate("down"); form.hidden = false; });
    better.addEventListener("click", () => { form.hidden = !form.hidden; if (!form.hidden) text.focus(); });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      rate(null, text.value).then(() => { if (feedback) form.hidden = true; });
    });
    show(true);
    return box;
  }

  function button(text, title, className) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className || "secondary small";
    b.textContent = text;
    if (title) { b.title = title; b.setAttribute("aria-label", title); }
    return b;
  }

  panel.addEventListener("store:answer", (e) => {
    const d = e.detail;
    const old = panel.querySelector(".feedback-tools.for-run");
    if (old) old.remove();
    if (!d.run || !d.answer) return;
    const box = tools({ run: d.run, inputs: d.inputs, answer: d.answer });
    box.classList.add("for-run");
    d.anchor.after(box);
  });

  panel.addEventListener("store:conversation", async (e) => {
    let saved = {};
    try {
      const data = await send("GET", API + "?limit=100&conversation=" + encodeURIComponent(e.detail.id));
      for (const f of data.results) saved[f.message] = f;
    } catch (err) { saved = {}; }
    for (const item of panel.querySelectorAll(".message-item.assistant[data-id]")) {
      if (item.querySelector(".feedback-tools")) continue;
      item.appendChild(tools({ message: Number(item.dataset.id) }, saved[item.dataset.id]));
    }
  });
})();
