// The photo page: what `kpengine understand` found in a photo, beside the 3D shape it fitted.
// Left: the photo with its projected keypoints and its semantic map (semantics.png, blended).
// Right: the retrieved shape from the store with its keypoints, and the photo's camera drawn
// as a frustum at the fitted pose. Hovering a pixel casts the pixel's ray from that camera
// into the shape and marks the 3D point it sees. Files are read in the browser; only the
// shape comes from the server.
//
// Camera convention (kpengine.render.cameras): Xc = R X + t, u = fx x/z + cx, v = fy y/z + cy,
// pixel centres at integer coordinates, y down the image.
import * as THREE from "three";
import { api, banner, colorFor, cssColor, loadCloud, loadDisplayMesh, ModelInfo, Vec3, Viewer } from "./common";

/** One entry of keypoints.json (keyed by semantic id). */
interface PhotoKeypoint { uv: [number, number] | null; visible: boolean; confidence: number; name: string | null }
/** pose.json: the fitted camera and shape. */
interface Pose {
  camera: { fx: number; fy: number; cx: number; cy: number; width: number; height: number; R: number[][]; t: number[] };
  model_id: string; category: string; azimuth?: number; elevation?: number; theta?: number; distance?: number;
  refined_iou?: number; center?: number[];
}
interface Row { model_id: string; has_mesh: boolean; has_points: boolean }

const $ = (id: string) => document.getElementById(id)!;
const canvas = $("canvas") as HTMLCanvasElement;
const ctx = canvas.getContext("2d")!;
const view = new Viewer($("view"));
const extras = new THREE.Group(); // frustum, ray, hovered point
view.scene.add(extras);
const hoverGroup = new THREE.Group();
view.scene.add(hoverGroup);

const state = {
  photo: null as HTMLImageElement | null,
  semantics: null as HTMLImageElement | null,
  semanticPixels: null as ImageData | null,
  keypoints: {} as Record<string, PhotoKeypoint>,
  pose: null as Pose | null,
};

// ------------------------------------------------------------------ camera maths

const mat3 = (R: number[][]) => new THREE.Matrix3().set(R[0][0], R[0][1], R[0][2], R[1][0], R[1][1], R[1][2], R[2][0], R[2][1], R[2][2]);

/** Camera centre in the world: C = -Rᵀ t. */
function cameraCentre(p: Pose): THREE.Vector3 {
  const Rt = mat3(p.camera.R).transpose();
  return new THREE.Vector3(...(p.camera.t as Vec3)).applyMatrix3(Rt).negate();
}

/** World direction of the ray through pixel (u, v): Rᵀ K⁻¹ [u, v, 1], normalised. */
function pixelRay(p: Pose, u: number, v: number): THREE.Vector3 {
  const c = p.camera;
  const Rt = mat3(c.R).transpose();
  return new THREE.Vector3((u - c.cx) / c.fx, (v - c.cy) / c.fy, 1).applyMatrix3(Rt).normalize();
}

// ------------------------------------------------------------------ loading

async function readImage(file: File): Promise<HTMLImageElement> {
  const img = new Image();
  img.src = URL.createObjectURL(file);
  await img.decode();
  return img;
}

