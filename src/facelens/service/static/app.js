// facelens web page: plain JavaScript over the REST API (no framework, no CDN: works offline).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { key: localStorage.getItem("facelens-key") || "" };

function status(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-API-Key": state.key }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status}`;
    try {
      const body = await response.json();
      message = body.error ? `${body.error.message} (${body.error.code})` : message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json() : response.blob();
}

function imageForm(file, field = "image") {
  const form = new FormData();
  form.append(field, file);
  return form;
}

// thumbnails need the key header, so they are fetched and shown as blob URLs
async function thumbnail(url) {
  const img = document.createElement("img");
  img.alt = "face";
  try {
    img.src = URL.createObjectURL(await api(url));
  } catch (_) {
    img.alt = "no thumbnail";
  }
  return img;
}

// -- tabs and key ------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== tab.dataset.panel;
    if (tab.dataset.panel === "gallery") loadPeople();
    if (tab.dataset.panel === "clusters") loadClusters();
  });
}

$("#key-input").value = state.key;
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("#key-input").value.trim();
  localStorage.setItem("facelens-key", state.key);
  status(state.key ? "key saved in this browser" : "key cleared");
});

// -- identify ----------------------------------------------------------------------------------
async function identify(file) {
  status(`identifying ${file.name}…`);
  try {
    const result = await api("/v1/identify", { method: "POST", body: imageForm(file) });
    await drawResult(file, result);
    status(`${result.faces.length} face(s) in ${file.name}`);
  } catch (err) {
    status(`identify failed: ${err.message}`, true);
  }
}

async function drawResult(file, result) {
  const bitmap = await createImageBitmap(file);
  const canvas = $("#identify-canvas");
  canvas.width = result.width;
  canvas.height = result.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, result.width, result.height);
  const line = Math.max(2, Math.round(Math.max(result.width, result.height) / 400));
  ctx.font = `${line * 7}px system-ui, sans-serif`;
  const list = $("#identify-results");
  list.replaceChildren();
  result.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.bbox;
    const known = face.identity !== "unknown";
    const best = face.matches[0];
    const label = known ? `${face.identity} ${best.similarity.toFixed(2)}` : "unknown";
    ctx.strokeStyle = known ? "#18a03a" : "#d33";
    ctx.lineWidth = line;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const textWidth = ctx.measureText(label).width;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(x1, Math.max(0, y1 - line * 9), textWidth + line * 2, line * 9);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + line, Math.max(line * 7, y1 - line * 2));
    const item = document.createElement("li");
    item.className = known ? "known" : "unknown";
    item.dataset.identity = face.identity;
    item.textContent = `face ${i + 1}: ${label}`;
    list.append(item);
  });
}

const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) identify(e.dataTransfer.files[0]);
});
$("#identify-file").addEventListener("change", (e) => {
  if (e.target.files.length) identify(e.target.files[0]);
});

// -- gallery -----------------------------------------------------------------------------------
// every person, following the list's pages
async function allPeople() {
  const people = [];
  let after = 0;
  for (;;) {
    const page = await api(`/v1/gallery/people?limit=1000&after=${after}`);
    people.push(...page.people);
    if (page.next === null || page.next === undefined) return people;
    after = page.next;
  }
}

async function loadPeople() {
  try {
    const people = await allPeople();
    // all cards first, then one swap: the list never shows a half-built state
    const cards = [];
    for (const person of people) cards.push(await personCard(person));
    $("#people").replaceChildren(...cards);
    status(`${people.length} people in the gallery`);
  } catch (err) {
    status(`could not load the gallery: ${err.message}`, true);
  }
}

