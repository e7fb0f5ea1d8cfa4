// The inbox pages' behaviour: live updates, tabs, and the buttons.
// Served as a file (the pages' policy allows no inline script); no build step.
"use strict";

(function () {
  const page = document.body.dataset.page;
  const live = document.getElementById("live");

  // State changes use DELETE and PATCH with a JSON body: another site's page
  // cannot send those without a CORS preflight, which this server never grants.
  function api(method, url, body) {
    const options = { method: method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      if (!response.ok) {
        throw new Error(method + " " + url + " answered " + response.status);
      }
      return response;
    });
  }

  function messageUrl(id) {
    return "/api/v1/messages/" + encodeURIComponent(id);
  }

  // Server-sent events: the page learns of every change without reloading.
  function listen(handlers) {
    if (!window.EventSource) {
      return;
    }
    const source = new EventSource("/api/v1/events");
    source.addEventListener("hello", function () {
      live.classList.add("on");
      document.body.dataset.live = "1";
    });
    source.addEventListener("error", function () {
      live.classList.remove("on");
    });
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, handlers[name]);
    });
  }

  function setUpList() {
    const rows = document.getElementById("rows");
    let loading = null;
    let again = false;
    // One request at a time; a change during it asks for one more.
    function refresh() {
      if (loading) {
        again = true;
        return;
      }
      loading = fetch("/fragments/rows" + location.search)
        .then(function (response) { return response.text(); })
        .then(function (html) { rows.innerHTML = html; })
        .finally(function () {
          loading = null;
          if (again) {
            again = false;
            refresh();
          }
        });
    }
    listen({ added: refresh, deleted: refresh, cleared: refresh, updated: refresh, resync: refresh });
    document.getElementById("delete-all").addEventListener("click", function () {
      if (window.confirm("Delete every message?")) {
        api("DELETE", "/api/v1/messages").then(refresh);
      }
    });
    rows.addEventListener("click", function (event) {
      const remove = event.target.closest("button[data-delete]");
      if (remove) {
        api("DELETE", messageUrl(remove.dataset.delete)).then(refresh);
        return;
      }
      const row = event.target.closest("tr[data-id]");
      if (row && !event.target.closest("a")) {
        location.href = "/messages/" + encodeURIComponent(row.dataset.id);
      }
    });
  }

  function setUpTabs() {
    const buttons = Array.prototype.slice.call(document.querySelectorAll("[data-tab]"));
    if (!buttons.length) {
      return;
    }
    function show(name) {
      buttons.forEach(function (button) {
        const on = button.dataset.tab === name;
        button.setAttribute("aria-selected", on ? "true" : "false");
        document.getElementById("tab-" + button.dataset.tab).hidden = !on;
      });
    }
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        show(button.dataset.tab);
        history.replaceState(null, "", "#" + button.dataset.tab);
      });
    });
    const wanted = location.hash.slice(1);
    show(document.getElementById("tab-" + wanted) ? wanted : buttons[0].dataset.tab);
  }

  function setUpMessage() {
    const id = document.getElementById("message").dataset.id;
    const url = messageUrl(id);
    setUpTabs();
    api("PATCH", url, { read: true }).then(function () {
      document.body.dataset.read = "1";
    });
    document.getElementById("delete").addEventListener("click", function () {
      api("DELETE", url).then(function () { location.href = "/"; });
    });
    document.getElementById("mark-unread").addEventListener("click", function () {
      api("PATCH", url, { read: false }).then(function () { location.href = "/"; });
    });
    const allow = document.getElementById("allow-remote");
    if (allow) {
      allow.addEventListener("click", function () {
        api("PATCH", url, { remote_images: true }).then(function () {
          const frame = document.getElementById("body");
          frame.src = "/messages/" + encodeURIComponent(id) + "/body?remote=" + Date.now();
          document.getElementById("remote-notice").remove();
        });
      });
    }
  }

  function setUpPreview() {
    listen({ templates: function () { location.reload(); } });
    const frame = document.getElementById("preview-html");
    const buttons = document.querySelectorAll("[data-width]");
    function width(name) {
      frame.parentElement.className = "frame " + name;
      buttons.forEach(function (button) {
        button.setAttribute("aria-pressed", button.dataset.width === name ? "true" : "false");
      });
    }
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        width(button.dataset.width);
        history.replaceState(null, "", location.search + "#" + button.dataset.width);
      });
    });
    width(location.hash === "#narrow" ? "narrow" : "wide");
    const sample = document.getElementById("sample");
    sample.addEventListener("change", function () { sample.form.submit(); });
  }

  if (page === "list") {
    setUpList();
  } else if (page === "message") {
    setUpMessage();
  } else if (page === "preview") {
    setUpPreview();
  } else if (page === "templates") {
    listen({ templates: function () { location.reload(); } });
  }
})();
