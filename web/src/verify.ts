// Human verification of an aggregation (admins only): the t-SNE scatter of candidate
// keypoints coloured by cluster, the selected model's keypoints in 3D, and the actions
// (accept/reject a keypoint or a cluster, merge, split, name, add a keypoint the crowd missed
// by clicking the model). Every action is saved by the server in one transaction and the page
// redraws from the state the server sends back.
import * as THREE from "three";
import { api, aroundAxis, banner, CategoryOut, colorFor, cssColor, drawCircle, drawLine, MeOut, ModelRow, token, Vec3, Viewer } from "./common";

interface Cluster { id: number; name: string | null; pending: number; verified: number; rejected: number }
interface Candidate { id: number; model_id: string; xy: [number, number]; cluster: number; error: number; keypoint_id: number | null }
interface Keypoint { id: number; model_id: string; ordinal: number; semantic_id: number; xyz: Vec3 | null; status: string }
interface Symmetry { model_id: string; kind: "reflection" | "rotation"; keypoint_ids: number[]; is_circle: boolean; circle: { center: Vec3; radius: number; normal: Vec3 } | null }
interface State {
  category: string;
  symmetries: Symmetry[];
  run: { id: number; created_at: string; clusters: number; noise_candidates: number; candidates: number } | null;
  labels: Record<string, string>;
  clusters: Cluster[];
  candidates: Candidate[];
  keypoints: Keypoint[];
  result: Record<string, unknown> | null;
}

const $ = (id: string) => document.getElementById(id)!;
const params = new URLSearchParams(location.search);
token(); // moves ?token= into localStorage
const view = new Viewer($("view"));
const overlay = new THREE.Group(); // symmetry groups of the shown model
view.scene.add(overlay);
const canvas = $("plot") as HTMLCanvasElement;
let state: State | null = null;
let category = "";
let models: ModelRow[] = [];
let currentModel: string | null = null;
let currentCluster: number | null = null;
const picked = new Set<number>(); // keypoint ids picked (shift-click) for a split
let screen: { x: number; y: number; c: Candidate }[] = [];

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const base = () => `/api/admin/verify/${encodeURIComponent(category)}`;
const nameOf = (id: number): string => state?.labels[String(id)] ?? `id ${id}`;

async function act(path: string, method: string, body: unknown, done: string): Promise<void> {
  try {
    state = await api<State>(`${base()}${path}`, { method, body: JSON.stringify(body) });
    banner("ok", done);
    redraw();
  } catch (err) {
    banner("error", `Not saved: ${message(err)}`);
  }
}

// ------------------------------------------------------------------ scatter plot

