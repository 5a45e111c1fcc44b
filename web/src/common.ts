// Shared by both pages: talking to the API, showing errors, and a three.js viewer.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { CSS2DObject, CSS2DRenderer } from "three/examples/jsm/renderers/CSS2DRenderer.js";
import type { PointCloudOut } from "./generated/api-types";
import { PALETTE } from "./generated/palette";

// The API's bodies, generated from /openapi.json (scripts/gen_web.py): one declaration each.
export type { AnnotationOut, CategoryOut, MeOut, ModelInfo, ModelRow, NextModelOut, PointCloudOut, SuggestionsOut } from "./generated/api-types";

export type Vec3 = [number, number, number];

/** An error the server answered with (status and its "detail" message). */
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export function token(): string | null {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    localStorage.setItem("kpengine.token", fromUrl);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
  }
  return localStorage.getItem("kpengine.token");
}

/** fetch + JSON with the bearer token; network failures throw TypeError, HTTP errors ApiError. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  const t = localStorage.getItem("kpengine.token");
  if (t) headers.set("Authorization", `Bearer ${t}`);
  if (init.body) headers.set("Content-Type", "application/json");
  const res = await fetch(path, { ...init, headers });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      const body = await res.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, detail);
  }
  return (await res.json()) as T;
}

export function banner(kind: "error" | "warn" | "ok" | "", text = ""): void {
  const el = document.getElementById("banner")!;
  el.className = kind;
  el.textContent = text;
}

/** The colour of a semantic id: the PNG figures' (kpengine.viz.palette), cycling like Python's `%`. */
export const colorFor = (id: number): number => PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length];
export const cssColor = (id: number): string => `#${colorFor(id).toString(16).padStart(6, "0")}`;

/** A model's mesh with its MTL colours and textures, for looking at (/api/explore/…/display.glb). */
export async function loadDisplayMesh(category: string, modelId: string): Promise<THREE.Object3D> {
  const url = `/api/explore/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}/display.glb`;
  const gltf = await new GLTFLoader().loadAsync(url);
  gltf.scene.traverse((o) => {
    const m = o as THREE.Mesh;
    if (!m.isMesh) return;
    for (const mat of Array.isArray(m.material) ? m.material : [m.material]) {
      mat.side = THREE.DoubleSide; // ShapeNet winding is inconsistent
      // MTL has no metalness; glTF's default (1) turns surfaces without an environment map black
      if (mat instanceof THREE.MeshStandardMaterial) Object.assign(mat, { metalness: 0, roughness: 0.85 });
    }
  });
  return gltf.scene;
}

/** A model's point cloud as three.js points: its own colours, or grey when `neutral`. */
export async function loadCloud(category: string, modelId: string, neutral = false): Promise<THREE.Points> {
  const base = `/api/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}`;
  const cloud = await api<PointCloudOut>(`${base}/points`);
  const geom = new THREE.BufferGeometry();
  geom.setAttribute("position", new THREE.Float32BufferAttribute(cloud.points, 3));
  const colors = neutral ? null : cloud.colors;
  if (colors) geom.setAttribute("color", new THREE.Float32BufferAttribute(colors.map((c) => c / 255), 3));
  const mat = new THREE.PointsMaterial({ size: 0.012, vertexColors: !!colors, color: colors ? 0xffffff : 0x9aa5b5 });
  return new THREE.Points(geom, mat);
}

/** A labelled sphere; `scale` multiplies the marker size, `className` is added to its label. */
export interface Marker { key: number; xyz: Vec3; color: number; text: string; selected?: boolean; scale?: number; className?: string }

/** A scene with orbit controls, lights, index labels and a render loop, filling `host`. */
export class Viewer {
  scene = new THREE.Scene();
  camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
  renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  labels = new CSS2DRenderer();
  controls: OrbitControls;
  model = new THREE.Group();
  markers = new THREE.Group();
  suggestions = new THREE.Group(); // faint, clickable proposals (the annotate page's suggestions)
  target: THREE.Object3D | null = null; // what clicks are cast against
  markerSize = 0.012;

