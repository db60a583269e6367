// The builder's knowledge files: while a file is being indexed, poll its status and move its progress bar;
// a file that turns ready shows its passage count, one that fails its message. Text only (textContent).
(function () {
  "use strict";
  const list = document.querySelector('[data-role="knowledge-files"]');
  if (!list) return;
  const busy = (status) => status === "uploaded" || status === "indexing";

  function show(item, file) {
    item.dataset.status = file.status;
    item.querySelector('[data-role="status"]').textContent = file.status_label;
    const bar = item.querySelector('[data-role="progress"]');
    bar.value = file.progress;
    bar.hidden = !busy(file.status);
    const detail = item.querySelector('[data-role="detail"]');
    if (file.status === "error") detail.textContent = file.message;
    else if (file.status === "ready") detail.textContent = interpolate(ngettext("%s passage", "%s passages", file.chunks), [file.chunks]);
    else detail.textContent = "";
  }

  async function poll() {
    if (![...list.querySelectorAll("li[data-status]")].some((li) => busy(li.dataset.status))) return;
    try {
      const response = await fetch(list.dataset.statusUrl, { credentials: "same-origin" });
      if (response.ok) {
        for (const file of (await response.json()).files) {
          const item = list.querySelector('li[data-id="' + file.id + '"]');
          if (item) show(item, file);
        }
      }
    } catch (e) { /* the network blinked: try again on the next tick */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