function drawPlot(): void {
  const rect = canvas.parentElement!.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(100, rect.width) * dpr;
  canvas.height = Math.max(100, rect.height) * dpr;
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const w = canvas.width / dpr;
  const h = canvas.height / dpr;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  const cands = state?.candidates ?? [];
  canvas.dataset.points = String(cands.length);
  screen = [];
  if (!cands.length) {
    ctx.fillStyle = "#5b6573";
    ctx.fillText("No aggregation run yet: kpengine aggregate --db URL --category NAME", 12, 24);
    return;
  }
  const xs = cands.map((c) => c.xy[0]);
  const ys = cands.map((c) => c.xy[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 24;
  const sx = (w - 2 * pad) / (x1 - x0 || 1);
  const sy = (h - 2 * pad) / (y1 - y0 || 1);
  const status = new Map((state?.keypoints ?? []).map((k) => [k.id, k.status]));
  for (const c of cands) {
    const x = pad + (c.xy[0] - x0) * sx;
    const y = h - pad - (c.xy[1] - y0) * sy;
    screen.push({ x, y, c });
    const st = c.keypoint_id === null ? "candidate" : (status.get(c.keypoint_id) ?? "gone");
    const col = c.cluster < 0 ? "#9aa5b5" : cssColor(c.cluster);
    ctx.beginPath();
    ctx.arc(x, y, c.keypoint_id === null ? 3 : 5, 0, 2 * Math.PI);
    if (c.keypoint_id === null) {
      ctx.strokeStyle = col;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    } else {
      ctx.fillStyle = col;
      ctx.globalAlpha = st === "rejected" ? 0.25 : 1;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    const highlight = c.model_id === currentModel || (c.keypoint_id !== null && picked.has(c.keypoint_id));
    if (highlight || (currentCluster !== null && c.cluster === currentCluster)) {
      ctx.beginPath();
      ctx.arc(x, y, 8, 0, 2 * Math.PI);
      ctx.strokeStyle = c.keypoint_id !== null && picked.has(c.keypoint_id) ? "#d2691e" : c.model_id === currentModel ? "#000" : "#888";
      ctx.lineWidth = c.model_id === currentModel ? 2 : 1;
      ctx.stroke();
    }
    if (st === "verified") {
      ctx.fillStyle = "#15582a";
      ctx.fillText("✓", x + 6, y - 4);
    }
  }
  // cluster ids at their centroids
  ctx.font = "600 12px system-ui, sans-serif";
  for (const cl of state?.clusters ?? []) {
    const pts = screen.filter((p) => p.c.cluster === cl.id);
    if (!pts.length) continue;
    const mx = pts.reduce((a, p) => a + p.x, 0) / pts.length;
    const my = pts.reduce((a, p) => a + p.y, 0) / pts.length;
    ctx.fillStyle = "#1d2430";
    ctx.fillText(String(cl.id), mx + 10, my + 14);
  }
  const run = state?.run;
  $("plot-caption").textContent = run
    ? `${cands.length} candidates, ${run.clusters} clusters at aggregation, ${run.noise_candidates} noise (grey)`
    : "";
}

canvas.addEventListener("click", (ev) => {
  const rect = canvas.getBoundingClientRect();
  const x = ev.clientX - rect.left;
  const y = ev.clientY - rect.top;
  let best: { x: number; y: number; c: Candidate } | null = null;
  let bestD = 12 * 12;
  for (const p of screen) {
    const d = (p.x - x) ** 2 + (p.y - y) ** 2;
    if (d < bestD) [best, bestD] = [p, d];
  }
  if (!best) return;
  if (ev.shiftKey && best.c.keypoint_id !== null) {
    if (picked.has(best.c.keypoint_id)) picked.delete(best.c.keypoint_id);
    else picked.add(best.c.keypoint_id);
  }
  if (best.c.cluster >= 0) currentCluster = best.c.cluster;
  void showModel(best.c.model_id);
});

// ------------------------------------------------------------------ side panel

function li(text: string, color?: string): HTMLLIElement {
  const el = document.createElement("li");
  if (color) {
    const dot = document.createElement("span");
    dot.className = "swatch";
    dot.style.background = color;
    el.append(dot);
  }
  el.append(text);
  return el;
}

function button(text: string, cls: string, onclick: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.textContent = text;
  b.className = cls;
  b.onclick = (ev) => {
    ev.stopPropagation();
    onclick();
  };
  return b;
}

function drawClusters(): void {
  const clusters = state?.clusters ?? [];
  $("clusters").replaceChildren(
    ...clusters.map((c) => {
      const el = li(`${c.id}: ${c.name ?? "(unnamed)"}`, cssColor(c.id));
      el.dataset.id = String(c.id);
      const st = document.createElement("span");
      st.className = "st";
      st.textContent = `${c.pending} pending · ${c.verified} ok · ${c.rejected} rejected`;
      el.append(st);
      el.classList.toggle("active", c.id === currentCluster);
      el.onclick = () => {
        currentCluster = c.id;
        redraw();
      };
      return el;
    }),
  );
  const sel = clusters.find((c) => c.id === currentCluster);
  ($("cluster-actions") as HTMLElement).hidden = !sel;
  if (!sel) return;
  $("cluster-id").textContent = `${sel.id}${sel.name ? ` · ${sel.name}` : ""}`;
  const input = $("name-input") as HTMLInputElement;
  if (document.activeElement !== input) input.value = sel.name ?? "";
  const target = $("merge-target") as HTMLSelectElement;
  target.replaceChildren(
    ...clusters
      .filter((c) => c.id !== sel.id)
      .map((c) => {
        const o = document.createElement("option");
        o.value = String(c.id);
        o.textContent = `${c.id}: ${c.name ?? "(unnamed)"}`;
        return o;
      }),
  );
  ($("split-cluster") as HTMLButtonElement).textContent = picked.size ? `Split off ${picked.size} picked` : "Split (2-means)";
}

function drawKeypoints(): void {
  const kps = (state?.keypoints ?? []).filter((k) => k.model_id === currentModel);
  $("keypoints").replaceChildren(
    ...kps.map((k) => {
      const el = li(`#${k.id} · ${k.semantic_id}: ${nameOf(k.semantic_id)}`, cssColor(k.semantic_id));
      el.dataset.id = String(k.id);
      el.className = k.status;
      el.classList.toggle("picked", picked.has(k.id));
      const st = document.createElement("span");
      st.className = "st status";
      st.textContent = k.status;
      el.append(
        st,
        button("✓", "accept", () => void act(`/keypoints/${k.id}`, "POST", { status: "verified" }, `Accepted keypoint ${k.id}`)),
        button("✗", "reject", () => void act(`/keypoints/${k.id}`, "POST", { status: "rejected" }, `Rejected keypoint ${k.id}`)),
      );
      el.onclick = () => {
        if (picked.has(k.id)) picked.delete(k.id);
        else picked.add(k.id);
        currentCluster = k.semantic_id;
        redraw();
      };
      return el;
    }),
  );
  // ids the model lacks (no keypoint, or only rejected ones): what a click on the model may add
  const has = new Set(kps.filter((k) => k.status !== "rejected").map((k) => k.semantic_id));
  const known = new Set([...(state?.clusters ?? []).map((c) => c.id), ...Object.keys(state?.labels ?? {}).map(Number)]);
  const add = $("add-id") as HTMLSelectElement;
  const keep = add.value;
  add.replaceChildren(
    ...[...known]
      .filter((id) => !has.has(id))
      .sort((a, b) => a - b)
      .map((id) => {
        const o = document.createElement("option");
        o.value = String(id);
        o.textContent = `${id}: ${nameOf(id)}`;
        return o;
      }),
  );
  if ([...add.options].some((o) => o.value === keep)) add.value = keep;
  view.setMarkers(
    kps
      .filter((k) => k.xyz && k.status !== "rejected")
      .map((k) => ({ key: k.id, xyz: k.xyz!, color: colorFor(k.semantic_id), text: `${k.semantic_id}`, selected: picked.has(k.id) })),
  );
  drawSymmetries(kps);
  for (const el of $("models").children) el.classList.toggle("active", (el as HTMLElement).dataset.id === currentModel);
}

/** The model's symmetry groups over its keypoints: a reflection pair joined by a dashed grey
 * line, a rotation group as a dashed violet polygon around its axis, a circle when the group is
 * continuous. Rejected members are left out (a group of fewer than two is not drawn). */
function drawSymmetries(kps: Keypoint[]): void {
  overlay.traverse((o) => {
    const l = o as THREE.Line;
    l.geometry?.dispose();
    (l.material as THREE.Material | undefined)?.dispose();
  });
  overlay.clear();
  const at = new Map(kps.filter((k) => k.xyz && k.status !== "rejected").map((k) => [k.id, k.xyz!]));
  const drawn = { reflection: 0, rotation: 0, circles: 0 };
  const text: string[] = [];
  for (const g of (state?.symmetries ?? []).filter((g) => g.model_id === currentModel)) {
    const xyz = g.keypoint_ids.filter((id) => at.has(id)).map((id) => at.get(id)!);
    const ids = kps.filter((k) => g.keypoint_ids.includes(k.id)).map((k) => k.semantic_id).sort((a, b) => a - b);
    if (g.kind === "rotation" && g.is_circle && g.circle) {
      overlay.add(drawCircle(g.circle.center, g.circle.radius, g.circle.normal, 0x8a5cf6, view.markerSize));
      drawn.circles++;
    }
    if (xyz.length >= 2) {
      overlay.add(g.kind === "reflection" && xyz.length === 2
        ? drawLine(xyz, 0x5b6573, view.markerSize, true)
        : drawLine(aroundAxis(xyz, g.circle?.normal ?? [0, 1, 0]), g.kind === "reflection" ? 0x5b6573 : 0x8a5cf6, view.markerSize, true, true));
      drawn[g.kind]++;
    }
    text.push(`${g.kind === "reflection" ? "⟷" : "⟳"} ${ids.join(" · ")}${g.is_circle ? " (circle)" : ""}`);
  }
  $("symmetries").replaceChildren(...text.map((t) => li(t)));
  $("symmetries").dataset.drawn = JSON.stringify(drawn);
}

function redraw(): void {
  drawClusters();
  drawKeypoints();
  drawPlot();
  const run = state?.run;
  $("run").textContent = run ? `run ${run.id} · ${new Date(run.created_at).toLocaleString()}` : "no aggregation run";
}

async function showModel(modelId: string): Promise<void> {
  const row = models.find((m) => m.model_id === modelId);
  if (!row) return;
  if (modelId !== currentModel) {
    currentModel = modelId;
    $("model-name").textContent = `${category} · ${modelId}`;
    redraw();
    try {
      await view.load(category, modelId, row, row.has_points, true);
    } catch (err) {
      banner("error", `Cannot load ${modelId}: ${message(err)}`);
    }
  }
  redraw();
}

async function loadCategory(): Promise<void> {
  category = ($("category") as HTMLSelectElement).value;
  picked.clear();
  currentCluster = null;
  currentModel = null;
  try {
    [state, models] = await Promise.all([
      api<State>(base()),
      api<ModelRow[]>(`/api/categories/${encodeURIComponent(category)}/models`),
    ]);
  } catch (err) {
    banner("error", `Cannot load the verification state: ${message(err)}`);
    return;
  }
  const withKps = new Set(state.keypoints.map((k) => k.model_id));
  $("models").replaceChildren(
    ...models.map((m) => {
      const el = li(`${m.model_id.slice(0, 14)}…${withKps.has(m.model_id) ? "" : " (no keypoints)"}`);
      el.dataset.id = m.model_id;
      el.onclick = () => void showModel(m.model_id);
      return el;
    }),
  );
  const first = params.get("model") ?? state.keypoints[0]?.model_id ?? models[0]?.model_id;
  redraw();
  if (first) await showModel(first);
}

function clusterAction(): number | null {
  if (currentCluster === null) banner("warn", "Pick a cluster first (click it in the list or the plot)");
  return currentCluster;
}

$("accept-cluster").onclick = () => {
  const c = clusterAction();
  if (c !== null) void act(`/clusters/${c}/status`, "POST", { status: "verified" }, `Accepted cluster ${c}`);
};
$("reject-cluster").onclick = () => {
  const c = clusterAction();
  if (c !== null) void act(`/clusters/${c}/status`, "POST", { status: "rejected" }, `Rejected cluster ${c}`);
};
$("name-save").onclick = () => {
  const c = clusterAction();
  const name = ($("name-input") as HTMLInputElement).value.trim();
  if (c !== null) void act(`/labels/${c}`, "PUT", { name }, `Named ${c} "${name}"`);
};
$("merge").onclick = () => {
  const c = clusterAction();
  const target = Number(($("merge-target") as HTMLSelectElement).value);
  if (c !== null) {
    void act("/merge", "POST", { source: c, target }, `Merged ${c} into ${target}`).then(() => {
      currentCluster = target;
      redraw();
    });
  }
};
$("split-cluster").onclick = () => {
  const c = clusterAction();
  if (c === null) return;
  const ids = (state?.keypoints ?? []).filter((k) => k.semantic_id === c && picked.has(k.id)).map((k) => k.id);
  void act(`/clusters/${c}/split`, "POST", { keypoint_ids: ids.length ? ids : null }, `Split cluster ${c}`).then(() => {
    picked.clear();
    redraw();
  });
};
// a click (not an orbit) on the model adds a keypoint with the chosen id; the server puts it on
// the surface and refuses an off-surface point, an unknown id or one the model already has
let down: { x: number; y: number } | null = null;
view.renderer.domElement.addEventListener("pointerdown", (ev) => (down = { x: ev.clientX, y: ev.clientY }));
view.renderer.domElement.addEventListener("pointerup", (ev) => {
  if (!down || Math.hypot(ev.clientX - down.x, ev.clientY - down.y) > 4 || !currentModel) return;
  const hit = view.pick(ev);
  if (!hit.point) return;
  const sid = ($("add-id") as HTMLSelectElement).value;
  if (sid === "") return banner("warn", "This model has every known id: reject one to move it");
  void act(`/models/${encodeURIComponent(currentModel)}/keypoints`, "POST", { semantic_id: Number(sid), xyz: hit.point },
    `Added ${sid} on ${currentModel.slice(0, 14)}…`);
});
// ------------------------------------------------------------------ aggregation as a job

interface Job { job: string; state: "running" | "done" | "failed"; stage: string; fraction: number; stages: string[]; summary: { keypoints?: number } | null; error: string | null }

/** Start the category's aggregation as a server job and poll it: the bar shows the pipeline's
 * stage and share done (never a blocking request, which a proxy or the browser may time out). */
async function runAggregation(): Promise<void> {
  const steps = Number(($("agg-steps") as HTMLInputElement).value);
  const runBtn = $("agg-run") as HTMLButtonElement;
  const bar = $("agg-progress") as HTMLProgressElement;
  const stageEl = $("agg-stage");
  const cat = category;
  let job: Job;
  try {
    job = await api<Job>(`/api/admin/aggregate/${encodeURIComponent(cat)}/jobs`, { method: "POST", body: JSON.stringify({ steps }) });
  } catch (err) {
    banner("error", `Aggregation not started: ${message(err)}`);
    return;
  }
  runBtn.disabled = true;
  ($("agg-job") as HTMLElement).hidden = false;
  const show = (j: Job) => {
    bar.value = j.fraction;
    stageEl.textContent = `${j.stage} · ${Math.round(j.fraction * 100)} %`;
    stageEl.dataset.stages = j.stages.join(",");
  };
  show(job);
  while (job.state === "running") {
    await new Promise((r) => setTimeout(r, 500));
    try {
      job = await api<Job>(`/api/admin/aggregate/jobs/${job.job}`);
    } catch (err) {
      banner("error", `Lost the aggregation job: ${message(err)}`);
      runBtn.disabled = false;
      return;
    }
    show(job);
  }
  runBtn.disabled = false;
  if (job.state === "failed") {
    banner("error", `Aggregation failed: ${job.error}`);
    return;
  }
  stageEl.dataset.state = "done";
  if (cat === category) await loadCategory();
  banner("ok", `Aggregated ${cat}: ${job.summary?.keypoints ?? 0} pending keypoints`);
}
$("agg-run").onclick = () => void runAggregation();

new ResizeObserver(() => drawPlot()).observe(canvas.parentElement!);

async function main(): Promise<void> {
  let cats: CategoryOut[];
  try {
    const me = await api<MeOut>("/api/me");
    if (me.role !== "admin") {
      banner("error", "This page needs an admin token (/verify?token=...)");
      return;
    }
    cats = await api<CategoryOut[]>("/api/categories");
  } catch (err) {
    banner("error", `Cannot start: ${message(err)}`);
    return;
  }
  const select = $("category") as HTMLSelectElement;
  select.replaceChildren(
    ...cats.map((c) => {
      const o = document.createElement("option");
      o.value = c.name;
      o.textContent = c.name;
      return o;
    }),
  );
  const wanted = params.get("category");
  const hit = cats.find((c) => c.name === wanted || c.synset === wanted);
  if (hit) select.value = hit.name;
  select.onchange = () => void loadCategory();
  await loadCategory();
}
void main();