async function personCard(person) {
  const item = document.createElement("li");
  item.dataset.name = person.name;
  item.dataset.id = person.id;
  // thumbnail URLs carry a token and come only to keys with the "faces" scope
  if (person.thumbnails && person.thumbnails.length) item.append(await thumbnail(person.thumbnails[0]));
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = person.name;
  const count = document.createElement("div");
  count.textContent = `${person.faces} face(s)`;
  const rename = document.createElement("button");
  rename.textContent = "Rename";
  rename.className = "rename";
  rename.addEventListener("click", async () => {
    const next = prompt(`New name for ${person.name}`, person.name);
    if (!next || next.trim() === person.name) return;
    try {
      await api(`/v1/gallery/people/${person.id}`, {
        method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: next.trim() }),
      });
      await loadPeople();
    } catch (err) { status(`rename failed: ${err.message}`, true); }
  });
  const forget = document.createElement("button");
  forget.textContent = "Forget";
  forget.className = "forget danger";
  forget.addEventListener("click", async () => {
    if (!confirm(`Forget ${person.name} completely? Their faces and thumbnails are erased for good.`)) return;
    try {
      const receipt = await api(`/v1/gallery/people/${person.id}/forget`, { method: "POST" });
      await loadPeople();
      status(`forgot ${person.name} (${receipt.faces_removed} face(s) erased)`);
    } catch (err) { status(`forget failed: ${err.message}`, true); }
  });
  item.append(name, count, rename, forget);
  return item;
}

async function personId(name) {
  const people = await allPeople();
  const found = people.find((p) => p.name === name);
  if (found) return found.id;
  const created = await api("/v1/gallery/people", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
  });
  return created.id;
}

async function enroll(name, blobs) {
  const id = await personId(name);
  let added = 0;
  const failures = [];
  for (const blob of blobs) {
    try {
      const result = await api(`/v1/gallery/people/${id}/faces`, { method: "POST", body: imageForm(blob) });
      added += result.face_ids.length;
    } catch (err) {
      failures.push(`${blob.name || "photo"}: ${err.message}`);
    }
  }
  await loadPeople();
  if (failures.length) status(`${added} face(s) enrolled for ${name}; refused: ${failures.join("; ")}`, true);
  else status(`enrolled ${added} face(s) for ${name}`);
  return added;
}

$("#enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("#enroll-name").value.trim();
  const files = Array.from($("#enroll-files").files);
  if (!name || !files.length) { status("a name and at least one photo are needed", true); return; }
  status(`enrolling ${name}…`);
  try {
    await enroll(name, files);
    $("#enroll-files").value = "";
  } catch (err) { status(`enroll failed: ${err.message}`, true); }
});

