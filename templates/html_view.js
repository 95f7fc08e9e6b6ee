// resgraph's network page: the details panel, search, fold/unfold. Reads only the page's
// own JSON block and writes text only (textContent), so nothing in a spec can run.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const panel = document.getElementById("details");
  const search = document.getElementById("search");
  const results = document.getElementById("results");
  const nodes = Array.from(document.querySelectorAll("[data-node]"));
  const several = Object.keys(data.networks).length > 1;
  let selected = null;

  function element(tag, text, className) {
    const el = document.createElement(tag);
    el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  function show(box) {
    const network = data.networks[box.closest("[data-network]").dataset.network];
    const values = network.nodes[box.dataset.node];
    const list = document.createElement("dl");
    data.fields.forEach(function (label, i) {
      if (values[i] === "") return;
      const value = element("dd", values[i]);
      value.dataset.field = label;
      list.append(element("dt", label), value);
    });
    panel.replaceChildren(element("h2", box.dataset.node));
    if (several) panel.append(element("p", network.name, "side"));
    panel.append(list);
    if (selected) selected.classList.remove("selected");
    selected = box;
    box.classList.add("selected");
  }

  function reveal(box) {
    for (let d = box.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
    box.scrollIntoView({ block: "center" });
    show(box);
    box.focus({ preventScroll: true });
  }

  function matches(query) {
    const q = query.trim().toLowerCase();
    if (!q) return [];
    return nodes.filter(function (box) {
      return box.dataset.node.toLowerCase().includes(q);
    });
  }

  function listResults() {
    const found = matches(search.value);
    results.replaceChildren();
    found.slice(0, 50).forEach(function (box) {
      const side = several ? data.networks[box.closest("[data-network]").dataset.network].name + ": " : "";
      const button = element("button", side + box.dataset.node);
      button.type = "button";
      button.addEventListener("click", function () {
        results.hidden = true;
        reveal(box);
      });
      const item = document.createElement("li");
      item.append(button);
      results.append(item);
    });
    if (found.length > 50) results.append(element("li", (found.length - 50) + " more", "hint"));
    if (search.value.trim() && !found.length) results.append(element("li", "no node matches", "hint"));
    results.hidden = !search.value.trim();
  }

  document.addEventListener("click", function (event) {
    const box = event.target.closest("[data-node]");
    if (box) show(box);
    if (!event.target.closest(".tools")) results.hidden = true;
  });
  document.addEventListener("keydown", function (event) {
    const box = event.target.closest && event.target.closest("[data-node]");
    if (box && event.key === "Enter") show(box);
  });
  search.addEventListener("input", listResults);
  search.addEventListener("keydown", function (event) {
    if (event.key === "Enter") {
      const found = matches(search.value);
      if (found.length) {
        results.hidden = true;
        reveal(found[0]);
      }
    } else if (event.key === "Escape") {
      results.hidden = true;
    }
  });
  function foldAll(open) {
    document.querySelectorAll("details").forEach(function (d) {
      d.open = open;
    });
  }
  document.getElementById("expand-all").addEventListener("click", function () { foldAll(true); });
  document.getElementById("fold-all").addEventListener("click", function () { foldAll(false); });

  // On a diff page, unfolding a stage or block on one side unfolds its counterpart.
  if (several) {
    document.querySelectorAll("[data-network] details").forEach(function (d) {
      d.addEventListener("toggle", function () {
        const holder = d.closest("[data-part], [data-block]");
        const key = holder.matches("[data-part]") ? "data-part" : "data-block";
        const name = holder.getAttribute(key);
        const home = d.closest("[data-network]");
        document.querySelectorAll("[data-network]").forEach(function (other) {
          if (other === home) return;
          other.querySelectorAll("[" + key + "]").forEach(function (twin) {
            if (twin.getAttribute(key) !== name) return;
            const peer = twin.matches("details") ? twin : twin.querySelector(":scope > details");
            if (peer && peer.open !== d.open) peer.open = d.open;
          });
        });
      });
    });
  }
})();
