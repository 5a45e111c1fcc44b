// The explorer: categories, their models (filtered by split) and each model's aggregated
// keypoints, coloured by semantic id with the semantic label names.
import { api, banner, colorFor, cssColor, ModelInfo, Viewer } from "./common";

interface Category { name: string; synset: string; n_models: number; labels: Record<string, string> }
interface ModelRow { model_id: string; split: string | null; n_keypoints: number; has_mesh: boolean; has_points: boolean }

const $ = (id: string) => document.getElementById(id)!;
const view = new Viewer($("view"));
const params = new URLSearchParams(location.search);
let categories: Category[] = [];

async function showModel(category: string, row: { model_id: string; has_mesh: boolean; has_points: boolean }): Promise<void> {
  try {
    const info = await api<ModelInfo>(`/api/models/${encodeURIComponent(category)}/${encodeURIComponent(row.model_id)}`);
    $("model-name").textContent = `${info.category} · ${info.model_id} · ${info.split ?? "no split"} · ${info.keypoints.length} keypoints`;
    await view.load(category, row.model_id, info, row.has_points, true);
    const kps = info.keypoints.filter((k) => k.xyz);
    view.setMarkers(kps.map((k, i) => ({ key: i, xyz: k.xyz!, color: colorFor(k.semantic_id), text: `${k.semantic_id}` })));
    const legend = $("legend");
    const seen = new Map(kps.map((k) => [k.semantic_id, k.name]));
    legend.replaceChildren(
      ...[...seen].sort((a, b) => a[0] - b[0]).map(([id, name]) => {
        const li = document.createElement("li");
        const dot = document.createElement("span");
        dot.className = "swatch";
        dot.style.background = cssColor(id);
        li.append(dot, `${id}: ${name}`);
        return li;
      }),
    );
    for (const li of $("models").children) li.classList.toggle("active", (li as HTMLElement).dataset.id === row.model_id);
    history.replaceState(null, "", `/explore?category=${encodeURIComponent(category)}&model=${encodeURIComponent(row.model_id)}`);
  } catch (err) {
    banner("error", `Cannot show ${row.model_id}: ${err instanceof Error ? err.message : err}`);
  }
}

async function showCategory(wanted?: string | null): Promise<void> {
  const category = ($("category") as HTMLSelectElement).value;
  const split = ($("split") as HTMLSelectElement).value;
  try {
    const rows = await api<ModelRow[]>(`/api/categories/${encodeURIComponent(category)}/models${split ? `?split=${split}` : ""}`);
    $("n-models").textContent = String(rows.length);
    $("models").replaceChildren(
      ...rows.map((r) => {
        const li = document.createElement("li");
        li.dataset.id = r.model_id;
        li.textContent = `${r.model_id.slice(0, 12)}… · ${r.split ?? "-"} · ${r.n_keypoints}`;
        li.onclick = () => void showModel(category, r);
        return li;
      }),
    );
    const first = rows.find((r) => r.model_id === wanted) ?? rows[0];
    if (first) await showModel(category, first);
  } catch (err) {
    banner("error", `Cannot list models: ${err instanceof Error ? err.message : err}`);
  }
}

async function main(): Promise<void> {
  try {
    categories = await api<Category[]>("/api/categories");
  } catch (err) {
    banner("error", `Cannot reach the server: ${err instanceof Error ? err.message : err}`);
    return;
  }
  const select = $("category") as HTMLSelectElement;
  select.replaceChildren(
    ...categories.map((c) => {
      const o = document.createElement("option");
      o.value = c.name;
      o.textContent = `${c.name} (${c.n_models})`;
      return o;
    }),
  );
  const wanted = params.get("category");
  if (wanted && categories.some((c) => c.name === wanted || c.synset === wanted)) {
    select.value = categories.find((c) => c.name === wanted || c.synset === wanted)!.name;
  }
  select.onchange = () => void showCategory();
  ($("split") as HTMLSelectElement).onchange = () => void showCategory();
  await showCategory(params.get("model"));
}
void main();
