/*
 * VisIVO JS9 analysis page: shows a FITS file from the server's data roots in JS9, lets the user
 * draw a region and runs imstat / imfit / imview / specflux / imval through
 * POST /api/visualization/js9/analysis. Contours come back as paths and are drawn in a JS9
 * shape layer ("casa-contours"); fitted Gaussians as ellipses in "casa-fit".
 *
 * Token handling (local single-user server): the API token is read once from the URL fragment
 * (/js9/#token=...; a fragment never reaches the server or its logs), kept in sessionStorage for
 * this tab only, and removed from the address bar. Without it the page asks for it (the server
 * prints it at start and writes it to ~/.visivo_token). Every API call sends X-Visivo-Token.
 * Optional fragment key: file=<path> loads that file at start.
 *
 * Viewer defaults (issue 11): contour levels come from the server's imview default (logarithmic from
 * 3·σ, σ = 1.4826·MAD, to the peak; see app/services/js9/contour_levels.py); contours are drawn as
 * white lines of width 2 over a black outline of width 4, visible on every colormap. A cube opens
 * on its brightest channel (the channel of the peak voxel, from imstat's maxpos) with a channel
 * slider; tasks other than specflux run on the displayed channel. Results are cleared whenever the
 * displayed image (file or channel) changes.
 */
