// sunoflow review: one player at a time, and (served live) follow the state directory.
"use strict";
(function () {
  function onePlayer(root) {
    root.querySelectorAll("audio").forEach(function (a) {
      a.addEventListener("play", function () {
        document.querySelectorAll("audio").forEach(function (b) { if (b !== a) b.pause(); });
      });
    });
  }
  function playing(el) {
    return Array.prototype.some.call(el.querySelectorAll("audio"), function (a) {
      return !a.paused && !a.ended;
    });
  }
  function replace(el, html) {
    var box = document.createElement("div");
    box.innerHTML = html;
    var fresh = box.firstElementChild;
    if (fresh) { el.replaceWith(fresh); onePlayer(fresh); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    onePlayer(document);
    var body = document.body, url = body.getAttribute("data-live");
    if (!url) return;
    var status = document.getElementById("live-status");
    function tick() {
      fetch(url + "&since=" + encodeURIComponent(body.getAttribute("data-version")),
            {cache: "no-store"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d || d.version === body.getAttribute("data-version")) return;
          var waiting = false;
          Object.keys(d.cards).forEach(function (id) {
            var el = document.querySelector('[data-card="' + CSS.escape(id) + '"]');
            if (!el) { waiting = true; return; }
            if (el.getAttribute("data-html") === d.hashes[id]) return;
            if (playing(el)) { waiting = true; return; }  // never cut a take being heard
            replace(el, d.cards[id]);
            var now = document.querySelector('[data-card="' + CSS.escape(id) + '"]');
            if (now) now.setAttribute("data-html", d.hashes[id]);
          });
          document.getElementById("summary").innerHTML = d.summary;
          document.getElementById("graph-svg").innerHTML = d.graph;
          document.getElementById("timeline-svg").innerHTML = d.timeline;
          if (!waiting) body.setAttribute("data-version", d.version);
          status = document.getElementById("live-status");
          if (status) status.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
        })
        .catch(function () {
          if (status) status.textContent = "Lost contact with sunoflow review (stopped?).";
        });
    }
    setInterval(tick, 2000);
  });
})();
