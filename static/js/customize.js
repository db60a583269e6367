// Customization pages: the job form's live estimate, and the job page's live status, loss chart and events.
// Its words go through Django's JavaScript catalog (/jsi18n/, loaded first by base.html): gettext, interpolate.
(function () {
  "use strict";

  // ---- estimate before queueing ----
  const form = document.getElementById("job-form");
  if (form) {
    const box = document.getElementById("estimate");
    const update = async () => {
      const params = new URLSearchParams();
      for (const name of ["training_file", "validation_file", "method", "n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "preset", "tokenizer"]) {
        const el = form.elements[name];
        // The size and tokenizer of a model pre-trained from scratch are sent for that method only.
        if ((name === "preset" || name === "tokenizer") && form.elements.method.value !== "scratch") continue;
        if (el && el.value && el.value !== "auto") params.set(name, el.value);
      }
      const r = await fetch(form.dataset.estimateUrl + "?" + params, { credentials: "same-origin" });
      const data = await r.json();
      if (!r.ok) { box.textContent = data.error.message; box.className = "estimate error"; return; }
      const minutes = Math.max(1, Math.round(data.seconds_cpu / 60));
      const line = (text, role) => { const el = document.createElement("div"); el.textContent = text; if (role) el.dataset.role = role; return el; };
      const lines = [line(interpolate(
        gettext("%(steps)s steps · %(tokens)s training tokens · about %(minutes)s min on this machine's CPU (epochs %(epochs)s, batch %(batch)s, learning rate %(rate)s)"),
        { steps: data.steps, tokens: data.tokens.toLocaleString(), minutes, epochs: data.hyperparameters.n_epochs,
          batch: data.hyperparameters.batch_size, rate: data.hyperparameters.learning_rate.toExponential(1) }, true))];
      // The limits the job is held to, before it is queued: the same figures the job-create error gives.
      const limits = data.limits;
      const wall = limits.max_wall_seconds >= 3600
        ? interpolate(gettext("%(hours)s h"), { hours: +(limits.max_wall_seconds / 3600).toFixed(1) }, true)
        : interpolate(gettext("%(minutes)s min"), { minutes: Math.ceil(limits.max_wall_seconds / 60) }, true);
      lines.push(line(interpolate(
        gettext("Limits: %(max)s training tokens and %(wall)s of training per job; %(left)s of your %(daily)s training tokens for 24 hours left."),
        { max: limits.max_job_tokens.toLocaleString(), wall, left: limits.daily_tokens_left.toLocaleString(),
          daily: limits.daily_tokens.toLocaleString() }, true), "limits"));
      // What the base and the tuned model are compared on: the validation file, or examples held out of the training file.
      if (data.evaluation && data.evaluation.source) {
        const ev = data.evaluation;
        lines.push(line(ev.source === "held_out"
          ? interpolate(gettext("No validation file: %(held)s of the %(n)s training examples are held out to compare the base and the tuned model."), { held: ev.examples, n: ev.of }, true)
          : ev.source === "validation_file"
            ? interpolate(gettext("The base and the tuned model are compared on the validation file (%(n)s examples)."), { n: ev.examples }, true)
            : interpolate(gettext("No validation file, and %(n)s examples are too few to hold some out: no validation figures."), { n: ev.of }, true), "evaluation"));
      }
      if (data.parameters) {  // pre-training from scratch: the size of the new model
        lines.push(line(interpolate(gettext("A new model of %(millions)s M parameters, trained from a random start."),
          { millions: (data.parameters / 1e6).toFixed(1) }, true), "parameters"));
      }
      if (data.problem) lines.push(line(data.problem.message, "problem"));
      box.className = data.problem ? "estimate error" : "estimate";
      box.replaceChildren(...lines);
    };
    form.addEventListener("change", update);
    update();
  }

  // ---- job page ----
  const escapeHtml = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const panel = document.getElementById("job");
  if (!panel) return;
  const $ = (role) => document.querySelector(`[data-role="${role}"]`);
  const points = { train: [], val: [] };
  let afterMetric = 0, afterEvent = 0, timer = null;

  function draw() {
    const svg = $("chart");
    const all = points.train.concat(points.val);
    if (!all.length) {
      svg.innerHTML = `<text x="200" y="110" text-anchor="middle" class="axis">${escapeHtml(gettext("waiting for the first step…"))}</text>`;
      return;
    }
    const W = 400, H = 220, L = 44, B = 24, T = 10, R = 10;
    const maxStep = Math.max(...all.map((p) => p[0]), 1);
    const ys = all.map((p) => p[1]);
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
    const x = (s) => L + (W - L - R) * (s / maxStep);
    const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const path = (pts) => pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    let out = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" class="axis-line"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" class="axis-line"/>`;
    out += `<text x="${L - 4}" y="${T + 8}" text-anchor="end" class="axis">${hi.toFixed(2)}</text><text x="${L - 4}" y="${H - B}" text-anchor="end" class="axis">${lo.toFixed(2)}</text>`;
    out += `<text x="${W - R}" y="${H - 6}" text-anchor="end" class="axis">${escapeHtml(interpolate(gettext("step %(step)s"), { step: maxStep }, true))}</text>`;
    if (points.train.length) out += `<path d="${path(points.train)}" class="line train"/>`;
    if (points.val.length) out += `<path d="${path(points.val)}" class="line val"/>` + points.val.map((p) => `<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" class="dot val"/>`).join("");
    svg.innerHTML = out;
  }

  async function poll() {
    const r = await fetch(`${panel.dataset.statusUrl}?after_metric=${afterMetric}&after_event=${afterEvent}`, { credentials: "same-origin" });
    if (!r.ok) return;
    const s = await r.json();
    $("status").textContent = s.status_label;
    $("progress").value = s.progress;
    $("steps").textContent = s.total_steps
      ? interpolate(gettext("step %(step)s of %(total)s"), { step: s.step, total: s.total_steps }, true) +
        (s.eta_seconds != null ? interpolate(gettext(" · about %(minutes)s min left"), { minutes: Math.ceil(s.eta_seconds / 60) }, true) : "")
      : "";
    $("detail").textContent = s.queue_position
      ? interpolate(gettext("position %(position)s in the queue"), { position: s.queue_position }, true) : "";
    if (s.error) { $("error").hidden = false; $("error").textContent = s.error; }
    if (s.val_loss_before != null && !points.val.some((p) => p[0] === 0)) points.val.unshift([0, s.val_loss_before]);
    for (const m of s.metrics) {
      afterMetric = Math.max(afterMetric, m.id);
      if (m.train_loss != null) points.train.push([m.step, m.train_loss]);
      if (m.val_loss != null) points.val.push([m.step, m.val_loss]);
    }
    const list = $("events");
    for (const e of s.events) {
      afterEvent = Math.max(afterEvent, e.id);
      const li = document.createElement("li");
      li.className = "event " + e.level;
      li.textContent = `${new Date(e.at).toLocaleTimeString()} — ${e.message}`;
      list.appendChild(li);
    }
    draw();
    if (s.fine_tuned_model) {
      $("done").hidden = false;
      $("model").textContent = s.fine_tuned_model;
      $("build").href = "/build/new/?model=" + encodeURIComponent(s.fine_tuned_model + "@latest");
    }
    const finished = ["succeeded", "failed", "cancelled"].includes(s.status);
    if (finished) { const c = $("cancel"); if (c) c.hidden = true; clearInterval(timer); }
    // A job that succeeded while watched: the page is drawn again once, to show base against tuned (#evaluation).
    if (!finished) watchedRunning = true;
    else if (s.status === "succeeded" && watchedRunning && !document.getElementById("evaluation")) location.reload();
  }
  let watchedRunning = false;
  poll();
  timer = setInterval(poll, 2000);
})();
