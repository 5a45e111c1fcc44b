// The annotation page: place, select, move, delete and renumber keypoints (at most the
// server's limit, `max_keypoints` from /api/me: 24, as in KeypointNet) on a model,
// save them (one request = one transaction on the server), go to the next model. Edits are
// kept in localStorage as a draft, and a save that cannot reach the server waits in an
// outbox that is re-sent when the connection returns.
import { AnnotationOut, api, ApiError, banner, colorFor, MeOut, ModelInfo, NextModelOut, SuggestionsOut, token, Vec3, Viewer } from "./common";

// set from /api/me before anything is placed: the one limit is defined on the server (kpengine.io.clicks)
let MAX = 0;
type Points = Record<number, Vec3>; // annotator's own index -> position
type Saved = AnnotationOut;
interface Outgoing { category: string; model_id: string; base_revision: number; points: Points }

const $ = (id: string) => document.getElementById(id)!;
const params = new URLSearchParams(location.search);
const state = {
  category: "",
  modelId: "",
  revision: 0,
  points: {} as Points,
  selected: null as number | null,
  undo: [] as Points[],
  dirty: false,
  // suggested keypoints of the open model (?suggest=FILE: a predictions file of the server's runs folder)
  suggestions: [] as { index: number; xyz: Vec3 }[],
};
const suggestFile = params.get("suggest");
const view = new Viewer($("view"));
const reference = new Viewer($("reference"));
reference.controls.autoRotate = true;

const draftKey = () => `kpengine.draft.${state.category}/${state.modelId}`;
const OUTBOX = "kpengine.outbox";
const outbox = (): Outgoing[] => JSON.parse(localStorage.getItem(OUTBOX) || "[]");
const setOutbox = (items: Outgoing[]) => localStorage.setItem(OUTBOX, JSON.stringify(items));
const clone = (p: Points): Points => JSON.parse(JSON.stringify(p));
const status = (text: string) => ($("status").textContent = text);

function render(): void {
  const keys = Object.keys(state.points).map(Number).sort((a, b) => a - b);
  view.setMarkers(keys.map((k) => ({ key: k, xyz: state.points[k], color: colorFor(k), text: String(k), selected: k === state.selected })));
  $("count").textContent = String(keys.length);
  // a suggestion already taken (a keypoint at its position) is not offered again
  const taken = (xyz: Vec3) => keys.some((k) => Math.hypot(...state.points[k].map((v, i) => v - xyz[i])) < 1e-6);
  view.setSuggestions(
    state.suggestions.filter((s) => !taken(s.xyz)).map((s) => ({ key: s.index, xyz: s.xyz, color: colorFor(s.index), text: `${s.index}?` })),
  );
  const list = $("keypoints");
  list.replaceChildren(
    ...keys.map((k) => {
      const li = document.createElement("li");
      li.textContent = `${k}: ${state.points[k].map((v) => v.toFixed(3)).join(", ")}`;
      li.className = k === state.selected ? "active" : "";
      li.onclick = () => select(k);
      return li;
    }),
  );
  const renumber = $("renumber") as HTMLInputElement;
  renumber.disabled = state.selected === null;
  renumber.value = state.selected === null ? "" : String(state.selected);
  ($("save") as HTMLButtonElement).textContent = state.dirty ? "Save *" : "Save";
}

function change(mutate: () => void): void {
  state.undo.push(clone(state.points));
  mutate();
  state.dirty = true;
  localStorage.setItem(draftKey(), JSON.stringify({ base_revision: state.revision, points: state.points }));
  render();
}

function select(k: number | null): void {
  state.selected = k;
  render();
}

function freeIndex(): number | null {
  for (let i = 0; i < MAX; i++) if (!(i in state.points)) return i;
  return null;
}

// ------------------------------------------------------------------ pointer: place, select, drag
let down: { x: number; y: number; marker?: number } | null = null;
let dragging = false;
const canvas = view.renderer.domElement;
canvas.addEventListener("pointerdown", (ev) => {
  const hit = view.pick(ev);
  down = { x: ev.clientX, y: ev.clientY, marker: hit.marker };
  if (hit.marker !== undefined && hit.marker === state.selected) {
    view.controls.enabled = false; // dragging the selected keypoint, not the camera
    state.undo.push(clone(state.points));
    dragging = true;
  }
});
canvas.addEventListener("pointermove", (ev) => {
  if (!dragging || state.selected === null) return;
  const hit = view.pick(ev);
  if (hit.point) {
    state.points[state.selected] = hit.point;
    render();
  }
});
canvas.addEventListener("pointerup", (ev) => {
  view.controls.enabled = true;
  if (dragging) {
    dragging = false;
    state.dirty = true;
    localStorage.setItem(draftKey(), JSON.stringify({ base_revision: state.revision, points: state.points }));
    render();
    return;
  }
  if (!down || Math.hypot(ev.clientX - down.x, ev.clientY - down.y) > 4) return; // an orbit, not a click
  const hit = view.pick(ev);
  if (hit.marker !== undefined) return select(hit.marker);
  if (hit.suggestion !== undefined) return acceptSuggestion(hit.suggestion);
  if (!hit.point) return select(null);
  const k = freeIndex();
  if (k === null) return banner("error", `At most ${MAX} keypoints per model: delete one first.`);
  const p = hit.point;
  change(() => {
    state.points[k] = p;
    state.selected = k;
  });
});