async function loadFiles(files: File[]): Promise<void> {
  const byName = new Map(files.map((f) => [f.name, f]));
  const known = new Set(["keypoints.json", "pose.json", "semantics.png", "overlay.png", "mask.png", "embedding.png"]);
  const missing = ["keypoints.json", "pose.json"].filter((n) => !byName.has(n));
  if (missing.length) return banner("error", `Missing ${missing.join(" and ")}: pick the output folder of kpengine understand.`);
  try {
    state.keypoints = JSON.parse(await byName.get("keypoints.json")!.text());
    state.pose = JSON.parse(await byName.get("pose.json")!.text());
  } catch (err) {
    return banner("error", `Cannot read the JSON files: ${err instanceof Error ? err.message : err}`);
  }
  const photoFile = files.find((f) => !known.has(f.name) && /\.(png|jpe?g)$/i.test(f.name)) ?? byName.get("overlay.png");
  state.photo = photoFile ? await readImage(photoFile) : null;
  state.semantics = byName.has("semantics.png") ? await readImage(byName.get("semantics.png")!) : null;
  state.semanticPixels = null;
  if (state.semantics) {
    const c = document.createElement("canvas");
    c.width = state.semantics.naturalWidth;
    c.height = state.semantics.naturalHeight;
    const g = c.getContext("2d")!;
    g.drawImage(state.semantics, 0, 0);
    state.semanticPixels = g.getImageData(0, 0, c.width, c.height);
  }
  const notes = [];
  if (!photoFile) notes.push("no photo among the files: the keypoints are drawn on a blank canvas");
  else if (photoFile.name === "overlay.png") notes.push("the photo itself was not picked: showing overlay.png");
  if (!state.semantics) notes.push("no semantics.png");
  banner(notes.length ? "warn" : "", notes.join("; "));
  drawPhoto();
  listKeypoints();
  await showShape();
}

// ------------------------------------------------------------------ the photo

function drawPhoto(hover?: [number, number]): void {
  const p = state.pose;
  const w = p?.camera.width ?? state.photo?.naturalWidth ?? 480;
  const h = p?.camera.height ?? state.photo?.naturalHeight ?? 480;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
    fitCanvas();
  }
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  if (state.photo) ctx.drawImage(state.photo, 0, 0, w, h);
  if (state.semantics) {
    ctx.globalAlpha = Number(($("alpha") as HTMLInputElement).value) / 100;
    ctx.drawImage(state.semantics, 0, 0, w, h);
    ctx.globalAlpha = 1;
  }
  const r = Math.max(4, Math.round(Math.min(w, h) / 90));
  ctx.font = `600 ${Math.max(11, r * 2)}px system-ui, sans-serif`;
  for (const [sid, k] of Object.entries(state.keypoints)) {
    if (!k.uv) continue;
    ctx.beginPath();
    ctx.arc(k.uv[0], k.uv[1], r, 0, Math.PI * 2);
    ctx.lineWidth = 2;
    ctx.strokeStyle = cssColor(Number(sid));
    ctx.fillStyle = cssColor(Number(sid));
    if (k.visible) ctx.fill();
    ctx.stroke(); // hollow: behind the object
    ctx.fillStyle = "#fff";
    ctx.strokeStyle = "rgba(0,0,0,.8)";
    ctx.lineWidth = 3;
    const text = sid; // names are in the list beside: on a small photo they would cover it
    ctx.strokeText(text, k.uv[0] + r + 2, k.uv[1] - r);
    ctx.fillText(text, k.uv[0] + r + 2, k.uv[1] - r);
  }
  if (hover) {
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(hover[0], hover[1], r * 1.6, 0, Math.PI * 2);
    ctx.stroke();
  }
}

function listKeypoints(): void {
  $("keypoints").replaceChildren(
    ...Object.entries(state.keypoints).map(([sid, k]) => {
      const li = document.createElement("li");
      li.dataset.id = sid;
      const dot = document.createElement("span");
      dot.className = "swatch";
      dot.style.background = cssColor(Number(sid));
      li.append(dot, `${sid}${k.name ? `: ${k.name}` : ""} · ${k.visible ? "visible" : "hidden"} · ${k.confidence.toFixed(2)}`);
      return li;
    }),
  );
}

/** The semantic id whose colour semantics.png has at (u, v), among the photo's ids; null elsewhere. */
function semanticAt(u: number, v: number): number | null {
  const px = state.semanticPixels;
  if (!px) return null;
  const i = Math.round(v), j = Math.round(u);
  if (i < 0 || j < 0 || i >= px.height || j >= px.width) return null;
  const o = (i * px.width + j) * 4;
  const rgb = (px.data[o] << 16) | (px.data[o + 1] << 8) | px.data[o + 2];
  const ids = Object.keys(state.keypoints).map(Number);
  return ids.find((sid) => colorFor(sid) === rgb) ?? null; // the map only holds the photo's ids
}