  constructor(public host: HTMLElement) {
    this.scene.background = new THREE.Color(0xf7f8fa);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x667080, 2.2));
    const sun = new THREE.DirectionalLight(0xffffff, 1.5);
    sun.position.set(1, 2, 1.5);
    this.scene.add(sun, this.model, this.markers, this.suggestions);
    host.appendChild(this.renderer.domElement);
    this.labels.domElement.style.position = "absolute";
    this.labels.domElement.style.top = "0";
    this.labels.domElement.style.pointerEvents = "none";
    host.appendChild(this.labels.domElement);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = false;
    new ResizeObserver(() => this.resize()).observe(host);
    this.resize();
    this.renderer.setAnimationLoop(() => {
      this.controls.update();
      this.renderer.render(this.scene, this.camera);
      this.labels.render(this.scene, this.camera);
    });
  }

  resize(): void {
    const w = Math.max(this.host.clientWidth, 50);
    const h = Math.max(this.host.clientHeight, 50);
    this.renderer.setSize(w, h);
    this.labels.setSize(w, h);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  /** Load the mesh (GLB) when the model has one, else its point cloud; frame the camera on it. */
  async load(category: string, modelId: string, info: { has_mesh: boolean }, preferPoints = false, neutral = false): Promise<void> {
    this.model.clear();
    const base = `/api/models/${encodeURIComponent(category)}/${encodeURIComponent(modelId)}`;
    if (info.has_mesh && !preferPoints) {
      const gltf = await new GLTFLoader().loadAsync(`${base}/mesh.glb`);
      gltf.scene.traverse((o) => {
        if ((o as THREE.Mesh).isMesh) {
          (o as THREE.Mesh).material = new THREE.MeshStandardMaterial({ color: 0xb9c4d4, side: THREE.DoubleSide, roughness: 0.8 });
        }
      });
      this.model.add(gltf.scene);
    } else {
      this.model.add(await loadCloud(category, modelId, neutral));
    }
    this.target = this.model;
    this.frame();
  }

  /** Point the camera at `box` (default: the model's bounds) and size the markers to it. */
  frame(box = new THREE.Box3().setFromObject(this.model)): void {
    const centre = box.getCenter(new THREE.Vector3());
    const size = box.getSize(new THREE.Vector3()).length() || 1;
    this.markerSize = 0.016 * size;
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).add(new THREE.Vector3(0.9, 0.7, -1.3).multiplyScalar(size * 0.85));
    this.camera.lookAt(centre);
    this.controls.update();
  }

  /** Replace the markers: one sphere and one text label per point. */
  setMarkers(items: Marker[]): void {
    for (const m of [...this.markers.children]) {
      m.traverse((o) => {
        if (o instanceof CSS2DObject) o.element.remove();
      });
    }
    this.markers.clear();
    for (const it of items) {
      const sphere = new THREE.Mesh(
        new THREE.SphereGeometry(this.markerSize * (it.scale ?? 1) * (it.selected ? 1.4 : 1), 16, 12),
        new THREE.MeshBasicMaterial({ color: it.selected ? 0xd2691e : it.color, depthTest: false }),
      );
      sphere.renderOrder = 10;
      sphere.position.set(...it.xyz);
      sphere.userData.key = it.key;
      const div = document.createElement("div");
      div.className = "kp-label" + (it.selected ? " selected" : "") + (it.className ? ` ${it.className}` : "");
      div.textContent = it.text;
      div.dataset.key = String(it.key);
      div.style.borderColor = `#${it.color.toString(16).padStart(6, "0")}`;
      sphere.add(new CSS2DObject(div));
      this.markers.add(sphere);
    }
  }

  /** Replace the suggestions: faint spheres (35 % opaque) with a faint label, keyed like markers. */
  setSuggestions(items: Marker[]): void {
    for (const m of [...this.suggestions.children]) {
      m.traverse((o) => {
        if (o instanceof CSS2DObject) o.element.remove();
      });
    }
    this.suggestions.clear();
    for (const it of items) {
      const sphere = new THREE.Mesh(
        new THREE.SphereGeometry(this.markerSize * (it.scale ?? 1), 16, 12),
        new THREE.MeshBasicMaterial({ color: it.color, transparent: true, opacity: 0.35, depthTest: false }),
      );
      sphere.renderOrder = 9;
      sphere.position.set(...it.xyz);
      sphere.userData.key = it.key;
      const div = document.createElement("div");
      div.className = "kp-label suggestion" + (it.className ? ` ${it.className}` : "");
      div.textContent = it.text;
      div.dataset.key = String(it.key);
      sphere.add(new CSS2DObject(div));
      this.suggestions.add(sphere);
    }
  }

  /** What is under a pointer event: a marker (its key), a suggestion (its key) or a point on the model. */
  pick(ev: PointerEvent | MouseEvent): { marker?: number; suggestion?: number; point?: Vec3 } {
    const rect = this.renderer.domElement.getBoundingClientRect();
    const ndc = new THREE.Vector2(((ev.clientX - rect.left) / rect.width) * 2 - 1, -((ev.clientY - rect.top) / rect.height) * 2 + 1);
    const ray = new THREE.Raycaster();
    ray.params.Points = { threshold: this.markerSize * 0.6 };
    ray.setFromCamera(ndc, this.camera);
    const hitMarker = ray.intersectObjects(this.markers.children, false)[0];
    if (hitMarker) return { marker: hitMarker.object.userData.key as number };
    const hitSuggestion = ray.intersectObjects(this.suggestions.children, false)[0];
    if (hitSuggestion) return { suggestion: hitSuggestion.object.userData.key as number };
    if (!this.target) return {};
    const hit = ray.intersectObject(this.target, true)[0];
    if (!hit) return {};
    const p = hit.object instanceof THREE.Points && hit.index !== undefined
      ? new THREE.Vector3().fromBufferAttribute(hit.object.geometry.getAttribute("position") as THREE.BufferAttribute, hit.index)
      : hit.point;
    return { point: [p.x, p.y, p.z] };
  }
}