/** One click on a faint suggestion makes it a keypoint: numbered like the suggestion when that
 * number is free (an unsupervised run's keypoint k is meant to be the same part on every model),
 * else the first free number. */
function acceptSuggestion(index: number): void {
  const s = state.suggestions.find((x) => x.index === index);
  if (!s) return;
  const k = index < MAX && !(index in state.points) ? index : freeIndex();
  if (k === null) return banner("error", `At most ${MAX} keypoints per model: delete one first.`);
  change(() => {
    state.points[k] = [...s.xyz] as Vec3;
    state.selected = k;
  });
}

async function loadSuggestions(): Promise<void> {
  state.suggestions = [];
  if (!suggestFile) return;
  try {
    const path = `/api/suggestions/${encodeURIComponent(state.category)}/${encodeURIComponent(state.modelId)}?name=${encodeURIComponent(suggestFile)}`;
    const got = await api<SuggestionsOut>(path);
    state.suggestions = got.keypoints.map((k) => ({ index: k.index, xyz: k.xyz as Vec3 }));
    $("suggest-note").textContent = `${got.keypoints.length} suggestions from ${got.name}: click a faint point to accept it.`;
  } catch (err) {
    $("suggest-note").textContent = "";
    banner("warn", `No suggestions: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function remove(): void {
  const k = state.selected;
  if (k === null) return;
  change(() => {
    delete state.points[k];
    state.selected = null;
  });
}

function undo(): void {
  const prev = state.undo.pop();
  if (!prev) return;
  state.points = prev;
  state.selected = null;
  state.dirty = true;
  render();
}

($("renumber") as HTMLInputElement).addEventListener("change", (ev) => {
  const to = Number((ev.target as HTMLInputElement).value);
  const from = state.selected;
  if (from === null || !Number.isInteger(to) || to < 0 || to >= MAX || to === from) return render();
  change(() => {
    const other = state.points[to];
    state.points[to] = state.points[from];
    if (other) state.points[from] = other; // swap when the number is taken
    else delete state.points[from];
    state.selected = to;
  });
});

document.addEventListener("keydown", (ev) => {
  if ((ev.target as HTMLElement).tagName === "INPUT") return;
  if (ev.key === "Delete" || ev.key === "Backspace") remove();
  if (ev.key === "z" && (ev.ctrlKey || ev.metaKey)) undo();
  if (ev.key === "s" && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault(); // the browser's "save page"
    void save();
  }
  if (ev.key === "n" && !ev.ctrlKey && !ev.metaKey && !ev.altKey) void next();
});
$("delete").onclick = remove;
$("undo").onclick = undo;

// ------------------------------------------------------------------ saving, offline outbox
async function send(item: Outgoing): Promise<Saved> {
  const keypoints = Object.entries(item.points).map(([k, xyz]) => ({ index: Number(k), xyz }));
  const path = `/api/annotations/${encodeURIComponent(item.category)}/${encodeURIComponent(item.model_id)}`;
  return api<Saved>(path, { method: "PUT", body: JSON.stringify({ keypoints, base_revision: item.base_revision }) });
}

async function save(): Promise<void> {
  const item: Outgoing = { category: state.category, model_id: state.modelId, base_revision: state.revision, points: clone(state.points) };
  status("saving…");
  try {
    const saved = await send(item);
    accept(saved);
    banner("ok", `Saved ${saved.keypoints.length} keypoints (revision ${saved.revision}).`);
    refreshDone();
  } catch (err) {
    if (err instanceof ApiError) {
      status("not saved");
      banner("error", `The server refused the save: ${err.message}`);
    } else {
      setOutbox([...outbox().filter((o) => !(o.category === item.category && o.model_id === item.model_id)), item]);
      status("offline");
      banner("warn", "No connection: your keypoints are kept in this browser and will be sent when it returns.");
    }
  }
}

function accept(saved: Saved): void {
  state.revision = saved.revision;
  state.points = Object.fromEntries(saved.keypoints.map((k) => [k.index, k.xyz]));
  state.dirty = false;
  localStorage.removeItem(draftKey());
  status(`saved · revision ${saved.revision}`);
  render();
}

async function flushOutbox(): Promise<void> {
  const items = outbox();
  if (!items.length) return;
  const left: Outgoing[] = [];
  for (const item of items) {
    try {
      const saved = await send(item);
      if (item.category === state.category && item.model_id === state.modelId) accept(saved);
      banner("ok", `Connection back: sent your saved keypoints for ${item.model_id}.`);
    } catch (err) {
      if (err instanceof ApiError) banner("error", `A save kept offline was refused: ${err.message}`);
      else left.push(item);
    }
  }
  setOutbox(left);
  if (!left.length) refreshDone();
}
window.addEventListener("online", () => void flushOutbox());
setInterval(() => void flushOutbox(), 5000);
$("save").onclick = () => void save();

// ------------------------------------------------------------------ models
async function open(category: string, modelId: string): Promise<void> {
  const info = await api<ModelInfo>(`/api/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}`);
  state.category = info.category;
  state.modelId = info.model_id;
  $("model-name").textContent = `${info.category} · ${info.model_id}`;
  const keep = suggestFile ? `&suggest=${encodeURIComponent(suggestFile)}` : "";
  history.replaceState(null, "", `/annotate?category=${encodeURIComponent(info.category)}&model=${encodeURIComponent(info.model_id)}${keep}`);
  await view.load(info.category, info.model_id, info);
  const mine = await api<Saved>(`/api/annotations/${encodeURIComponent(info.category)}/${encodeURIComponent(info.model_id)}`);
  state.revision = mine.revision;
  state.points = Object.fromEntries(mine.keypoints.map((k) => [k.index, k.xyz]));
  state.undo = [];
  state.selected = null;
  state.dirty = false;
  const draft = localStorage.getItem(draftKey());
  if (draft) {
    const d = JSON.parse(draft) as { base_revision: number; points: Points };
    state.points = d.points;
    state.dirty = true;
    banner("warn", "Restored unsaved keypoints from this browser; press Save to keep them.");
  }
  await loadSuggestions();
  status(mine.revision ? `revision ${mine.revision}` : "new");
  render();
}

async function next(): Promise<void> {
  if (state.dirty && !confirm("You have unsaved keypoints on this model. Leave it anyway?")) return;
  try {
    const n = await api<NextModelOut>(`/api/next${state.category ? `?category=${encodeURIComponent(state.category)}` : ""}`);
    await open(n.category, n.model_id);
  } catch (err) {
    banner("error", err instanceof Error ? err.message : String(err));
  }
}
$("next").onclick = () => void next();

/** The annotator's own progress: models they saved, per category, out of the category's models. */
async function showProgress(done: Saved[]): Promise<void> {
  const categories = await api<{ name: string; n_models: number }[]>("/api/categories");
  const mine = new Map<string, number>();
  for (const d of done) mine.set(d.category, (mine.get(d.category) ?? 0) + 1);
  const parts = categories
    .filter((c) => mine.has(c.name) || c.name === state.category)
    .map((c) => `${c.name} ${mine.get(c.name) ?? 0}/${c.n_models}`);
  $("progress").textContent = `You have annotated ${done.length} model${done.length === 1 ? "" : "s"}` + (parts.length ? `: ${parts.join(" · ")}` : "");
}

async function refreshDone(): Promise<void> {
  const done = await api<Saved[]>("/api/annotations");
  void showProgress(done);
  const list = $("done");
  list.replaceChildren(
    ...done.map((d) => {
      const li = document.createElement("li");
      li.textContent = `${d.category} · ${d.model_id.slice(0, 10)}… (${d.keypoints.length} keypoints: ${d.keypoints.map((k) => k.index).join(", ")})`;
      li.title = "show it above; double-click to revise it";
      li.onclick = () => void showReference(d);
      li.ondblclick = () => void open(d.category, d.model_id);
      return li;
    }),
  );
  if (done.length) await showReference(done.find((d) => d.model_id !== state.modelId) ?? done[0]);
}

async function showReference(d: Saved): Promise<void> {
  const info = await api<ModelInfo>(`/api/models/${encodeURIComponent(d.category)}/${encodeURIComponent(d.model_id)}`);
  await reference.load(d.category, d.model_id, info);
  reference.setMarkers(d.keypoints.map((k) => ({ key: k.index, xyz: k.xyz, color: colorFor(k.index), text: String(k.index) })));
}

async function main(): Promise<void> {
  if (!token()) {
    banner("error", "No token: open the link from your invitation (…/annotate?token=…).");
    return;
  }
  try {
    const me = await api<MeOut>("/api/me");
    $("who").textContent = me.name;
    MAX = me.max_keypoints;
    const cat = params.get("category");
    const model = params.get("model");
    if (cat && model) await open(cat, model);
    else await next();
    await flushOutbox();
    await refreshDone();
  } catch (err) {
    banner("error", err instanceof ApiError ? `Server: ${err.message}` : `Cannot reach the server: ${err}`);
  }
}
void main();
