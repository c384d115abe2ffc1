// gov dashboard: live updates without a reload, no framework, no build.
//
// Every ~1.5 s the page fetches itself and swaps each region marked
// `data-live` whose server-rendered HTML changed. Items inside a region
// carry `data-key`; an item whose HTML did not change keeps its DOM node,
// so a note being typed, an open <details> or the focus survive an update.
(function () {
  "use strict";
  var PERIOD_MS = 1500;
  var source = new WeakMap(); // element -> the HTML the server sent for it
  var status = document.getElementById("live-status");

  function regionsOf(root) {
    var out = {};
    root.querySelectorAll("[data-live]").forEach(function (r) { out[r.dataset.live] = r; });
    return out;
  }

  function itemsOf(region) {
    var out = new Map();
    region.querySelectorAll("[data-key]").forEach(function (el) {
      if (el.closest("[data-live]") === region) out.set(el.dataset.key, el);
    });
    return out;
  }

  function remember(region) {
    source.set(region, region.innerHTML);
    itemsOf(region).forEach(function (el) { source.set(el, el.outerHTML); });
  }

  function swap(current, fresh) {
    if (source.get(current) === fresh.innerHTML) return;
    var focused = document.activeElement;
    var selection = focused && "selectionStart" in focused
      ? [focused.selectionStart, focused.selectionEnd] : null;
    var incoming = document.importNode(fresh, true);
    var old = itemsOf(current);
    var html = new Map();
    itemsOf(incoming).forEach(function (el, key) {
      html.set(key, el.outerHTML);
      var prev = old.get(key);
      if (prev && source.get(prev) === el.outerHTML) el.replaceWith(prev);
    });
    current.replaceWith(incoming);
    source.set(incoming, fresh.innerHTML);
    itemsOf(incoming).forEach(function (el, key) {
      if (!source.has(el)) source.set(el, html.get(key));
    });
    if (focused && focused !== document.body && focused.isConnected && document.activeElement !== focused) {
      focused.focus({ preventScroll: true });
      if (selection) { try { focused.setSelectionRange(selection[0], selection[1]); } catch (e) { /* not text */ } }
    }
  }

  function setStatus(ok, text) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("stale", !ok);
  }

  var timer = null;
  function poll() {
    fetch(window.location.href, {
      headers: { "X-Gov-Live": "1" }, cache: "no-store", credentials: "same-origin", redirect: "manual"
    }).then(function (resp) {
      if (resp.status === 401 || resp.type === "opaqueredirect") {
        setStatus(false, "session ended: reload");
        return null;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.text();
    }).then(function (text) {
      if (text === null) return;
      var doc = new DOMParser().parseFromString(text, "text/html");
      var fresh = regionsOf(doc);
      var current = regionsOf(document);
      Object.keys(fresh).forEach(function (name) {
        if (current[name]) swap(current[name], fresh[name]);
      });
      setStatus(true, "live");
      timer = setTimeout(poll, PERIOD_MS);
    }).catch(function () {
      setStatus(false, "offline: retrying");
      timer = setTimeout(poll, PERIOD_MS * 2);
    });
  }

  document.querySelectorAll("[data-live]").forEach(remember);
  if (document.querySelector("[data-live]")) timer = setTimeout(poll, PERIOD_MS);
  window.addEventListener("pagehide", function () { if (timer) clearTimeout(timer); });
}());