// ------------------------------------------------------------------ the shape and the camera

function line(points: THREE.Vector3[], color: number): THREE.Line {
  const l = new THREE.Line(new THREE.BufferGeometry().setFromPoints(points), new THREE.LineBasicMaterial({ color, depthTest: false }));
  l.renderOrder = 6;
  return l;
}

function drawFrustum(p: Pose): void {
  extras.clear();
  const C = cameraCentre(p);
  const depth = Math.max(0.15, 0.35 * C.length());
  const { width: w, height: h } = p.camera;
  const corners = [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]].map(([u, v]) => {
    const d = pixelRay(p, u, v);
    const along = d.dot(pixelRay(p, p.camera.cx, p.camera.cy)); // to the image plane at `depth`
    return C.clone().addScaledVector(d, depth / along);
  });
  for (const c of corners) extras.add(line([C, c], 0x1f6feb));
  extras.add(line([...corners, corners[0]], 0x1f6feb));
  // the image's top edge, thicker cue: a small triangle above it
  const top = corners[0].clone().add(corners[1]).multiplyScalar(0.5);
  const up = top.clone().sub(corners[3].clone().add(corners[2]).multiplyScalar(0.5)).multiplyScalar(0.15);
  extras.add(line([corners[0].clone().lerp(corners[1], 0.35), top.clone().add(up), corners[0].clone().lerp(corners[1], 0.65)], 0x1f6feb));
}

function viewFromCamera(): void {
  const p = state.pose;
  if (!p) return;
  const C = cameraCentre(p);
  const Rt = mat3(p.camera.R).transpose();
  const forward = new THREE.Vector3(0, 0, 1).applyMatrix3(Rt);
  const down = new THREE.Vector3(0, 1, 0).applyMatrix3(Rt);
  view.camera.position.copy(C);
  view.camera.up.copy(down.negate());
  view.camera.fov = (2 * Math.atan(p.camera.height / 2 / p.camera.fy) * 180) / Math.PI;
  view.camera.updateProjectionMatrix();
  view.controls.target.copy(C.clone().addScaledVector(forward, C.length() || 1));
  view.controls.update();
}

/** The shape and the photo's camera together, seen from 70° round the vertical from that camera. */
function overview(): void {
  view.camera.up.set(0, 1, 0);
  view.camera.fov = 40;
  view.camera.updateProjectionMatrix();
  const shape = new THREE.Box3().setFromObject(view.model);
  view.frame(shape.isEmpty() ? undefined : shape); // marker size and a default view from the shape alone
  if (!state.pose || shape.isEmpty()) return;
  const centre = shape.getCenter(new THREE.Vector3());
  const C = cameraCentre(state.pose);
  const both = shape.clone().expandByPoint(C);
  const dir = C.clone().sub(centre).applyAxisAngle(new THREE.Vector3(0, 1, 0), (70 * Math.PI) / 180).setY(0).normalize();
  dir.y = 0.45;
  const target = both.getCenter(new THREE.Vector3());
  view.controls.target.copy(target);
  const fit = 1.5 / Math.min(1, view.camera.aspect); // a tall pane sees less across
  view.camera.position.copy(target).addScaledVector(dir.normalize(), both.getSize(new THREE.Vector3()).length() * fit);
  view.controls.update();
}

/** Show the photo as large as its pane allows, keeping its aspect (the hover maths reads the canvas box). */
function fitCanvas(): void {
  const pane = $("photo");
  const scale = Math.min((pane.clientWidth - 16) / canvas.width, (pane.clientHeight - 16) / canvas.height);
  if (scale > 0) {
    canvas.style.width = `${canvas.width * scale}px`;
    canvas.style.height = `${canvas.height * scale}px`;
  }
}
new ResizeObserver(fitCanvas).observe($("photo"));