(function () {
  "use strict";

  const API = "/api/visualization/js9";
  const TOKEN_KEY = "visivo-token";
  const CONTOUR_LAYER = "casa-contours";
  const FIT_LAYER = "casa-fit";
  const CONTOUR_COLOR = "#ffffff";
  const CONTOUR_WIDTH = 2;
  const OUTLINE_COLOR = "#000000";
  const OUTLINE_WIDTH = 4;
  const $id = (id) => document.getElementById(id);

  const state = {token: null, dir: "", imagePath: null, js9Ready: false, pendingFile: null, lastResult: null,
                 depth: 1, channel: null};
  window.visivoJs9 = state; // for tests and debugging

  // -- token --------------------------------------------------------------------------------
  function readFragment() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    state.pendingFile = params.get("file");
    if (token || params.get("file")) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
  }

  function showTokenState() {
    $id("token-panel").hidden = !!state.token;
    $id("token-state").textContent = state.token ? "token set for this tab" : "no API token";
  }

  function headers(extra) {
    return Object.assign({"X-Visivo-Token": state.token || ""}, extra || {});
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({}, options, {headers: headers((options || {}).headers)}));
    if (response.status === 401) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
      throw new Error("The server refused the API token (HTTP 401).");
    }
    return response;
  }

  // -- files --------------------------------------------------------------------------------
  async function listDirectory(path) {
    const response = await api(`/v1/files/list?path=${encodeURIComponent(path || "")}`);
    const body = await response.json();
    if (!body.valid) {
      throw new Error(body.error || "cannot list the directory");
    }
    state.dir = body.current_path;
    const select = $id("file-select");
    select.innerHTML = "";
    const head = document.createElement("option");
    head.textContent = `${body.current_path} (${body.entries.length} entries)`;
    head.value = "";
    select.appendChild(head);
    for (const entry of body.entries) {
      if (entry.type !== "directory" && !entry.is_fits) {
        continue;
      }
      const option = document.createElement("option");
      option.value = entry.path;
      option.dataset.type = entry.type;
      option.textContent = entry.type === "directory" ? `[dir] ${entry.name}` : entry.name;
      select.appendChild(option);
    }
  }

  async function onFileSelect() {
    const option = $id("file-select").selectedOptions[0];
    if (!option || !option.value) {
      return;
    }
    if (option.dataset.type === "directory") {
      await listDirectory(option.value);
      return;
    }
    $id("file-path").value = option.value;
    await loadImage(option.value);
  }

  async function loadImage(path) {
    if (!state.js9Ready) {
      state.pendingFile = path;
      return;
    }
    setText("image-state", `Loading ${path} ...`);
    const response = await api(`${API}/file?path=${encodeURIComponent(path)}`);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      setText("image-state", body.detail || `HTTP ${response.status}`, true);
      return;
    }
    const blob = await response.blob();
    const name = path.split("/").pop();
    const file = new File([blob], name, {type: "application/fits"});
    JS9.Load(file, {
      onload: (im) => {
        JS9.SetZoom("toFit");
        state.imagePath = path;
        const info = JS9.GetImageData(false) || {};
        setText("image-state", `${name}: ${info.width || "?"} × ${info.height || "?"} pixels`);
        clearResults();
        setupChannels(im).catch((e) => setText("image-state", e.message, true)).finally(() => {
          document.body.dataset.imageLoaded = "true";
        });
      },
    });
  }

  // -- cube channels --------------------------------------------------------------------------
  function cubeDepth(im) {
    const header = (im && im.raw && im.raw.header) || {};
    return header.NAXIS >= 3 && header.NAXIS3 > 1 ? header.NAXIS3 : 1;
  }

  async function brightestChannel() {
    // imstat over the whole cube: maxpos is CASA's 0-based position of the peak voxel over all FITS axes
    const response = await api(`${API}/analysis`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({task: "imstat", image_path: state.imagePath, parameters: {}}),
    });
    const answer = await response.json();
    const maxpos = answer.success && answer.result.DATA ? answer.result.DATA.maxpos : null;
    return maxpos && maxpos.length > 2 ? maxpos[2] : 0;
  }

  async function setupChannels(im) {
    state.depth = cubeDepth(im);
    state.channel = null;
    delete document.body.dataset.channel;
    $id("channel-panel").hidden = state.depth <= 1;
    if (state.depth <= 1) {
      return;
    }
    const slider = $id("channel-slider");
    slider.min = "0";
    slider.max = String(state.depth - 1);
    await showChannel(await brightestChannel());
  }

  function showChannel(channel) {
    const im = JS9.GetImage();
    const n = Math.max(0, Math.min(state.depth - 1, Number(channel) || 0));
    return new Promise((resolve) => {
      // JS9 image sections are 1-based along FITS axis 3; displaySlice() refuses 4-D files, a section does not
      im.displaySection({slice: `*:*:${n + 1}`}, () => {
        state.channel = n;
        $id("channel-slider").value = String(n);
        $id("channel-label").textContent = `channel ${n} of 0–${state.depth - 1}`;
        clearResults();
        document.body.dataset.channel = String(n);
        resolve(n);
      });
    });
  }

  // -- regions ------------------------------------------------------------------------------
  function currentRegion() {
    const all = JS9.GetRegions("all") || [];
    const selected = JS9.GetRegions("selected") || [];
    const region = (selected.length ? selected : all)[0];
    return region || null;
  }

  function toApiRegion(r) {
    if (!r) {
      return null;
    }
    // JS9 image coordinates are 1-based FITS pixels, which is what the API expects.
    switch (r.shape) {
      case "circle":
        return {shape: "circle", x: r.x, y: r.y, r: r.radius};
      case "box":
        return {shape: "box", x: r.x, y: r.y, width: r.width, height: r.height, angle: r.angle || 0};
      case "ellipse":
        return {shape: "ellipse", x: r.x, y: r.y, rx: r.r1 !== undefined ? r.r1 : r.eradius.x,
                ry: r.r2 !== undefined ? r.r2 : r.eradius.y, angle: r.angle || 0};
      case "polygon":
        return {shape: "polygon", pts: r.pts.map((p) => ({x: p.x, y: p.y}))};
      case "point":
        return {shape: "point", x: r.x, y: r.y};
      default:
        return null;
    }
  }

  function describeRegion() {
    const region = toApiRegion(currentRegion());
    const text = region ? `${region.shape} ${JSON.stringify(region)}` : "No region: tasks use the whole image.";
    setText("region-state", text);
  }

  // -- analysis -----------------------------------------------------------------------------
  function taskParameters(task) {
    const params = {engine: $id("engine-select").value};
    if (task === "imfit") {
      params.background = $id("imfit-background").checked;
      params.n_components = Number($id("imfit-ncomp").value || 1);
    } else if (task === "imview") {
      params.n_levels = Number($id("imview-levels").value || 10);
      params.level_scale = $id("imview-scale").value;
      params.smoothing_sigma = Number($id("imview-sigma").value || 0);
      const explicit = $id("imview-explicit").value.split(/[\s,]+/).filter((v) => v !== "").map(Number);
      if (explicit.length) { params.levels = explicit; }
    } else if (task === "imval") {
      const box = $id("imval-box").value.trim();
      const stokes = $id("imval-stokes").value.trim();
      if (box) { params.box = box; }
      if (stokes) { params.stokes = stokes; }
    }
    return params;
  }

  async function runTask() {
    const task = $id("task-select").value;
    if (!state.imagePath) {
      setText("run-state", "Load an image first.", true);
      return;
    }
    const body = {task: task, image_path: state.imagePath, parameters: taskParameters(task)};
    if (state.channel !== null && task !== "specflux") {
      body.parameters.chans = String(state.channel);  // the displayed channel (0-based, CASA syntax)
    }
    const region = toApiRegion(currentRegion());
    if (region) {
      body.region = region;
    }
    document.body.dataset.runState = "running";
    setText("run-state", `running ${task} ...`);
    try {
      const response = await api(`${API}/analysis`, {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      });
      const answer = await response.json();
      state.lastResult = answer;
      $id("result-json").textContent = JSON.stringify(answer, null, 2);
      if (!response.ok || !answer.success) {
        const message = answer.detail || answer.error || `HTTP ${response.status}`;
        setText("run-state", `${task} failed: ${message}`, true);
        $id("result-summary").textContent = "";
        document.body.dataset.runState = "error";
        return;
      }
      const cached = response.headers.get("X-JS9-Cache") === "hit";
      $id("run-state").innerHTML = "";
      $id("run-state").append(`${task} done in ${answer.execution_time_sec.toFixed(4)} s `);
      if (cached) {
        const chip = document.createElement("span");
        chip.className = "cached";
        chip.textContent = "cached";
        $id("run-state").append(chip);
      }
      showResult(task, answer.result);
      document.body.dataset.runState = "done";
    } catch (err) {
      setText("run-state", String(err.message || err), true);
      document.body.dataset.runState = "error";
    }
  }

  function fmt(value) {
    if (value === null || value === undefined) { return "—"; }
    if (typeof value === "number") { return Number.isInteger(value) ? String(value) : value.toPrecision(7); }
    if (Array.isArray(value)) { return `[${value.map(fmt).join(", ")}]`; }
    return String(value);
  }

  function table(rows) {
    const t = document.createElement("table");
    t.className = "stats";
    for (const [key, value, id] of rows) {
      const tr = t.insertRow();
      const th = document.createElement("th");
      th.textContent = key;
      tr.appendChild(th);
      const td = tr.insertCell();
      td.className = "num";
      td.textContent = fmt(value);
      if (id) { td.id = id; td.dataset.value = String(value); }
    }
    return t;
  }

  function showResult(task, result) {
    const box = $id("result-summary");
    box.innerHTML = "";
    if (task === "imstat") {
      const d = result.DATA;
      const keys = ["npts", "mean", "std", "rms", "min", "max", "sum", "median", "medabsdevmed", "q1", "q3", "flux"];
      box.appendChild(table(keys.filter((k) => k in d).map((k) => [k, d[k], `stat-${k}`])));
    } else if (task === "imfit") {
      const f = result.fit;
      box.appendChild(table([
        ["amplitude", f.amplitude, "fit-amplitude"], ["center (JS9 px)", f.center, "fit-center"],
        ["major FWHM", `${fmt(f.major_axis)} ${f.axis_unit}`], ["minor FWHM", `${fmt(f.minor_axis)} ${f.axis_unit}`],
        ["PA (deg)", f.pa], ["flux", f.flux], ["background", f.background], ["converged", f.converged],
      ]));
      drawFit(result.components || [f]);
    } else if (task === "imview") {
      const n = result.contour_paths.reduce((s, l) => s + l.paths.length, 0);
      box.appendChild(table([["levels", result.contour_levels.length, "contour-levels"], ["paths", n, "contour-count"],
        ["data min", result.data_range.min], ["data max", result.data_range.max]]));
      drawContours(result);
    } else if (task === "specflux") {
      const d = result.flux.DATA;
      const rows = [["npts", d.npts], ["sum", d.sum, "specflux-sum"], ["mean", d.mean]];
      if ("flux" in d) { rows.push([`flux (${d.flux_unit})`, d.flux, "specflux-flux"]); }
      if (result.spectrum) { rows.push(["channels", result.spectrum.channel.length]); }
      box.appendChild(table(rows));
    } else if (task === "imval") {
      const rows = [["shape", result.shape], ["unit", result.unit]];
      if ("value" in result) { rows.push(["value", result.value, "imval-value"]); }
      box.appendChild(table(rows));
    }
  }

  // -- overlays -----------------------------------------------------------------------------
  function ensureLayer(name, color) {
    if (!JS9.GetImage()) { return false; }
    const layers = JS9.GetShapeLayers ? JS9.GetShapeLayers() : [];
    if (!layers || layers.indexOf(name) < 0) {
      // JS9.Catalogs.opts: a non-interactive layer that pans and zooms with the image
      JS9.NewShapeLayer(name, $.extend(true, {}, JS9.Catalogs.opts, {color: color, tagcolors: {defcolor: color}}));
    }
    return true;
  }

  function clearLayers() {
    for (const name of [CONTOUR_LAYER, FIT_LAYER]) {
      try { JS9.RemoveShapes(name, "all"); } catch (e) { /* layer not created yet */ }
    }
  }

  function clearResults() {
    // a result belongs to the image (and channel) it was computed on: drop it when the display changes
    clearLayers();
    state.lastResult = null;
    $id("result-summary").innerHTML = "";
    $id("result-json").textContent = "";
    setText("run-state", "");
    delete document.body.dataset.runState;
    delete document.body.dataset.contours;
  }

  function drawContours(result) {
    if (!ensureLayer(CONTOUR_LAYER, CONTOUR_COLOR)) { return; }
    JS9.RemoveShapes(CONTOUR_LAYER, "all");
    const outlines = [];
    const lines = [];
    for (const level of result.contour_paths) {
      for (const path of level.paths) {
        const pts = path.x.map((x, i) => ({x: x, y: path.y[i]}));
        if (pts.length < 2) { continue; }
        const base = path.closed && pts.length > 3 ? {shape: "polygon", pts: pts.slice(0, -1)} : {shape: "line", pts: pts};
        // a dark outline under a white line: visible on dark and on bright colormap entries alike
        outlines.push(Object.assign({}, base, {color: OUTLINE_COLOR, strokeWidth: OUTLINE_WIDTH, tags: "outline"}));
        lines.push(Object.assign({}, base, {color: CONTOUR_COLOR, strokeWidth: CONTOUR_WIDTH, tags: "contour"}));
      }
    }
    if (lines.length) {
      JS9.AddShapes(CONTOUR_LAYER, outlines.concat(lines));
    }
    document.body.dataset.contours = String(lines.length);
  }

  function drawFit(components) {
    if (!ensureLayer(FIT_LAYER, "#ff4081")) { return; }
    JS9.RemoveShapes(FIT_LAYER, "all");
    const shapes = components.map((c) => ({
      shape: "ellipse", x: c.center[0], y: c.center[1],
      eradius: {x: c.major_axis_pixels / 2, y: c.minor_axis_pixels / 2},
      angle: c.theta_pixels_deg !== undefined ? c.theta_pixels_deg : (c.pa + 90), color: "#ff4081",
    }));
    JS9.AddShapes(FIT_LAYER, shapes);
  }

  // -- wiring -------------------------------------------------------------------------------
  function setText(id, text, error) {
    const el = $id(id);
    el.textContent = text;
    el.classList.toggle("error", !!error);
  }

  function showParams() {
    const task = $id("task-select").value;
    document.querySelectorAll(".params").forEach((el) => el.classList.toggle("active", el.dataset.task === task));
  }

  async function start() {
    readFragment();
    showTokenState();
    $id("token-save").addEventListener("click", () => {
      const value = $id("token-input").value.trim();
      if (value) {
        sessionStorage.setItem(TOKEN_KEY, value);
        state.token = value;
        showTokenState();
        listDirectory("").catch((e) => setText("image-state", e.message, true));
      }
    });
    $id("file-select").addEventListener("change", () => onFileSelect().catch((e) => setText("image-state", e.message, true)));
    $id("file-up").addEventListener("click", () => {
      const parent = state.dir.replace(/\/[^/]*$/, "") || "/";
      listDirectory(parent).catch((e) => setText("image-state", e.message, true));
    });
    $id("load-button").addEventListener("click", () => {
      const path = $id("file-path").value.trim();
      if (path) { loadImage(path).catch((e) => setText("image-state", e.message, true)); }
    });
    document.querySelectorAll(".add-region").forEach((button) => button.addEventListener("click", () => {
      if (JS9.GetImage()) { JS9.AddRegions(button.dataset.shape); describeRegion(); }
    }));
    $id("clear-regions").addEventListener("click", () => { JS9.RemoveRegions("all"); describeRegion(); });
    $id("task-select").addEventListener("change", showParams);
    $id("run-button").addEventListener("click", runTask);
    $id("channel-slider").addEventListener("change", (event) => {
      showChannel(event.target.value).catch((e) => setText("image-state", e.message, true));
    });
    showParams();
    if (window.JS9 && JS9.Regions) {
      JS9.Regions.opts.onchange = describeRegion;
    }
    $(document).on("JS9:ready", () => {
      state.js9Ready = true;
      document.body.dataset.js9Ready = "true";
      if (state.pendingFile && state.token) {
        $id("file-path").value = state.pendingFile;
        loadImage(state.pendingFile).catch((e) => setText("image-state", e.message, true));
      }
    });
    if (window.JS9 && JS9.readied) {
      $(document).trigger("JS9:ready", {status: "OK"});
    }
    if (state.token) {
      listDirectory("").catch((e) => setText("image-state", e.message, true));
    }
  }

  start();
}());
