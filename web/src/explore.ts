// The explorer: a category's models (searched, filtered by split and geometry), each shown as
// a mesh with its materials, a cloud, or — with no geometry on the server — its keypoints
// alone; the category's semantic ids with counts (click to highlight); symmetry groups; and a
// predictions file scored model by model with error lines, to find where a method fails.
// Everything that decides the view is in the URL, so a copied link opens the same view.
import * as THREE from "three";
import { api, aroundAxis, banner, CategoryOut, colorFor, cssColor, drawCircle, drawLine, loadCloud, loadDisplayMesh, Marker, ModelInfo, Vec3, Viewer } from "./common";
import type {
  CategorySummary as Summary, ExploreModelRow as Row, ModelScores as Scored, PredictionScores as Predictions, RunFile, SymmetryOut as Symmetry,
} from "./generated/api-types";

type Display = "mesh" | "cloud";

const $ = (id: string) => document.getElementById(id)!;
const input = (id: string) => document.getElementById(id) as HTMLInputElement | HTMLSelectElement;
const view = new Viewer($("view"));
const overlay = new THREE.Group();
view.scene.add(overlay);
const params = new URLSearchParams(location.search);
// the benchmark's (kpengine.metrics.THRESHOLDS); a predictions answer carries them too
const THRESHOLDS = Array.from({ length: 11 }, (_, i) => i / 100);

const state = {
  categories: [] as CategoryOut[],
  category: "",
  rows: [] as Row[],
  shown: [] as Row[],
  summary: null as Summary | null,
  model: null as string | null,
  display: (params.get("display") === "cloud" ? "cloud" : "mesh") as Display,
  labels: params.get("labels") !== "0",
  symmetry: params.get("sym") !== "0",
  highlight: new Set((params.get("hl") ?? "").split(",").filter((s) => s !== "").map(Number)),
  preds: null as Predictions | null,
  predBy: new Map<string, Scored>(),
  t: THRESHOLDS.indexOf(Number(params.get("t") ?? "0.05")),
  camera: params.get("cam"),
  run: null as string | null, // the runs-folder file shown, if any
  loading: 0,
};
if (state.t < 0) state.t = 5;

// ------------------------------------------------------------------ URL and list

function updateUrl(): void {
  const q = new URLSearchParams();
  q.set("category", state.category);
  if (state.model) q.set("model", state.model);
  const keep: [string, string][] = [
    ["split", input("split").value], ["geo", input("geo").value], ["q", input("search").value.trim()],
    ["display", state.display === "cloud" ? "cloud" : ""], ["labels", state.labels ? "" : "0"], ["sym", state.symmetry ? "" : "0"],
    ["hl", [...state.highlight].sort((a, b) => a - b).join(",")], ["sort", input("sort").value],
    ["t", state.t === 5 ? "" : String(THRESHOLDS[state.t])],
    ["run", state.run ?? ""],
  ];
  for (const [k, v] of keep) if (v) q.set(k, v);
  const p = view.camera.position, c = view.controls.target;
  q.set("cam", [p.x, p.y, p.z, c.x, c.y, c.z].map((v) => v.toFixed(3)).join(","));
  history.replaceState(null, "", `/explore?${q.toString()}`);
}
view.controls.addEventListener("end", updateUrl);

function score(row: Row): number | null {
  const s = state.predBy.get(row.model_id);
  return s ? s.score[state.t] : null;
}

function filtered(): Row[] {
  const split = input("split").value, geo = input("geo").value, q = input("search").value.trim().toLowerCase();
  const rows = state.rows.filter((r) =>
    (!split || r.split === split) &&
    (!q || r.model_id.toLowerCase().startsWith(q)) &&
    (geo === "" || (geo === "any" && (r.has_mesh || r.has_points)) || (geo === "mesh" && r.has_mesh) ||
      (geo === "points" && r.has_points) || (geo === "none" && !r.has_mesh && !r.has_points)));
  if (input("sort").value === "error" && state.preds) {
    const key = (r: Row): number => score(r) ?? Infinity;
    const err = (r: Row): number => state.predBy.get(r.model_id)?.mean_error ?? 0;
    rows.sort((a, b) => key(a) - key(b) || err(b) - err(a));
  }
  return rows;
}