let stream = null;
$("#webcam-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status("this browser gives no camera access here (it needs https or localhost)", true);
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true });
    $("#webcam-video").srcObject = stream;
    $("#webcam").hidden = false;
  } catch (err) { status(`camera: ${err.message}`, true); }
});
function stopWebcam() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("#webcam").hidden = true;
}
$("#webcam-stop").addEventListener("click", stopWebcam);
$("#webcam-capture").addEventListener("click", async () => {
  const name = $("#enroll-name").value.trim();
  if (!name) { status("type the person's name first", true); return; }
  const video = $("#webcam-video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  await enroll(name, [blob]);
});

// -- clusters ----------------------------------------------------------------------------------
async function clusterEdit(path, body) {
  try {
    await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await loadClusters();
  } catch (err) { status(`${path.split("/").pop()} failed: ${err.message}`, true); }
}

async function loadClusters() {
  try {
    const { clusters, summary } = await api("/v1/clusters");
    $("#cluster-summary").textContent = summary
      ? `${summary.images} photo(s), ${summary.faces} face(s): ${summary.clusters} people, ${summary.unassigned} unassigned, ${summary.set_aside} set aside`
      : "no clustered collection yet (run `facelens cluster DIR --out …` or POST /v1/cluster)";
    const items = [];
    for (const cluster of clusters) {
      const item = document.createElement("li");
      item.dataset.cluster = cluster.id;
      const tick = document.createElement("input");
      tick.type = "checkbox";
      tick.className = "pick";
      tick.value = cluster.id;
      const title = document.createElement("strong");
      title.textContent = ` ${cluster.name || `cluster ${cluster.id}`} — ${cluster.faces} face(s)` + (cluster.images ? `, ${cluster.images.length} photo(s)` : "");
      const faces = document.createElement("div");
      faces.className = "faces";
      const urls = cluster.thumbnails || [];
      for (const [i, faceId] of cluster.face_ids.slice(0, 24).entries()) {
        const img = urls[i] ? await thumbnail(urls[i]) : document.createElement("span");
        if (!urls[i]) img.textContent = `face ${faceId} `;
        img.title = `face ${faceId}: click to split it out of this cluster`;
        img.addEventListener("click", () => {
          if (confirm(`Split face ${faceId} out of this cluster?`)) clusterEdit("/v1/clusters/split", { face_id: faceId });
        });
        faces.append(img);
      }
      const name = document.createElement("input");
      name.placeholder = "name";
      name.value = cluster.name || "";
      const enrollBox = document.createElement("input");
      enrollBox.type = "checkbox";
      const enrollLabel = document.createElement("label");
      enrollLabel.append(enrollBox, " and enroll into the gallery");
      const save = document.createElement("button");
      save.textContent = "Name";
      save.addEventListener("click", () => {
        if (name.value.trim()) clusterEdit("/v1/clusters/name", { cluster: cluster.id, name: name.value.trim(), enroll: enrollBox.checked });
      });
      item.append(tick, title, faces, name, save, enrollLabel);
      items.push(item);
    }
    $("#cluster-list").replaceChildren(...items);
  } catch (err) {
    status(`could not load clusters: ${err.message}`, true);
  }
}

$("#merge-selected").addEventListener("click", () => {
  const picked = Array.from(document.querySelectorAll(".pick:checked")).map((el) => Number(el.value));
  if (picked.length !== 2) { status("tick exactly two clusters to merge", true); return; }
  clusterEdit("/v1/clusters/merge", { a: picked[0], b: picked[1] });
});

// -- video: a background job on the server, its timeline drawn as one lane per track ------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function drawTimeline(result) {
  const duration = Math.max(result.processed.seconds || 0, ...result.tracks.map((t) => t.end), 0.001);
  const rows = [];
  for (const track of result.tracks) {
    const row = document.createElement("div");
    row.className = "row" + (track.person === "unknown" ? " unknown" : "");
    row.dataset.track = track.track;
    const img = document.createElement("img");
    img.alt = `track ${track.track}`;
    if (track.thumbnail) img.src = track.thumbnail;  // a data: URL the server made (JPEG), never a remote one
    const label = document.createElement("span");
    const similarity = track.similarity === null ? "" : ` (${track.similarity.toFixed(2)})`;
    label.textContent = `#${track.track} ${track.person}${similarity}: ${track.start.toFixed(1)}–${track.end.toFixed(1)} s`;
    const lane = document.createElement("div");
    lane.className = "lane";
    const span = document.createElement("div");
    span.className = "span";
    span.style.left = `${(100 * track.start) / duration}%`;
    span.style.width = `${(100 * (track.end - track.start)) / duration}%`;
    lane.append(span);
    for (const cut of result.cuts) {
      const mark = document.createElement("div");
      mark.className = "cut";
      mark.style.left = `${(100 * cut) / duration}%`;
      lane.append(mark);
    }
    row.append(img, label, lane);
    rows.push(row);
  }
  $("#video-timeline").replaceChildren(...rows);
  const people = Object.keys(result.people);
  $("#video-summary").textContent = `${duration.toFixed(1)} s, ${result.tracks.length} track(s), ${result.cuts.length} cut(s); ` +
    (people.length ? `people: ${people.join(", ")}` : "nobody from the gallery") +
    (result.error ? ` — ${result.error}` : "");
}

$("#video-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#video-file").files[0];
  if (!file) { status("choose a video file first", true); return; }
  const fps = Number($("#video-fps").value) || 10;
  const bar = $("#video-progress");
  $("#video-timeline").replaceChildren();
  $("#video-summary").textContent = "";
  try {
    status(`uploading ${file.name}…`);
    let job = await api(`/v1/video?fps=${fps}`, { method: "POST", body: imageForm(file, "video") });
    bar.hidden = false;
    while (job.status === "queued" || job.status === "running") {
      bar.max = job.progress.total || 1;
      bar.value = job.progress.done;
      status(`processing ${file.name}: ${job.progress.done.toFixed(1)} of ${job.progress.total} s`);
      await sleep(700);
      job = await api(`/v1/video/jobs/${job.id}`);
    }
    bar.hidden = true;
    if (job.status !== "done") throw new Error(job.error || job.status);
    drawTimeline(job.result);
    status(`${file.name}: done`);
  } catch (err) {
    bar.hidden = true;
    status(`video: ${err.message}`, true);
  }
});