async function showShape(): Promise<void> {
  const p = state.pose!;
  const cat = encodeURIComponent(p.category), id = encodeURIComponent(p.model_id);
  $("pose").textContent = `${p.category} · ${p.model_id}` +
    (p.azimuth !== undefined ? ` · azimuth ${p.azimuth.toFixed(1)}°, elevation ${p.elevation?.toFixed(1)}°, in-plane ${p.theta?.toFixed(1)}°` : "") +
    (p.refined_iou !== undefined ? ` · silhouette IoU ${p.refined_iou.toFixed(2)}` : "");
  $("model-name").textContent = `${p.category} · ${p.model_id}`;
  document.body.dataset.ready = "";
  try {
    const [info, rows] = await Promise.all([
      api<ModelInfo>(`/api/models/${cat}/${id}`),
      api<Row[]>(`/api/explore/categories/${cat}/models`),
    ]);
    const row = rows.find((r) => r.model_id === p.model_id)!;
    view.model.clear();
    let note = "";
    if (row.has_mesh) {
      view.model.add(await loadDisplayMesh(p.category, p.model_id));
    } else if (row.has_points) view.model.add(await loadCloud(p.category, p.model_id, true));
    else note = "The server has no geometry for this shape: hovering finds no surface.";
    view.target = view.model;
    overview();
    view.setMarkers(info.keypoints.filter((k) => k.xyz).map((k, i) => ({ key: i, xyz: k.xyz!, color: colorFor(k.semantic_id), text: `${k.semantic_id}` })));
    drawFrustum(p);
    $("note").textContent = note;
    document.body.dataset.ready = "1";
  } catch (err) {
    banner("error", `Cannot show ${p.category}/${p.model_id} (is it in this server's store?): ${err instanceof Error ? err.message : err}`);
  }
}

// ------------------------------------------------------------------ hovering

function hover(ev: MouseEvent): void {
  const p = state.pose;
  if (!p) return;
  const rect = canvas.getBoundingClientRect();
  // continuous image coordinates from the left/top edge, then pixel-centre coordinates
  const u = ((ev.clientX - rect.left) / rect.width) * canvas.width - 0.5;
  const v = ((ev.clientY - rect.top) / rect.height) * canvas.height - 0.5;
  const C = cameraCentre(p);
  const ray = new THREE.Raycaster(C, pixelRay(p, u, v));
  ray.params.Points = { threshold: 0.01 };
  const hit = ray.intersectObject(view.model, true)[0];
  hoverGroup.clear();
  const sid = semanticAt(u, v);
  const sidText = sid === null ? "no semantic region" : `semantic id ${sid}${state.keypoints[String(sid)]?.name ? ` (${state.keypoints[String(sid)].name})` : ""}`;
  let xyz: Vec3 | null = null;
  if (hit) {
    xyz = [hit.point.x, hit.point.y, hit.point.z];
    const ball = new THREE.Mesh(new THREE.SphereGeometry(view.markerSize * 1.2, 16, 12), new THREE.MeshBasicMaterial({ color: 0xffd400, depthTest: false }));
    ball.position.copy(hit.point);
    ball.renderOrder = 12;
    hoverGroup.add(ball, line([C, hit.point], 0xffb000));
  }
  $("hover").textContent = `pixel (${u.toFixed(0)}, ${v.toFixed(0)}) · ${sidText} · ` +
    (xyz ? `3D point (${xyz.map((x) => x.toFixed(3)).join(", ")})` : "no surface of the shape on this ray");
  document.body.dataset.hover = JSON.stringify({ u, v, xyz, semantic_id: sid });
  drawPhoto([u, v]);
}

canvas.addEventListener("mousemove", hover);
($("alpha") as HTMLInputElement).oninput = () => drawPhoto();
$("from-camera").onclick = viewFromCamera;
$("reset").onclick = overview;
for (const id of ["files", "folder"]) {
  ($(id) as HTMLInputElement).onchange = (ev) => {
    const files = [...((ev.target as HTMLInputElement).files ?? [])];
    if (files.length) void loadFiles(files);
  };
}
drawPhoto();