// ------------------------------------------------------------------ symmetry drawing (explore, verify)

/** A line through `points` drawn over the model (no depth test); dashes scale with `size` (the marker size). */
export function drawLine(points: Vec3[], color: number, size: number, dashed = false, closed = false): THREE.Line {
  const pts = points.map((p) => new THREE.Vector3(...p));
  if (closed && pts.length > 2) pts.push(pts[0].clone());
  const geom = new THREE.BufferGeometry().setFromPoints(pts);
  const mat = dashed
    ? new THREE.LineDashedMaterial({ color, dashSize: size, gapSize: size * 0.7, depthTest: false, transparent: true })
    : new THREE.LineBasicMaterial({ color, depthTest: false, transparent: true });
  const l = new THREE.Line(geom, mat);
  if (dashed) l.computeLineDistances();
  l.renderOrder = 5;
  return l;
}

/** A circle (64 segments) of `radius` about `center` in the plane normal to `normal`. */
export function drawCircle(center: Vec3, radius: number, normal: Vec3, color: number, size: number): THREE.Line {
  const n = new THREE.Vector3(...normal).normalize();
  const a = Math.abs(n.x) < 0.9 ? new THREE.Vector3(1, 0, 0) : new THREE.Vector3(0, 1, 0);
  const u = new THREE.Vector3().crossVectors(n, a).normalize();
  const v = new THREE.Vector3().crossVectors(n, u);
  const c = new THREE.Vector3(...center);
  const pts: Vec3[] = [];
  for (let i = 0; i <= 64; i++) {
    const t = (i / 64) * Math.PI * 2;
    const p = c.clone().addScaledVector(u, radius * Math.cos(t)).addScaledVector(v, radius * Math.sin(t));
    pts.push([p.x, p.y, p.z]);
  }
  return drawLine(pts, color, size);
}

/** A rotation group's members in angular order around `axis` (through their centroid), so the
 * drawn polygon goes round the axis instead of crossing itself (kp_indexes carry no order). */
export function aroundAxis(points: Vec3[], axis: Vec3): Vec3[] {
  const n = new THREE.Vector3(...axis).normalize();
  const c = points.reduce((acc, p) => acc.add(new THREE.Vector3(...p)), new THREE.Vector3()).divideScalar(points.length);
  const a = Math.abs(n.x) < 0.9 ? new THREE.Vector3(1, 0, 0) : new THREE.Vector3(0, 1, 0);
  const u = new THREE.Vector3().crossVectors(n, a).normalize();
  const v = new THREE.Vector3().crossVectors(n, u);
  const angle = (p: Vec3) => {
    const d = new THREE.Vector3(...p).sub(c);
    return Math.atan2(d.dot(v), d.dot(u));
  };
  return [...points].sort((p, q) => angle(p) - angle(q));
}
