// The page of mimo-serve: draw, upload or pick an image, POST it to /predict, show the votes.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const KEY_STORE = "mimo-api-key";
  const WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
  // MNIST digits fill a 20x20 box centred (by mass) in 28x28: the drawing is framed alike.
  const INK_SHARE = 20 / 28;

  let models = []; // GET /models -> models
  let current = null; // the chosen model description, or null for the server's default
  let lastImage = null; // {blob, name}: sent again when another model is picked
  let requestId = 0;
  let inFlight = null; // AbortController of the request in flight
  let sentUrl = null;

  // --- talking to the API ---------------------------------------------------------------

  function readKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // storage refused (private mode): the key still works for this page
    }
  }

  function headers(extra = {}) {
    const key = $("api-key").value.trim();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
  }

  // The API's own words: its JSON {"error": ...} body, else whatever text came back.
  async function apiError(response) {
    const text = await response.text();
    let message = text.trim() || response.statusText;
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") message = body.error;
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, message };
  }

  // --- models ---------------------------------------------------------------------------

  // The measure that raises a model's `uncertain` flag (its file says which; mutual
  // information unless it says otherwise), in words.
  const MEASURES = {
    mutual_information: {
      name: "Mutual information",
      title: "How much the sub-models disagree",
      short: "disagreement",
      scale: ["they agree", "they disagree"],
    },
    predictive_entropy: {
      name: "Predictive entropy",
      title: "How spread the model's answer is",
      short: "predictive entropy",
      scale: ["one class", "spread over many"],
    },
    expected_entropy: {
      name: "Expected entropy",
      title: "How unsure each sub-model is on its own",
      short: "expected entropy",
      scale: ["sure", "unsure"],
    },
  };
  const measureOf = (name) => MEASURES[name] ? name : "mutual_information";
  // M=1 is a single network: no sub-models to show, compare or count.
  const networkOf = (m) => (m === 1 ? "a single network" : `${m} sub-models`);

  function describeModel(m) {
    const measure = measureOf(m.uncertain_measure);
    const threshold = m.thresholds && m.thresholds[measure];
    const shape = m.input_shape.join("×");
    return (
      `${networkOf(m.ensemble_size)}, ${m.labels.length} classes (${m.labels.slice(0, 10).join(" ")}` +
      `${m.labels.length > 10 ? " …" : ""}), input ${shape}` +
      (threshold !== undefined ? `, ${MEASURES[measure].short} threshold ${fmt(threshold)} nats` : "")
    );
  }

  async function loadModels() {
    const select = $("model");
    const info = $("model-info");
    let response;
    try {
      response = await fetch("/models", { headers: headers() });
    } catch (err) {
      info.textContent = `Could not reach the service to list the models (${err.message}).`;
      return;
    }
    if (!response.ok) {
      const error = await apiError(response);
      models = [];
      current = null;
      select.replaceChildren(new Option("the server's default model", ""));
      info.textContent =
        `Could not list the models: the service answered ${error.status}: ${error.message}` +
        (error.status === 401 ? " Enter the API key above." : "");
      return;
    }
    const body = await response.json();
    models = body.models || [];
    const previous = current ? `${current.name}/${current.version}` : null;
    select.replaceChildren(
      ...models.map((m) => {
        const text = `${m.name}, version ${m.version}${m.default ? " (default)" : ""}`;
        return new Option(text, `${m.name}/${m.version}`);
      })
    );
    if (models.length === 0) {
      select.replaceChildren(new Option("no model is served", ""));
      current = null;
      info.textContent = "The service serves no model at the moment.";
      return;
    }
    const chosen =
      models.find((m) => `${m.name}/${m.version}` === previous) ||
      models.find((m) => m.default) ||
      models[0];
    select.value = `${chosen.name}/${chosen.version}`;
    current = chosen;
    info.textContent = describeModel(chosen);
  }

  // --- predicting -----------------------------------------------------------------------

  // Uploads and examples bring the answer into view (below the inputs on a phone); drawings
  // do not, so that the pad stays where the pen is.
  async function predict(blob, name, { reveal = false } = {}) {
    lastImage = { blob, name };
    const id = ++requestId;
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    showSent(blob, name);
    setBusy(`Asking the model about ${name}…`);

    const params = new URLSearchParams({ member_probabilities: "true", top_k: "1000" });
    if (current) {
      params.set("model", current.name);
      params.set("version", String(current.version));
    }
    let response;
    try {
      response = await fetch(`/predict?${params}`, {
        method: "POST",
        headers: headers({ "Content-Type": blob.type || "application/octet-stream" }),
        body: blob,
        signal: inFlight.signal,
      });
    } catch (err) {
      if (id === requestId && err.name !== "AbortError") {
        showError(`Could not reach the service (${err.message}).`);
      }
      return;
    }
    if (id !== requestId) return; // a newer image was sent meanwhile
    if (!response.ok) {
      const error = await apiError(response);
      if (id !== requestId) return;
      showError(`The service answered ${error.status}: ${error.message}`);
      if (reveal) revealAnswer();
      return;
    }
    const body = await response.json();
    if (id !== requestId) return;
    render(body, body.predictions[0]);
    if (reveal) revealAnswer();
  }

  function revealAnswer() {
    const box = $("status").getBoundingClientRect();
    if (box.top >= 0 && box.bottom <= window.innerHeight) return;
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    $("status").scrollIntoView({ block: "start", behavior: still ? "auto" : "smooth" });
  }

  function setBusy(text) {
    $("status").setAttribute("aria-busy", "true");
    $("status").className = "status";
    $("verdict").textContent = text;
    $("detail").textContent = "";
    $("error").hidden = true;
  }

  function showError(text) {
    $("status").removeAttribute("aria-busy");
    $("status").className = "status";
    $("verdict").textContent = "No answer.";
    $("detail").textContent = "";
    $("error").textContent = text;
    $("error").hidden = false;
    $("result").hidden = true;
  }

  function showSent(blob, name) {
    if (sentUrl) URL.revokeObjectURL(sentUrl);
    sentUrl = URL.createObjectURL(blob);
    $("sent").src = sentUrl;
    $("sent-caption").textContent = `The image sent: ${name}`;
  }

  // --- the answer -----------------------------------------------------------------------

  function fmt(x) {
    if (x === 0) return "0";
    if (Math.abs(x) < 0.001) return x.toExponential(1);
    return x.toPrecision(2);
  }

  function pct(p) {
    if (p >= 0.9995 && p < 1) return "more than 99.9 %";
    if (p > 0 && p < 0.0005) return "less than 0.1 %";
    return `${(100 * p).toFixed(1)} %`;
  }

  function listWords(items) {
    if (items.length <= 1) return items.join("");
    return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
  }

  function labelsOf(body, k) {
    const model = models.find((m) => m.name === body.model && m.version === body.version);
    if (model && model.labels.length === k) return model.labels;
    return Array.from({ length: k }, (_, i) => String(i));
  }

  function verdictOf(p, m, labels, measure) {
    const count = WORDS[m] || String(m);
    const digits = labels.every((l) => /^[0-9]$/.test(l));
    const known = digits ? "a digit it knows" : "one of the things it knows";
    const votes = (p.members || []).map((h) => h.label);
    // "the sub-models agree / disagree" is what mutual information measures, and only that,
    // and only where there are sub-models
    const heads = measure === "mutual_information" && m > 1;
    if (!p.uncertain) {
      return {
        verdict: heads
          ? `The ${count} sub-models agree: this looks like a ${p.label}.`
          : `The model is sure: this looks like a ${p.label}.`,
        detail: `Probability ${pct(p.probability)}.`,
        agree: true,
      };
    }
    if (!heads) {
      return {
        verdict: `The model is not sure this is ${known}: its answer is spread over several classes.`,
        detail: `Best guess ${p.label}, probability ${pct(p.probability)}.`,
        agree: false,
      };
    }
    const same = votes.length > 0 && votes.every((v) => v === votes[0]);
    const how = same
      ? `All ${count} lean towards ${votes[0]}, but with very different confidence.`
      : `Their votes: ${listWords(votes)}.`;
    return {
      verdict: `The sub-models disagree: the model is not sure this is ${known}.`,
      detail: `${how} Best guess ${p.label}, probability ${pct(p.probability)}.`,
      agree: false,
    };
  }

  function render(body, p) {
    const m = body.ensemble_size;
    const heads = p.member_probabilities || [];
    const k = heads.length ? heads[0].length : p.top_k.length;
    const labels = labelsOf(body, k);
    const measure = measureOf(body.uncertain_measure);
    const v = verdictOf(p, m, labels, measure);

    $("status").removeAttribute("aria-busy");
    $("status").className = `status ${v.agree ? "agree" : "disagree"}`;
    $("verdict").textContent = v.verdict;
    $("detail").textContent = v.detail;
    $("error").hidden = true;
    $("result").hidden = false;

    renderGauge(p.uncertainty[measure], p.threshold, m, k, measure);

    const mean = new Array(k).fill(0);
    for (const c of p.top_k) mean[c.index] = c.probability;
    const whose = m === 1 ? "The network's answer" : "The ensemble's answer";
    $("votes-title").textContent = m === 1 ? "Its answer" : "Their votes";
    $("mean-chart").replaceChildren(
      chart(mean, labels, "mean-chart", `${whose}: ${p.label}`, pct(p.probability), 300)
    );
    $("heads").replaceChildren(
      ...(m === 1 ? [] : heads).map((probs, h) => {
        const top = argmax(probs);
        const title = `Sub-model ${h + 1} votes ${labels[top]}`;
        return chart(probs, labels, "head-chart", title, pct(probs[top]), 160);
      })
    );
    renderNumbers(p, m, measure);
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  // The flag's measure on a log scale from threshold/100 to its maximum: ln(min(M, K)) for
  // mutual information, ln(K) for the entropies.
  function renderGauge(value, threshold, m, k, measure) {
    const lo = threshold / 100;
    const top = measure === "mutual_information" ? Math.min(m, k) : k;
    const hi = Math.max(Math.log(top), threshold * 10);
    const at = (x) => Math.min(1, Math.max(0, Math.log(Math.max(x, lo) / lo) / Math.log(hi / lo)));
    const above = value > threshold;
    $("gauge-title").textContent = MEASURES[measure].title;
    [$("gauge-low").textContent, $("gauge-high").textContent] = MEASURES[measure].scale;
    $("gauge-fill").style.width = `${Math.max(1.5, 100 * at(value)).toFixed(1)}%`; // seen at 0
    $("gauge-fill").className = `gauge-fill ${above ? "above" : "below"}`;
    $("gauge-threshold").style.left = `${(100 * at(threshold)).toFixed(1)}%`;
    $("gauge-threshold-label").style.left = `${(100 * at(threshold)).toFixed(1)}%`;
    $("gauge-text").textContent =
      `${MEASURES[measure].name} ${fmt(value)} nats, ${above ? "above" : "below"} the model's ` +
      `threshold ${fmt(threshold)} (the line; logarithmic scale up to the maximum ${fmt(hi)}).`;
  }

  // One bar chart: a figure with a caption and an SVG of K bars, `width` units wide (the
  // smaller, the larger its text when the chart is drawn at the same size).
  function chart(probs, labels, kind, title, value, width) {
    const k = probs.length;
    const height = Math.round(width / 2);
    const base = height - 18;
    const step = width / k;
    const top = argmax(probs);

    const figure = document.createElement("figure");
    figure.className = `chart ${kind}`;
    const caption = document.createElement("figcaption");
    caption.append(`${title} `);
    const strong = document.createElement("strong");
    strong.textContent = `(${value})`;
    caption.append(strong);

    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("role", "img");
    const ranked = probs
      .map((q, i) => [q, i])
      .sort((a, b) => b[0] - a[0])
      .slice(0, 3)
      .map(([q, i]) => `${labels[i]}: ${pct(q)}`);
    svg.setAttribute("aria-label", `${title}. Highest: ${ranked.join("; ")}.`);

    const axis = document.createElementNS(SVG, "line");
    axis.setAttribute("x1", "0");
    axis.setAttribute("x2", String(width));
    axis.setAttribute("y1", String(base));
    axis.setAttribute("y2", String(base));
    axis.setAttribute("class", "axis");
    svg.append(axis);

    probs.forEach((q, i) => {
      const h = Math.max(q * (base - 4), q > 0.005 ? 1 : 0);
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", (i * step + step * 0.15).toFixed(1));
      bar.setAttribute("width", (step * 0.7).toFixed(1));
      bar.setAttribute("y", (base - h).toFixed(1));
      bar.setAttribute("height", h.toFixed(1));
      bar.setAttribute("class", i === top ? "bar top" : "bar");
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${labels[i]}: ${pct(q)}`;
      bar.append(tip);
      svg.append(bar);
      if (k <= 20) {
        const text = document.createElementNS(SVG, "text");
        text.setAttribute("x", (i * step + step / 2).toFixed(1));
        text.setAttribute("y", String(height - 4));
        text.setAttribute("text-anchor", "middle");
        text.setAttribute("class", i === top ? "tick top" : "tick");
        text.textContent = labels[i];
        svg.append(text);
      }
    });
    figure.append(caption, svg);
    return figure;
  }

  function renderNumbers(p, m, measure) {
    // A single network's sub-model measures say nothing (mutual information 0, expected entropy
    // the predictive one): shown only when the model's flag uses one of them.
    const single = m === 1;
    const shown = (name) => !single || measure === name;
    const rows = [
      [single ? "prediction" : "ensemble prediction", `${p.label} (${pct(p.probability)})`],
      ...(shown("mutual_information")
        ? [["mutual information (sub-models' disagreement)", `${fmt(p.uncertainty.mutual_information)} nats`]]
        : []),
      [`threshold (on ${MEASURES[measure].name.toLowerCase()})`, `${fmt(p.threshold)} nats`],
      ["uncertain", p.uncertain ? "yes" : "no"],
      ["predictive entropy (total)", `${fmt(p.uncertainty.predictive_entropy)} nats`],
      ...(shown("expected_entropy")
        ? [["expected entropy (each sub-model's own doubt)", `${fmt(p.uncertainty.expected_entropy)} nats`]]
        : []),
      ...(single
        ? [["sub-models", "none: a single network"]]
        : [
            ["pairs of sub-models voting differently", pct(p.uncertainty.disagreement)],
            ["sub-models", String(m)],
            ...(p.members || []).map((h, i) => [
              `sub-model ${i + 1}`,
              `${h.label} (${pct(h.probability)}), KL to the mean ${fmt(h.kl_to_mean)} nats`,
            ]),
          ]),
    ];
    $("numbers").replaceChildren(
      ...rows.map(([name, value]) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = name;
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(th, td);
        return tr;
      })
    );
  }

  // --- drawing --------------------------------------------------------------------------

  const pad = $("pad");
  const ctx = pad.getContext("2d");
  let drawing = false;
  let last = null;
  let inked = false;
  let pending = null;

  function clearPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    inked = false;
  }

  function point(e) {
    const rect = pad.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) * pad.width) / rect.width,
      y: ((e.clientY - rect.top) * pad.height) / rect.height,
    };
  }

  function stroke(from, to) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 20;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    inked = true;
  }

  pad.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    drawing = true;
    last = point(e);
    stroke(last, last); // a dot
    clearTimeout(pending);
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = point(ev);
      stroke(last, p);
      last = p;
    }
  });
  const lift = () => {
    if (!drawing) return;
    drawing = false;
    clearTimeout(pending);
    pending = setTimeout(classifyDrawing, 350); // several strokes in a row make one request
  };
  pad.addEventListener("pointerup", lift);
  pad.addEventListener("pointercancel", lift);

  // The ink cropped, scaled to fill INK_SHARE of a square and centred by its mass, as MNIST.
  function drawingBlob() {
    const { width, height } = pad;
    const pixels = ctx.getImageData(0, 0, width, height).data;
    let x0 = width;
    let y0 = height;
    let x1 = -1;
    let y1 = -1;
    let mass = 0;
    let mx = 0;
    let my = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = pixels[(y * width + x) * 4];
        if (v < 16) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
        mass += v;
        mx += v * x;
        my += v * y;
      }
    }
    if (x1 < 0) return Promise.resolve(null);
    const w = x1 - x0 + 1;
    const h = y1 - y0 + 1;
    const side = Math.ceil(Math.max(w, h) / INK_SHARE);
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const dx = clamp(Math.round(side / 2 - (mx / mass - x0)), 0, side - w);
    const dy = clamp(Math.round(side / 2 - (my / mass - y0)), 0, side - h);
    const out = document.createElement("canvas");
    out.width = side;
    out.height = side;
    const o = out.getContext("2d");
    o.fillStyle = "#000";
    o.fillRect(0, 0, side, side);
    o.drawImage(pad, x0, y0, w, h, dx, dy, w, h);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  async function classifyDrawing() {
    clearTimeout(pending);
    if (!inked) {
      showError("Draw a digit first (or upload an image, or pick an example).");
      return;
    }
    const blob = await drawingBlob();
    if (blob) predict(blob, "your drawing");
  }

  // --- wiring ---------------------------------------------------------------------------

  $("classify-drawing").addEventListener("click", classifyDrawing);
  $("clear").addEventListener("click", () => {
    clearTimeout(pending);
    clearPad();
  });

  $("file").addEventListener("change", (e) => {
    const file = e.target.files && e.target.files[0];
    if (file) predict(file, file.name, { reveal: true });
  });

  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) predict(file, file.name, { reveal: true });
  });

  for (const button of document.querySelectorAll("button.example")) {
    button.addEventListener("click", async () => {
      const name = button.dataset.name;
      let response;
      try {
        response = await fetch(button.dataset.src);
      } catch (err) {
        showError(`Could not load ${name} (${err.message}).`);
        return;
      }
      if (!response.ok) {
        const error = await apiError(response);
        showError(`Could not load ${name}: ${error.status}: ${error.message}`);
        return;
      }
      predict(await response.blob(), name, { reveal: true });
    });
  }

  $("model").addEventListener("change", () => {
    const value = $("model").value;
    current = models.find((m) => `${m.name}/${m.version}` === value) || null;
    $("model-info").textContent = current ? describeModel(current) : "";
    if (lastImage) predict(lastImage.blob, lastImage.name);
  });

  $("api-key").value = readKey();
  $("api-key").addEventListener("change", () => {
    storeKey($("api-key").value.trim());
    loadModels();
  });

  clearPad();
  loadModels();
})();
