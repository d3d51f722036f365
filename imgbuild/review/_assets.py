"""The page's own style and script, inline: the page loads nothing from anywhere else."""

CSS = """
:root { color-scheme: light dark; --ok: #2e7d32; --warn: #b26a00; --bad: #c62828; --line: #8884; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
header.top { position: sticky; top: 0; padding: .5rem 1rem; background: Canvas; border-bottom: 1px solid var(--line); z-index: 1; }
header.top h1 { font-size: 1.1rem; margin: 0; display: inline; }
header.top .summary { display: inline; margin-left: 1rem; opacity: .8; }
#message { margin: .25rem 0 0; min-height: 1.2em; font-family: ui-monospace, monospace; }
#message.bad { color: var(--bad); } #message.good { color: var(--ok); }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1rem; padding: 1rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .75rem; overflow: hidden; }
.card > header { display: flex; flex-wrap: wrap; gap: .5rem; align-items: baseline; }
.card h2 { font-size: 1rem; margin: 0; font-family: ui-monospace, monospace; }
.card h3 { font-size: .85rem; margin: .75rem 0 .25rem; opacity: .8; }
.state { font-weight: 600; padding: 0 .4rem; border-radius: 4px; border: 1px solid currentColor; }
.state-ok .state { color: var(--ok); } .state-modified .state, .state-pinned .state { color: var(--bad); }
.state-changed .state, .state-new .state, .state-restore .state, .state-upstream .state { color: var(--warn); }
.reason { opacity: .85; }
.images { display: flex; flex-wrap: wrap; gap: .5rem; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 320px; max-height: 320px; display: block; background: repeating-conic-gradient(#8883 0 25%, transparent 0 50%) 0 0 / 16px 16px; }
figure.input img, figure.earlier img { max-width: 96px; max-height: 96px; }
figure.take img { max-width: 160px; max-height: 160px; }
figure.picked { outline: 3px solid var(--ok); outline-offset: 2px; }
figcaption { font-size: .8rem; opacity: .8; font-family: ui-monospace, monospace; word-break: break-all; }
.none { width: 160px; height: 96px; display: grid; place-items: center; border: 1px dashed var(--line); font-size: .8rem; }
.prompt { white-space: pre-wrap; margin: .5rem 0; }
dl.params { display: grid; grid-template-columns: max-content 1fr; gap: 0 .75rem; margin: 0; font-size: .85rem; }
dl.params dt { opacity: .7; } dl.params dd { margin: 0; font-family: ui-monospace, monospace; }
.meta { font-size: .85rem; opacity: .8; }
.older { border-top: 1px dashed var(--line); padding-top: .25rem; }
.changed { margin: .25rem 0; font-family: ui-monospace, monospace; font-size: .85rem; }
button { margin-top: .25rem; cursor: pointer; } button:disabled { cursor: default; }
"""

# REVIEW.api is set only on the served page: the page on disk says which command to run instead.
SCRIPT = """
(function () {
  const message = document.getElementById("message");
  function say(text, bad) { message.textContent = text; message.className = bad ? "bad" : "good"; }
  function place(name, html) {
    const box = document.createElement("div");
    box.innerHTML = html.trim();
    const card = box.firstElementChild;
    const old = document.getElementById("card-" + name);
    if (old) old.replaceWith(card); else document.getElementById("cards").appendChild(card);
  }
  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-target][data-take]");
    if (!button) return;
    const name = button.dataset.target, take = Number(button.dataset.take);
    if (!REVIEW.api) {
      say("to pick it, run: imgbuild pick " + name + " " + take + "  (or imgbuild review --serve)");
      return;
    }
    button.disabled = true;
    try {
      const answer = await fetch(REVIEW.api + "/pick", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({target: name, take: take}),
      });
      const data = await answer.json();
      if (!answer.ok) { say(data.error || answer.statusText, true); button.disabled = false; return; }
      place(name, data.html);
      say(data.message);
    } catch (error) { say(String(error), true); button.disabled = false; }
  });
  async function poll() {
    try {
      const answer = await fetch(REVIEW.api + "/state");
      if (answer.ok) {
        const data = await answer.json();
        for (const [name, fp] of Object.entries(data.cards)) {
          const card = document.getElementById("card-" + name);
          if (card && card.dataset.fp === fp) continue;
          const fresh = await fetch(REVIEW.api + "/card/" + encodeURIComponent(name));
          if (fresh.ok) place(name, (await fresh.json()).html);
        }
        for (const card of document.querySelectorAll("article.card")) {
          if (!(card.dataset.target in data.cards)) card.remove();
        }
        document.querySelector(".summary").textContent = data.summary;
        if (data.error) say(data.error, true);
      }
    } catch (error) { /* the server stopped: the page stays as it was */ }
    setTimeout(poll, REVIEW.poll_ms);
  }
  if (REVIEW.api) setTimeout(poll, REVIEW.poll_ms);
})();
"""