// -- anonymize: the server covers the faces and checks the result with its recognizer --------------
$("#anonymize-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#anonymize-file").files[0];
  if (!file) { status("choose a photo first", true); return; }
  const params = new URLSearchParams({ method: $("#anonymize-method").value, level: $("#anonymize-level").value,
    verify: $("#anonymize-verify").checked ? "true" : "false" });
  try {
    status(`anonymizing ${file.name}…`);
    const result = await api(`/v1/anonymize?${params}`, { method: "POST", body: imageForm(file) });
    const img = $("#anonymize-result");
    img.src = result.image;  // a data: URL the server made
    img.hidden = false;
    const link = $("#anonymize-download");
    link.href = result.image;
    link.hidden = false;
    let text = `${result.covered.length} face(s) covered`;
    const check = result.verification;
    if (check) {
      text += `; recognizer check: similarity to the original mean ${check.mean_similarity ?? "—"}, ` +
        `re-identified ${check.reidentified} of ${check.faces}, possible leaks ${check.leaks.length}`;
    }
    $("#anonymize-summary").textContent = text;
    $("#anonymize-summary").dataset.reidentified = check ? String(check.reidentified) : "";
    status(`${file.name}: done`);
  } catch (err) {
    status(`anonymize: ${err.message}`, true);
  }
});

if (!state.key) status("enter an API key (facelens keys create NAME --scope admin) to start");

// -- liveness: a server-drawn challenge, filmed and checked by the server ------------------------
const ACTION_TEXT = { blink: "blink", left: "turn your head to your left", right: "turn your head to your right",
  mouth: "open your mouth", smile: "smile" };

$("#liveness-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
    status("this browser cannot record the camera here (it needs https or localhost)", true);
    return;
  }
  $("#liveness-verdict").textContent = "";
  let camera = null;
  try {
    const session = await api("/v1/liveness/sessions", { method: "POST" });
    const list = $("#liveness-actions");
    list.replaceChildren(...session.actions.map((a) => {
      const li = document.createElement("li");
      li.textContent = ACTION_TEXT[a] || a;
      return li;
    }));
    camera = await navigator.mediaDevices.getUserMedia({ video: true });
    $("#liveness-video").srcObject = camera;
    const chunks = [];
    const recorder = new MediaRecorder(camera);
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    // about 2.5 s per action plus a second to settle, well inside the server's per-step limit
    const seconds = Math.min(1 + 2.5 * session.actions.length, (session.expires_at * 1000 - Date.now()) / 1000 - 5);
    status(`recording ${Math.round(seconds)} s: do the actions in order`);
    recorder.start(250);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    recorder.stop();
    await stopped;
    status("checking…");
    const clip = new Blob(chunks, { type: recorder.mimeType || "video/webm" });
    const verdict = await api(`/v1/liveness/sessions/${session.session_id}/video`,
      { method: "POST", body: imageForm(clip, "video") });
    const seen = verdict.completed.map((c) => `${c.action} at ${c.t.toFixed(1)} s`).join(", ") || "nothing";
    $("#liveness-verdict").textContent = verdict.passed
      ? `live: passed (${seen})` : `not passed: ${verdict.reason} (seen: ${seen})`;
    $("#liveness-verdict").dataset.passed = String(verdict.passed);
    status(verdict.passed ? "liveness check passed" : "liveness check failed", !verdict.passed);
  } catch (err) {
    status(`liveness: ${err.message}`, true);
  } finally {
    if (camera) camera.getTracks().forEach((t) => t.stop());
  }
});