function renderList(): void {
  state.shown = filtered();
  $("n-models").textContent = String(state.shown.length);
  $("n-total").textContent = String(state.rows.length);
  const frag = document.createDocumentFragment();
  const metric = state.preds?.task === "saliency" ? "IoU" : "PCK";
  for (const r of state.shown) {
    const li = document.createElement("li");
    li.dataset.id = r.model_id;
    const geo = r.has_mesh ? "mesh" : r.has_points ? "cloud" : "keypoints";
    const s = state.predBy.get(r.model_id);
    li.title = r.model_id;
    li.textContent = s
      ? `${r.model_id.slice(0, 12)} ${metric} ${fmt(s.score[state.t])} err ${fmt(s.mean_error, 3)}`
      : `${r.model_id.slice(0, 12)} ${(r.split ?? "-").padEnd(5)} ${String(r.n_keypoints).padStart(2)} kp ${geo}`;
    li.classList.toggle("active", r.model_id === state.model);
    li.classList.toggle("marked", r.semantic_ids.some((id) => state.highlight.has(id)));
    li.classList.toggle("nogeo", !r.has_mesh && !r.has_points);
    frag.append(li);
  }
  $("models").replaceChildren(frag);
}
$("models").addEventListener("click", (ev) => {
  const li = (ev.target as HTMLElement).closest("li");
  if (li?.dataset.id) void showModel(li.dataset.id);
});

const fmt = (v: number | null | undefined, digits = 2): string => (v === null || v === undefined ? "–" : v.toFixed(digits));

