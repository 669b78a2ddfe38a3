// rexrag run report: the trajectory browser (agents/runs/report.py embeds this file).
// The run's text is untrusted (questions, retrieved passages, model output): it reaches
// the page only as text nodes (textContent), never as markup.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const samples = data.samples.iterations;
  const FOLD_CHARS = { information: 240, model: 1200, invalid: 400, probe_prompt: 600 };
  const select = document.getElementById("iteration-select");
  const groupList = document.getElementById("group-list");
  const view = document.getElementById("group-view");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function number(value, digits) {
    return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
  }

  function signed(value, digits) {
    if (value === null || value === undefined) return "n/a";
    return (value > 0 ? "+" : "") + Number(value).toFixed(digits);
  }

  function segmentNode(segment) {
    const node = el("div", "segment " + segment.kind);
    const label = el("div", "label", segment.kind.replace("_", " "));
    if (segment.credit) label.textContent += " \u00b7 " + segment.credit;
    if (segment.tokens !== undefined) label.textContent += " \u00b7 " + segment.tokens + " tokens";
    if (segment.push !== undefined && segment.push !== null && segment.trained_tokens) {
      const push = el("span", "push " + (segment.push >= 0 ? "up" : "down"),
        " \u00b7 \u03a3A\u00b7w " + signed(segment.push, 3));
      label.appendChild(push);
    }
    node.appendChild(label);
    let text = segment.text.replace(/^\n+|\s+$/g, ""); // the protocol's blank lines around blocks
    if (segment.cut) text += "\n[\u2026 " + segment.cut + " more characters in samples/]";
    const limit = FOLD_CHARS[segment.kind] || 800;
    if (text.length > limit) {
      const details = el("details", "fold");
      const firstLine = (text.split("\n").find((line) => line.trim()) || "").trim().slice(0, 100);
      details.appendChild(el("summary", null, firstLine + " \u2026 (" + text.length + " characters)"));
      details.appendChild(el("pre", null, text));
      node.appendChild(details);
    } else {
      node.appendChild(el("pre", null, text));
    }
    return node;
  }

  function trajectoryNode(row, parentId) {
    const classes = ["trajectory", row.probe ? "probe" : "original"];
    if (row.probe) classes.push(row.kept ? "kept" : "dropped");
    const card = el("div", classes.join(" "));
    card.dataset.id = row.id;
    const head = el("div", "trajectory-head");
    head.appendChild(el("span", "name", row.id || "(unnamed)"));
    head.appendChild(el("span", "badge " + (row.em > 0 ? "right" : "wrong"),
      (row.em > 0 ? "right" : "wrong") + ": " + (row.answer === null ? "no answer" : row.answer)));
    if (row.probe) head.appendChild(el("span", "badge " + (row.kept ? "kept" : "dropped"),
      row.kept ? "kept by the filter" : "dropped by the filter"));
    head.appendChild(el("span", "badge", "reward " + number(row.reward, 2)));
    head.appendChild(el("span", "badge advantage", "advantage " + signed(row.advantage, 3)));
    head.appendChild(el("span", "badge", row.searches + " searches \u00b7 " + row.turns + " turns"));
    if (row.truncated) head.appendChild(el("span", "badge", "truncated"));
    card.appendChild(head);
    const parts = Object.entries(row.credit || {}).map(([name, c]) =>
      name + ": " + c.tokens + " tokens, \u03a3A\u00b7w " + signed(c.push, 3) +
      ", w\u0304 " + number(c.weight_mean, 3));
    card.appendChild(el("div", "credit", parts.length ? "credit \u2014 " + parts.join("; ")
      : "credit \u2014 no trained tokens (not in the learner's batch)"));
    const segments = row.segments || [];
    const branch = row.probe && row.branch_segment !== null ? row.branch_segment : 0;
    if (branch > 0) {
      const copied = el("details", "copied");
      copied.appendChild(el("summary", null, "copied from " + (parentId || "its parent") +
        ": " + branch + " segment" + (branch > 1 ? "s" : "") + " up to the cut before <answer>"));
      segments.slice(0, branch).forEach((s) => copied.appendChild(segmentNode(s)));
      card.appendChild(copied);
    }
    if (row.probe) {
      card.appendChild(el("div", "branch-marker", "\u21b3 branch point" +
        (row.branch_point !== null ? " (token " + row.branch_point + ")" : "") +
        ": the probe's own text starts here"));
    }
    segments.slice(branch).forEach((s) => card.appendChild(segmentNode(s)));
    return card;
  }

  function groupNode(group) {
    const box = el("div", "group");
    const head = el("div", "group-head");
    head.appendChild(el("span", "badge kind", group.kind.replace("_", " ")));
    head.appendChild(el("div", "question", group.question));
    head.appendChild(el("div", "gold", "gold: " + group.golden_answers.join(" | ")));
    head.appendChild(el("div", "note", group.originals_right + " of " + group.originals +
      " originals right; probes: " + group.probes_spawned + " spawned, " + group.probes_kept +
      " kept, " + group.probes_right + " right (" + group.kept_probes_right + " of the kept)"));
    const prompt = el("details", "prompt");
    prompt.appendChild(el("summary", null, "the question prompt"));
    prompt.appendChild(el("pre", null, group.prompt));
    head.appendChild(prompt);
    box.appendChild(head);
    const rows = group.trajectories;
    rows.filter((row) => !row.probe).forEach((original) => {
      const pair = el("div", "pair");
      pair.appendChild(trajectoryNode(original, null));
      const probes = el("div", "probes");
      rows.filter((row) => row.probe && row.parent === original.id)
        .forEach((probe) => probes.appendChild(trajectoryNode(probe, original.id)));
      if (!probes.childNodes.length) probes.appendChild(el("div", "note", "no probe of " + original.id));
      pair.appendChild(probes);
      box.appendChild(pair);
    });
    const known = new Set(rows.filter((row) => !row.probe).map((row) => row.id));
    rows.filter((row) => row.probe && !known.has(row.parent)).forEach((orphan) => {
      const pair = el("div", "pair");
      pair.appendChild(el("div", "note", "parent " + orphan.parent + " not in this sample"));
      pair.appendChild(trajectoryNode(orphan, orphan.parent));
      box.appendChild(pair);
    });
    return box;
  }

  function showGroup(iterationIndex, groupIndex) {
    const groups = samples[iterationIndex].groups;
    groupIndex = Math.min(Math.max(groupIndex, 0), groups.length - 1);
    Array.from(groupList.children).forEach((button, i) =>
      button.setAttribute("aria-pressed", String(i === groupIndex)));
    view.replaceChildren(groups.length ? groupNode(groups[groupIndex]) : el("p", "note", "no groups"));
    const hash = "#iteration=" + samples[iterationIndex].iteration + "&group=" + groupIndex;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function showIteration(iterationIndex, groupIndex) {
    select.value = String(iterationIndex);
    groupList.replaceChildren();
    samples[iterationIndex].groups.forEach((group, i) => {
      const button = el("button", "group-button", (i + 1) + ". " + group.kind.replace("_", " ") +
        ": " + group.question.slice(0, 48));
      button.type = "button";
      button.dataset.group = String(i);
      button.title = group.question;
      button.addEventListener("click", () => showGroup(iterationIndex, i));
      groupList.appendChild(button);
    });
    showGroup(iterationIndex, groupIndex || 0);
  }

  if (!samples.length) {
    view.replaceChildren(el("p", "note", "This run has no samples yet."));
    return;
  }
  samples.forEach((entry, i) => {
    const option = el("option", null, "iteration " + entry.iteration + " (" + entry.groups.length + " groups)");
    option.value = String(i);
    select.appendChild(option);
  });
  select.addEventListener("change", () => showIteration(Number(select.value), 0));
  const wanted = /iteration=(\d+)(?:&group=(\d+))?/.exec(location.hash);
  let start = samples.length - 1;
  if (wanted) {
    const found = samples.findIndex((entry) => entry.iteration === Number(wanted[1]));
    if (found >= 0) start = found;
  }
  showIteration(start, wanted && wanted[2] ? Number(wanted[2]) : 0);
})();