function renderLegend(): void {
  const labels = state.categories.find((c) => c.name === state.category)?.labels ?? {};
  $("legend").replaceChildren(
    ...(state.summary?.semantic_ids ?? []).map(({ semantic_id: id, name, n_models }) => {
      const li = document.createElement("li");
      li.dataset.id = String(id);
      const dot = document.createElement("span");
      dot.className = "swatch";
      dot.style.background = cssColor(id);
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${n_models} models`;
      li.append(dot, `${id}${name ?? labels[String(id)] ? `: ${name ?? labels[String(id)]}` : ""}`, count);
      li.classList.toggle("active", state.highlight.has(id));
      li.onclick = () => toggleHighlight(id);
      return li;
    }),
  );
}

function toggleHighlight(id: number | null): void {
  if (id === null) state.highlight.clear();
  else if (state.highlight.has(id)) state.highlight.delete(id);
  else state.highlight.add(id);
  renderLegend();
  renderList();
  drawMarkers();
  updateUrl();
}

// ------------------------------------------------------------------ the 3D view

let current: { info: ModelInfo; row: Row; symmetries: Symmetry[]; shownAs: Display | "keypoints" } | null = null;

function disposeModel(): void {
  view.model.traverse((o) => {
    const m = o as THREE.Mesh;
    m.geometry?.dispose();
    const mats = Array.isArray(m.material) ? m.material : m.material ? [m.material] : [];
    for (const mat of mats) {
      for (const v of Object.values(mat)) if (v instanceof THREE.Texture) v.dispose();
      mat.dispose();
    }
  });
  view.model.clear();
}

function clearOverlay(): void {
  overlay.traverse((o) => {
    const l = o as THREE.Line;
    l.geometry?.dispose();
    (l.material as THREE.Material | undefined)?.dispose();
  });
  overlay.clear();
}

const line = (points: Vec3[], color: number, dashed = false, closed = false): THREE.Line =>
  drawLine(points, color, view.markerSize, dashed, closed);
const circle = (center: Vec3, radius: number, normal: Vec3, color: number): THREE.Line =>
  drawCircle(center, radius, normal, color, view.markerSize);


/** What the view shows for the current model: the predictions when loaded, else its keypoints. */
function drawMarkers(): void {
  clearOverlay();
  if (!current) return view.setMarkers([]);
  const { info } = current;
  const scored = state.predBy.get(info.model_id);
  const hl = state.highlight;
  const t = THRESHOLDS[state.t];
  const markers: Marker[] = [];
  if (scored) {
    scored.gt.forEach((g, i) => {
      const missed = g.distance === null || g.distance > t;
      markers.push({ key: i, xyz: g.xyz, color: colorFor(g.semantic_id), text: `${g.semantic_id}`, selected: hl.has(g.semantic_id), className: missed ? "miss" : "" });
    });
    scored.pairs.forEach((p, i) => {
      if (!p.pred_xyz || (state.preds!.task === "correspondence" && !p.gt_xyz)) return; // an id the model lacks is not scored
      const color = state.preds!.task === "correspondence" && p.semantic_id !== null ? colorFor(p.semantic_id) : 0x1d2430;
      markers.push({ key: 1000 + i, xyz: p.pred_xyz, color, text: state.preds!.task === "correspondence" ? `p${p.semantic_id}` : "p", scale: 0.6, className: "pred" });
      if (p.gt_xyz) overlay.add(line([p.pred_xyz, p.gt_xyz], p.distance !== null && p.distance <= t ? 0x2ca02c : 0xd62728));
    });
  } else {
    info.keypoints.forEach((k, i) => {
      if (k.xyz) markers.push({ key: i, xyz: k.xyz, color: colorFor(k.semantic_id), text: `${k.semantic_id}`, selected: hl.has(k.semantic_id) });
    });
  }
  view.setMarkers(markers);
  for (const el of view.host.querySelectorAll<HTMLElement>(".kp-label")) el.style.visibility = state.labels ? "" : "hidden";
  const drawn = { pairs: 0, polygons: 0, circles: 0 };
  if (state.symmetry) {
    for (const g of current.symmetries) {
      if (g.kind === "reflection" && g.xyz.length === 2) {
        overlay.add(line(g.xyz, 0x5b6573, true));
        drawn.pairs++;
      } else if (g.kind === "rotation") {
        if (g.is_circle && g.circle) {
          overlay.add(circle(g.circle.center, g.circle.radius, g.circle.normal, 0x8a5cf6));
          drawn.circles++;
        }
        if (g.xyz.length > 1) {
          overlay.add(line(aroundAxis(g.xyz, g.circle?.normal ?? [0, 1, 0]), 0x8a5cf6, true, true));
          drawn.polygons++;
        }
      }
    }
  }
  document.body.dataset.symmetry = JSON.stringify(drawn); // what was drawn, for tests and debugging
  const n = (kind: string) => current!.symmetries.filter((g) => g.kind === kind).length;
  $("model-name").textContent = `${info.category} · ${info.model_id} · ${info.split ?? "no split"} · ${info.keypoints.length} keypoints` +
    ` · ${n("reflection")} reflection / ${n("rotation")} rotation groups`;
  if (scored && state.preds) {
    const metric = state.preds.task === "saliency" ? "IoU" : "PCK";
    $("score").textContent = `${metric}@${t.toFixed(2)} ${fmt(scored.score[state.t])} · mean error ${fmt(scored.mean_error, 3)} · ` +
      "green: within the threshold, red: beyond it; small markers p = predictions";
  } else $("score").textContent = "";
}

async function showModel(modelId: string): Promise<void> {
  const row = state.rows.find((r) => r.model_id === modelId);
  if (!row) return banner("error", `No model ${modelId} in ${state.category}.`);
  const ticket = ++state.loading;
  const category = state.category;
  const base = `/api/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}`;
  document.body.dataset.shown = "";
  // predictions index the cloud, so a scored model is shown as its cloud
  const wantCloud = state.display === "cloud" || state.predBy.has(modelId);
  let shownAs: Display | "keypoints" = row.has_mesh && !(wantCloud && row.has_points) ? "mesh" : row.has_points ? "cloud" : "keypoints";
  // the geometry loads while the keypoints do
  const geometry = shownAs === "mesh" ? loadDisplayMesh(category, modelId) : shownAs === "cloud" ? loadCloud(category, modelId, true) : null;
  geometry?.catch(() => undefined); // reported below
  try {
    const [info, symmetries] = await Promise.all([
      api<ModelInfo>(base),
      api<Symmetry[]>(`/api/explore/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}/symmetries`),
    ]);
    let note = "";
    let object: THREE.Object3D | null = null;
    try {
      object = await geometry;
    } catch (err) {
      note = `Cannot load the ${shownAs} (${err instanceof Error ? err.message : err}); showing the keypoints alone. `;
      shownAs = "keypoints";
    }
    if (ticket !== state.loading) return;
    disposeModel();
    if (object) {
      view.model.add(object);
      view.target = view.model;
    }
    const kps = info.keypoints.filter((k) => k.xyz);
    if (shownAs === "keypoints") {
      view.target = null;
      const box = new THREE.Box3().setFromPoints(kps.map((k) => new THREE.Vector3(...k.xyz!)));
      if (box.isEmpty()) box.set(new THREE.Vector3(-0.3, -0.3, -0.3), new THREE.Vector3(0.3, 0.3, 0.3));
      box.expandByScalar(Math.max(0, 0.3 - box.getSize(new THREE.Vector3()).length() / 2) / 2);
      view.frame(box);
      note += `No geometry for this model on this server: its ${kps.length} keypoints alone, at the positions in the annotation.`;
    } else view.frame();
    if (state.camera) {
      const c = state.camera.split(",").map(Number);
      if (c.length === 6 && c.every(Number.isFinite)) {
        view.camera.position.set(c[0], c[1], c[2]);
        view.controls.target.set(c[3], c[4], c[5]);
        view.controls.update();
      }
      state.camera = null; // only the first view comes from the link
    }
    current = { info, row, symmetries, shownAs };
    state.model = modelId;
    $("note").textContent = note;
    $("note").style.display = note ? "" : "none";
    $("display").textContent = shownAs === "mesh" ? "Show cloud" : "Show mesh";
    (($("display")) as HTMLButtonElement).disabled = !(row.has_mesh && row.has_points);
    drawMarkers();
    for (const li of $("models").children) li.classList.toggle("active", (li as HTMLElement).dataset.id === modelId);
    ($("models").querySelector("li.active") as HTMLElement | null)?.scrollIntoView({ block: "nearest" });
    updateUrl();
    document.body.dataset.display = shownAs;
    document.body.dataset.shown = modelId;
    if (!note) banner("");
  } catch (err) {
    banner("error", `Cannot show ${modelId}: ${err instanceof Error ? err.message : err}`);
  }
}

// ------------------------------------------------------------------ categories and predictions

function fetchCategory(category: string): Promise<[Row[], Summary]> {
  const cat = encodeURIComponent(category);
  return Promise.all([api<Row[]>(`/api/explore/categories/${cat}/models`), api<Summary>(`/api/explore/categories/${cat}/summary`)]);
}

async function showCategory(wanted?: string | null, prefetched?: Promise<[Row[], Summary]>, keepPredictions = false): Promise<void> {
  state.category = input("category").value;
  try {
    const [rows, summary] = await (prefetched ?? fetchCategory(state.category));
    state.rows = rows;
    state.summary = summary;
    if (input("geo").value === "any" && summary.n_with_geometry === 0) {
      input("geo").value = "";
      banner("warn", `No ${state.category} model has geometry on this server: the models show their keypoints alone.`);
    }
    if (state.preds && !rows.some((r) => state.predBy.has(r.model_id))) clearPredictions();
    renderLegend();
    renderList();
    if (keepPredictions) return; // the caller applies predictions and picks the model
    let target = wanted ? state.rows.find((r) => r.model_id === wanted) : undefined;
    if (target && !state.shown.includes(target)) {
      input("geo").value = ""; // a linked model is shown even when the filter would hide it
      input("search").value = "";
      renderList();
    }
    target ??= state.shown[0];
    if (target) await showModel(target.model_id);
    else {
      current = null;
      disposeModel();
      drawMarkers();
      banner("warn", "No model matches the filters.");
    }
  } catch (err) {
    banner("error", `Cannot list models: ${err instanceof Error ? err.message : err}`);
  }
}

function clearPredictions(): void {
  state.preds = null;
  state.run = null;
  (input("run") as HTMLSelectElement).value = "";
  state.predBy.clear();
  $("pred-summary").textContent = "";
  (input("pred-file") as HTMLInputElement).value = "";
}

function predictionSummary(): void {
  const p = state.preds;
  if (!p) return;
  const vals = p.models.map((m) => m.score[state.t]).filter((v): v is number => v !== null);
  const mean = vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
  const metric = p.task === "saliency" ? "mean per-model IoU" : "PCK";
  $("pred-summary").textContent = `${p.source}: ${p.task}, ${p.models.length} models scored; ` +
    `${metric}@${THRESHOLDS[state.t].toFixed(2)} = ${fmt(mean, 3)}` + (p.warnings.length ? ` · ${p.warnings.join(" · ")}` : "");
}

async function loadPredictions(file: File): Promise<void> {
  let raw: unknown;
  try {
    raw = JSON.parse(await file.text());
  } catch (err) {
    return banner("error", `${file.name} is not JSON: ${err instanceof Error ? err.message : err}`);
  }
  const first = raw && typeof raw === "object" ? Object.values(raw as object)[0] : undefined;
  const task = Array.isArray(first) ? "saliency" : "correspondence";
  banner("", "");
  $("pred-summary").textContent = `Scoring ${file.name} (${task})…`;
  try {
    const res = await api<Predictions>(
      `/api/explore/predictions/${encodeURIComponent(state.category)}?task=${task}&name=${encodeURIComponent(file.name)}`,
      { method: "POST", body: JSON.stringify(raw) },
    );
    state.run = null;
    (input("run") as HTMLSelectElement).value = "";
    await applyPredictions(res);
  } catch (err) {
    $("pred-summary").textContent = "";
    banner("error", `Cannot score ${file.name}: ${err instanceof Error ? err.message : err}`);
  }
}

/** A predictions file of the server's runs folder, by its listed name (kept in the URL). */
async function loadRun(name: string, wanted?: string | null): Promise<void> {
  $("pred-summary").textContent = `Scoring ${name}…`;
  try {
    const res = await api<Predictions>(`/api/explore/runs/score?name=${encodeURIComponent(name)}`);
    if (res.category !== state.category) {
      input("category").value = res.category;
      await showCategory(null, undefined, true);
    }
    state.run = name;
    (input("run") as HTMLSelectElement).value = name;
    await applyPredictions(res, wanted);
  } catch (err) {
    $("pred-summary").textContent = "";
    banner("error", `Cannot score ${name}: ${err instanceof Error ? err.message : err}`);
  }
}

async function applyPredictions(res: Predictions, wanted?: string | null): Promise<void> {
  state.preds = res;
  state.predBy = new Map(res.models.map((m) => [m.model_id, m]));
  predictionSummary();
  if (!wanted) {
    input("sort").value = "error";
    input("geo").value = "points";
  }
  renderList();
  const target = (wanted && state.shown.find((r) => r.model_id === wanted)) || state.shown.find((r) => state.predBy.has(r.model_id));
  if (target) await showModel(target.model_id);
  if (res.warnings.length) banner("warn", res.warnings.join(" · "));
}

/** The runs folder's predictions files, when the server has one (kpengine serve --runs DIR). */
async function listRuns(): Promise<void> {
  const select = input("run") as HTMLSelectElement;
  try {
    const files = await api<RunFile[]>("/api/explore/runs");
    select.replaceChildren(
      new Option(files.length ? "or a run's output…" : "no predictions files in the runs folder", ""),
      ...files.map((f) => new Option(f.name, f.name)),
    );
    select.value = state.run ?? "";
    $("run-label").hidden = false;
    select.onchange = () => {
      if (select.value) void loadRun(select.value);
    };
  } catch {
    /* no runs folder on this server: the control stays hidden */
  }
}

// ------------------------------------------------------------------ controls

function step(delta: number): void {
  const i = state.shown.findIndex((r) => r.model_id === state.model);
  const next = state.shown[Math.min(state.shown.length - 1, Math.max(0, i + delta))];
  if (next && next.model_id !== state.model) void showModel(next.model_id);
}

function toggleDisplay(): void {
  if (!current || !(current.row.has_mesh && current.row.has_points)) return;
  state.display = current.shownAs === "mesh" ? "cloud" : "mesh";
  void showModel(current.row.model_id);
}

function wire(): void {
  input("category").onchange = () => void showCategory();
  for (const id of ["split", "geo", "sort"]) {
    input(id).onchange = () => {
      renderList();
      updateUrl();
      if (!state.shown.some((r) => r.model_id === state.model) && state.shown[0]) void showModel(state.shown[0].model_id);
    };
  }
  let timer = 0;
  input("search").oninput = () => {
    clearTimeout(timer);
    timer = window.setTimeout(() => {
      renderList();
      updateUrl();
      if (state.shown.length && !state.shown.some((r) => r.model_id === state.model)) void showModel(state.shown[0].model_id);
    }, 120);
  };
  const tSelect = input("pred-t") as HTMLSelectElement;
  tSelect.replaceChildren(...THRESHOLDS.map((t, i) => new Option(t.toFixed(2), String(i), false, i === state.t)));
  tSelect.onchange = () => {
    state.t = Number(tSelect.value);
    predictionSummary();
    renderList();
    drawMarkers();
    updateUrl();
  };
  (input("pred-file") as HTMLInputElement).onchange = (ev) => {
    const f = (ev.target as HTMLInputElement).files?.[0];
    if (f) void loadPredictions(f);
  };
  $("display").onclick = toggleDisplay;
  $("labels").onclick = () => {
    state.labels = !state.labels;
    $("labels").classList.toggle("on", state.labels);
    drawMarkers();
    updateUrl();
  };
  $("symmetry").onclick = () => {
    state.symmetry = !state.symmetry;
    $("symmetry").classList.toggle("on", state.symmetry);
    drawMarkers();
    updateUrl();
  };
  $("labels").classList.toggle("on", state.labels);
  $("symmetry").classList.toggle("on", state.symmetry);
  $("share").onclick = async () => {
    updateUrl();
    try {
      await navigator.clipboard.writeText(location.href);
      banner("ok", "Link to this view copied.");
    } catch {
      banner("ok", `Link to this view: ${location.href}`);
    }
  };
  document.addEventListener("keydown", (ev) => {
    const tag = (ev.target as HTMLElement).tagName;
    if (tag === "INPUT" || tag === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) {
      if (ev.key === "Escape") (ev.target as HTMLElement).blur();
      return;
    }
    const actions: Record<string, () => void> = {
      j: () => step(1), ArrowDown: () => step(1), k: () => step(-1), ArrowUp: () => step(-1),
      "/": () => input("search").focus(), m: toggleDisplay, l: () => $("labels").click(), y: () => $("symmetry").click(),
      Escape: () => toggleHighlight(null),
    };
    const act = actions[ev.key];
    if (act) {
      ev.preventDefault();
      act();
    }
  });
}

async function main(): Promise<void> {
  // a linked category's models load while the category list does
  const linked = params.get("category");
  const early = linked ? fetchCategory(linked) : undefined;
  early?.catch(() => undefined); // an unknown name is reported below, by the list
  try {
    state.categories = await api<CategoryOut[]>("/api/categories");
  } catch (err) {
    banner("error", `Cannot reach the server: ${err instanceof Error ? err.message : err}`);
    return;
  }
  const select = input("category") as HTMLSelectElement;
  select.replaceChildren(...state.categories.map((c) => new Option(`${c.name} (${c.n_models})`, c.name)));
  const wanted = params.get("category");
  const cat = state.categories.find((c) => c.name === wanted || c.synset === wanted);
  if (cat) select.value = cat.name;
  input("split").value = params.get("split") ?? "";
  input("search").value = params.get("q") ?? "";
  input("sort").value = params.get("sort") ?? "";
  // open on a model that can be seen: with geometry when the category has any
  input("geo").value = params.get("geo") ?? (params.get("model") ? "" : "any");
  wire();
  void listRuns();
  const run = params.get("run");
  const prefetched = cat && cat.name === linked ? early : undefined;
  if (run) {
    await showCategory(params.get("model"), prefetched, true);
    await loadRun(run, params.get("model"));
  } else await showCategory(params.get("model"), prefetched);
}
void main();
