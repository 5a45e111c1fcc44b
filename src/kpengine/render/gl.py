"""Rasterise meshes and point splats with OpenGL (moderngl, headless EGL; Mesa's llvmpipe on a CPU).

Same camera convention as :mod:`kpengine.render.cameras` and the same :class:`~kpengine.render.raycast.Render`
out as the Embree ray caster and the NumPy splatter, several times faster (docs/benchmarks.md): use it
to make many images (training renders). The Embree path stays the reference where exact ray queries
matter (visibility of arbitrary points, picking, keypoints by face index); tests check that both
agree on depth and silhouette for the same camera.

How the OpenCV camera becomes a GL one: the projection matrix sends a camera point ``(x, y, z)`` to
``x_ndc = 2 (u + 0.5) / W - 1`` and ``y_ndc = 2 (v + 0.5) / H - 1`` with ``(u, v)`` its pixel, so
framebuffer row ``i`` (GL counts rows from the bottom) *is* image row ``i``: no flip on read-back
(this mirrors the winding, and nothing is culled). Fragments write the camera-space ``z``
(perspective-correct, exact for planar triangles), the world normal turned towards the camera, the
face (mesh) or point (splat) index and the shaded colour; the GL depth buffer only orders them.

Meshes are drawn unindexed (three vertices per triangle carrying its face id and flat normal) so the
face index and normals are exact per face. Colour, first that applies: MTL ``Kd`` and ``map_Kd``
textures (:class:`~kpengine.render.appearance.Appearance`; one draw call per textured material), mesh
vertex colours, per-face colours, grey. As in the ray caster, a back-facing face that has a coincident
reversed twin (ShapeNet's double-sided surfaces) is dropped so the twin facing the camera is seen.

Splats are GL points of ``2 * radius * fx / z`` pixels (at most ``2 * max_radius_px``) whose square
is cut to a disc, at their point's depth over the whole disc, as :func:`kpengine.render.splat.render_points`.

One EGL context per process, made on first use (~0.5 s); ``LP_NUM_THREADS`` sets llvmpipe's threads.
Needs the system's EGL and Mesa (``scripts/setup_system.sh`` installs them); without them
:func:`gl_available` is False and :func:`context` raises a :class:`RuntimeError` that says what to install.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.mesh import Mesh
from kpengine.render.appearance import DEFAULT_GREY, Appearance
from kpengine.render.cameras import Camera
from kpengine.render.raycast import Render, twin_faces
from kpengine.render.splat import default_radius, estimate_normals

_VERTEX_MESH = """
#version 330
uniform mat4 mvp;
uniform mat4 world_to_cam;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
in vec2 in_uv;
in float in_face;
in float in_twin;
out vec3 v_pos;
out float v_z;
out vec2 v_uv;
flat out vec3 v_normal;
flat out vec3 v_color;
flat out float v_face;
flat out float v_twin;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_pos = in_pos;
    v_z = (world_to_cam * vec4(in_pos, 1.0)).z;
    v_uv = in_uv;
    v_normal = in_normal;
    v_color = in_color;
    v_face = in_face;
    v_twin = in_twin;
}
"""

_FRAGMENT_HEAD = """
#version 330
uniform vec3 eye;
uniform vec3 light;
uniform int headlight;
uniform float ambient;
layout(location = 0) out vec4 out_geom;
layout(location = 1) out vec4 out_color;
layout(location = 2) out float out_index;
// one shading rule for every path (as raycast.shade): Lambert, headlight or a directional light
void emit(vec3 n, vec3 d, vec3 base, float z, float face) {
    float lambert = headlight == 1 ? abs(dot(n, d)) : clamp(dot(n, light), 0.0, 1.0);
    out_geom = vec4(n, z);
    out_color = vec4(clamp(base * (ambient + (1.0 - ambient) * lambert), 0.0, 1.0), 1.0);
    out_index = face + 1.0;
}
"""

_FRAGMENT_MESH = (
    _FRAGMENT_HEAD
    + """
uniform int use_texture;
uniform sampler2D tex;
in vec3 v_pos;
in float v_z;
in vec2 v_uv;
flat in vec3 v_normal;
flat in vec3 v_color;
flat in float v_face;
flat in float v_twin;
void main() {
    vec3 d = normalize(v_pos - eye);
    vec3 n = v_normal;
    float facing = dot(n, d);
    if (facing > 0.0) {
        if (v_twin > 0.5) discard;
        n = -n;
    }
    vec3 base = v_color;
    if (use_texture == 1) base *= texture(tex, vec2(v_uv.x, 1.0 - v_uv.y)).rgb;
    emit(n, d, base, v_z, v_face);
}
"""
)

_VERTEX_INDEXED = """
#version 330
uniform mat4 mvp;
uniform mat4 world_to_cam;
in vec3 in_pos;
in vec3 in_color;
out vec3 v_pos;
out float v_z;
out vec3 v_color;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_pos = in_pos;
    v_z = (world_to_cam * vec4(in_pos, 1.0)).z;
    v_color = in_color;
}
"""

_FRAGMENT_INDEXED = (
    _FRAGMENT_HEAD
    + """
uniform int use_vertex_color;
uniform sampler2D face_a;  // normal xyz, front face id
uniform sampler2D face_b;  // front colour rgb, back face id
uniform sampler2D face_c;  // back colour rgb
in vec3 v_pos;
in float v_z;
in vec3 v_color;
void main() {
    ivec2 at = ivec2(gl_PrimitiveID % 2048, gl_PrimitiveID / 2048);
    vec4 a = texelFetch(face_a, at, 0);
    vec4 b = texelFetch(face_b, at, 0);
    vec3 d = normalize(v_pos - eye);
    vec3 n = a.xyz;
    vec3 base = b.rgb;
    float face = a.w;
    if (dot(n, d) > 0.0) {
        n = -n;
        base = texelFetch(face_c, at, 0).rgb;
        face = b.w;
    }
    if (use_vertex_color == 1) base = v_color;
    emit(n, d, base, v_z, face);
}
"""
)

_VERTEX_SPLAT = """
#version 330
uniform mat4 mvp;
uniform mat4 world_to_cam;
uniform float radius_px;
uniform float max_radius_px;
uniform vec3 eye;
uniform vec3 light;
uniform int headlight;
uniform float ambient;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
in float in_face;
flat out float v_z;
flat out vec3 v_normal;
flat out vec3 v_shaded;
flat out float v_face;
void main() {
    // a camera-facing disc has one depth, normal and colour: shade once per point, not per fragment
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_z = (world_to_cam * vec4(in_pos, 1.0)).z;
    gl_PointSize = 2.0 * max(min(radius_px / v_z, max_radius_px), 0.5);
    vec3 d = normalize(in_pos - eye);
    vec3 n = dot(in_normal, d) > 0.0 ? -in_normal : in_normal;
    float lambert = headlight == 1 ? abs(dot(n, d)) : clamp(dot(n, light), 0.0, 1.0);
    v_normal = n;
    v_shaded = clamp(in_color * (ambient + (1.0 - ambient) * lambert), 0.0, 1.0);
    v_face = in_face;
}
"""

_FRAGMENT_SPLAT = """
#version 330
flat in float v_z;
flat in vec3 v_normal;
flat in vec3 v_shaded;
flat in float v_face;
layout(location = 0) out vec4 out_geom;
layout(location = 1) out vec4 out_color;
layout(location = 2) out float out_index;
void main() {
    vec2 p = gl_PointCoord * 2.0 - 1.0;
    if (dot(p, p) > 1.0) discard;
    out_geom = vec4(v_normal, v_z);
    out_color = vec4(v_shaded, 1.0);
    out_index = v_face + 1.0;
}
"""

_VERTEX_SURFEL = """
#version 330
uniform mat4 mvp;
uniform mat4 world_to_cam;
uniform float radius;
uniform float fx;
uniform float max_radius_px;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
in float in_face;
flat out vec3 v_center;
flat out vec3 v_normal_cam;
flat out vec3 v_normal;
flat out vec3 v_color;
flat out float v_face;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_center = (world_to_cam * vec4(in_pos, 1.0)).xyz;
    v_normal_cam = mat3(world_to_cam) * in_normal;
    float znear = max(v_center.z - radius, 0.5 * v_center.z);
    gl_PointSize = 2.0 * max(min(radius * fx / znear, max_radius_px), 0.5) + 1.0;
    v_normal = in_normal;
    v_color = in_color;
    v_face = in_face;
}
"""

_FRAGMENT_SURFEL = (
    _FRAGMENT_HEAD
    + """
uniform mat4 world_to_cam;
uniform float radius;
uniform vec4 intrinsics;  // fx, fy, cx, cy
uniform vec2 depth_map;   // z_ndc = x + y / z
flat in vec3 v_center;
flat in vec3 v_normal_cam;
flat in vec3 v_normal;
flat in vec3 v_color;
flat in float v_face;
void main() {
    vec2 uv = gl_FragCoord.xy - 0.5;  // this pixel's (u, v): framebuffer rows are image rows
    vec3 ray = vec3((uv.x - intrinsics.z) / intrinsics.x, (uv.y - intrinsics.w) / intrinsics.y, 1.0);
    float denom = dot(ray, v_normal_cam);
    if (abs(denom) < 1e-6) discard;
    float z = dot(v_center, v_normal_cam) / denom;  // the ray meets the disc's plane at depth z
    vec3 hit = z * ray;
    if (z <= 0.0 || distance(hit, v_center) > radius) discard;
    gl_FragDepth = 0.5 * (depth_map.x + depth_map.y / z) + 0.5;
    vec3 d = normalize(transpose(mat3(world_to_cam)) * ray);
    vec3 n = dot(v_normal, d) > 0.0 ? -v_normal : v_normal;
    emit(n, d, v_color, z, v_face);
}
"""
)

INSTALL_HINT = (
    "OpenGL rendering needs EGL and Mesa (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1; "
    "scripts/setup_system.sh installs them) and the Python package moderngl"
)


@lru_cache(maxsize=1)
def context():
    """The process's headless EGL context (made once)."""
    try:
        import moderngl
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} ({exc})") from exc
    try:  # the runtime sonames first: the unversioned libGL.so / libEGL.so come only with -dev packages
        return moderngl.create_context(standalone=True, backend="egl", libgl="libGL.so.1", libegl="libEGL.so.1")
    except Exception:  # noqa: BLE001 - glcontext raises plain Exceptions; try its own library lookup next
        pass
    try:
        return moderngl.create_context(standalone=True, backend="egl")
    except Exception as exc:  # glcontext's errors when libEGL/libGL or a driver are missing
        raise RuntimeError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc


def gl_available() -> bool:
    """True when an EGL context can be made here."""
    try:
        context()
    except RuntimeError:
        return False
    return True


def gl_matrices(camera: Camera, near: float, far: float) -> tuple[np.ndarray, np.ndarray]:
    """(world-to-camera 4x4, projection 4x4) float64 for ``camera``, the OpenCV->GL map of the module docstring.

    Depth is mapped so that ``z = near`` -> -1 and ``z = far`` -> +1 in normalised device coordinates."""
    k = camera.intrinsics
    view = np.eye(4)
    view[:3, :3], view[:3, 3] = camera.R, camera.t
    w, h = k.width, k.height
    proj = np.zeros((4, 4))
    proj[0, 0], proj[0, 2] = 2.0 * k.fx / w, 2.0 * (k.cx + 0.5) / w - 1.0
    proj[1, 1], proj[1, 2] = 2.0 * k.fy / h, 2.0 * (k.cy + 0.5) / h - 1.0
    proj[2, 2], proj[2, 3] = (far + near) / (far - near), -2.0 * far * near / (far - near)
    proj[3, 2] = 1.0
    return view, proj


class _Target:
    """Attachments: geometry RGBA32F (normal xyz, camera z), colour RGBA8 (shaded), index R32F (id + 1),
    and a depth buffer; cleared to zero (background: z 0, index -1)."""

    def __init__(self, ctx, width: int, height: int):
        self.geom = ctx.renderbuffer((width, height), 4, dtype="f4")
        self.color = ctx.renderbuffer((width, height), 4, dtype="f1")
        self.index = ctx.renderbuffer((width, height), 1, dtype="f4")
        self.depth = ctx.depth_renderbuffer((width, height))
        self.fbo = ctx.framebuffer([self.geom, self.color, self.index], self.depth)
        self.geom_buf = np.empty((height, width, 4), np.float32)
        self.color_buf = np.empty((height, width, 4), np.uint8)
        self.index_buf = np.empty((height, width), np.float32)


@lru_cache(maxsize=8)
def _target(width: int, height: int) -> _Target:
    return _Target(context(), width, height)


_SHADERS = {
    "mesh": (_VERTEX_MESH, _FRAGMENT_MESH),
    "indexed": (_VERTEX_INDEXED, _FRAGMENT_INDEXED),
    "splat": (_VERTEX_SPLAT, _FRAGMENT_SPLAT),
    "surfel": (_VERTEX_SURFEL, _FRAGMENT_SURFEL),
}


@lru_cache(maxsize=4)
def _program(kind: str):
    vertex, fragment = _SHADERS[kind]
    return context().program(vertex_shader=vertex, fragment_shader=fragment)


class _GLRenderer:
    """Shared drawing and read-back; subclasses fill ``_programs`` and implement ``_draw``."""

    def __init__(self, center: np.ndarray, radius: float):
        self._center = center
        self._radius = radius
        self._programs: list = []

    def _set_uniforms(self, camera: Camera, light: np.ndarray | None, ambient: float) -> None:
        dist = float(np.linalg.norm(camera.position - self._center))
        near = max(dist - 1.05 * self._radius, 1e-3 * max(dist, 1e-3))
        far = dist + 1.05 * self._radius + 1e-6
        view, proj = gl_matrices(camera, near, far)
        self._depth_map = (float(proj[2, 2]), float(proj[2, 3]))
        mvp = (proj @ view).T.astype("f4").tobytes()
        w2c = view.T.astype("f4").tobytes()
        eye = tuple(float(x) for x in camera.position)
        ldir = None if light is None else np.asarray(light, np.float64)
        values = {
            "mvp": mvp,
            "world_to_cam": w2c,
            "eye": eye,
            "headlight": int(ldir is None),
            "ambient": float(ambient),
        }
        if ldir is not None:
            values["light"] = tuple(float(x) for x in ldir / np.linalg.norm(ldir))
        for prog in self._programs:
            for name, value in values.items():
                member = prog.get(name, None)  # a shader that does not use a uniform does not have it
                if member is None:
                    continue
                if isinstance(value, bytes):
                    member.write(value)
                else:
                    member.value = value

    def _draw(self, camera: Camera) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(
        self,
        camera: Camera,
        background: np.ndarray | Sequence[float] | None = None,
        light: np.ndarray | None = None,
        *,
        ambient: float = 0.35,
        with_location: bool = True,
    ) -> Render:
        """One view. ``light`` (3,) world direction towards the light, None for a headlight;
        ``with_location`` False leaves ``Render.location`` zero (skips unprojecting the depth map)."""
        import moderngl

        ctx = context()
        tgt = _target(camera.width, camera.height)
        tgt.fbo.use()
        tgt.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.enable(moderngl.DEPTH_TEST | moderngl.PROGRAM_POINT_SIZE)
        ctx.disable(moderngl.CULL_FACE | moderngl.BLEND)
        self._set_uniforms(camera, light, ambient)
        self._draw(camera)
        tgt.fbo.read_into(tgt.geom_buf, components=4, attachment=0, dtype="f4")
        tgt.fbo.read_into(tgt.color_buf, components=4, attachment=1, dtype="f1")
        tgt.fbo.read_into(tgt.index_buf, components=1, attachment=2, dtype="f4")
        geom, col = tgt.geom_buf, tgt.color_buf
        index = tgt.index_buf.astype(np.int64) - 1  # exact: ids + 1 are whole numbers below 2**24
        mask = index >= 0
        depth = geom[..., 3].copy()  # the clear value is 0 off the object
        normals = geom[..., :3].copy()
        location = np.zeros((camera.height, camera.width, 3), np.float32)
        if with_location and mask.any():
            k = camera.intrinsics
            ii, jj = np.nonzero(mask)
            z = depth[ii, jj].astype(np.float64)
            cam_pts = np.stack([(jj - k.cx) / k.fx * z, (ii - k.cy) / k.fy * z, z], axis=1)
            location[ii, jj] = (cam_pts - camera.t) @ camera.R
        return Render(
            camera=camera,
            depth=depth,
            normals=normals,
            mask=mask,
            index=index,
            location=location,
            color=_compose8(col, mask, background),
        )

    def render_batch(
        self,
        cameras: Sequence[Camera],
        backgrounds: Sequence[np.ndarray | Sequence[float] | None] | None = None,
        light: np.ndarray | None = None,
    ) -> list[Render]:
        """Every camera in turn (the call shape of :meth:`MeshRenderer.render_batch`)."""
        return [self.render(c, None if backgrounds is None else backgrounds[k], light) for k, c in enumerate(cameras)]


def _compose8(col: np.ndarray, mask: np.ndarray, background) -> np.ndarray:
    """Shaded colours (H, W, 4) uint8 over ``background`` (None: white; one RGB colour or an (H, W, 3) image,
    in [0, 1] floats or uint8) -> (H, W, 3) uint8, as :func:`~kpengine.render.raycast.compose`."""
    h, w = mask.shape
    if background is None:
        out = np.full((h, w, 3), 255, np.uint8)
    else:
        bg = np.asarray(background)
        bg = bg if bg.dtype == np.uint8 else np.round(np.clip(bg, 0.0, 1.0) * 255).astype(np.uint8)
        out = np.array(np.broadcast_to(bg if bg.ndim == 3 else bg.reshape(1, 1, 3), (h, w, 3)))
    np.copyto(out, col[..., :3], where=mask[..., None])
    return out


def _face_texture(ctx, values: np.ndarray):
    """(M, 4) per-face values as an RGBA32F texture 2048 wide, fetched at (id % 2048, id // 2048)."""
    rows = max(-(-len(values) // 2048), 1)
    data = np.zeros((rows * 2048, 4), np.float32)
    data[: len(values)] = values
    tex = ctx.texture((2048, rows), 4, data.tobytes(), dtype="f4")
    import moderngl

    tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
    return tex


class GLMeshRenderer(_GLRenderer):
    """OpenGL renderer for one mesh; build once (uploads the triangles), render many views.

    ``mesh``: vertices (V, 3), faces (F, 3); ``appearance`` (MTL colours/textures aligned with
    ``mesh.faces``), ``face_colors`` (F, 3) in [0, 1]: as :class:`~kpengine.render.raycast.MeshRenderer`.

    Two paths. Faces without texture are drawn indexed, each coincident reversed pair (ShapeNet's
    double-sided surfaces: all 18,512 faces of the benchmark bathtub) merged into one triangle with a
    front and a back (colour and face id): half the triangles, shared vertices, no ``discard`` (so
    llvmpipe can test depth before shading). Textured faces and their twins are drawn unindexed with
    per-corner UVs, the back twin discarded in the shader.
    """

    def __init__(
        self,
        mesh: Mesh,
        *,
        appearance: Appearance | None = None,
        face_colors: np.ndarray | None = None,
        name: str = "mesh",
    ):
        if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise DataError(
                f"cannot render an empty mesh ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)", path=name
            )
        if not np.isfinite(mesh.vertices).all():
            raise DataError("cannot render a mesh with NaN or infinite vertices", path=name)
        if appearance is not None and appearance.n_faces != len(mesh.faces):
            raise DataError(
                f"appearance has {appearance.n_faces} faces, the mesh {len(mesh.faces)}: not the same face order",
                path=name,
            )
        f = np.asarray(mesh.faces, np.int64)
        n_faces = len(f)
        if n_faces >= 2**24:
            raise DataError(f"{n_faces} faces: more than the 2**24 a float32 face id holds exactly", path=name)
        v = np.asarray(mesh.vertices, np.float64)
        center = bbox_centre(v)
        super().__init__(center, float(np.linalg.norm(v - center, axis=1).max()))
        self.mesh = mesh
        tri = v[f]  # (F, 3, 3)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
        colors = np.broadcast_to(DEFAULT_GREY, (n_faces, 3)).copy()
        textured = np.zeros(n_faces, bool)
        uv = np.zeros((n_faces, 3, 2))
        textures: list[tuple[np.ndarray, np.ndarray]] = []  # (faces, texture image)
        vertex_colors = None
        if appearance is not None:
            mat = appearance.face_material
            for m, material in enumerate(appearance.materials):
                colors[mat == m] = material.kd
            if appearance.face_uv is not None:
                has_uv = np.isfinite(appearance.face_uv).all(axis=(1, 2))
                for m, material in enumerate(appearance.materials):
                    sel = (mat == m) & has_uv
                    if material.texture is not None and sel.any():
                        uv[sel] = appearance.face_uv[sel]
                        textured |= sel
                        textures.append((np.nonzero(sel)[0], material.texture))
        elif mesh.vertex_colors is not None:
            vertex_colors = np.asarray(mesh.vertex_colors, np.float64) / 255.0
        elif face_colors is not None:
            colors = np.asarray(face_colors, np.float64).reshape(n_faces, 3)
        twin = twin_faces(f)
        has_twin = twin >= 0
        corner = textured | (has_twin & textured[np.maximum(twin, 0)])  # textured, or the twin of one
        ctx = context()
        self._programs = []
        self._parts: list = []

        # indexed path: one triangle per plain face or plain twin pair (the lower id keeps the geometry)
        plain = ~corner
        keep = plain & (~has_twin | (np.arange(n_faces) < twin))
        kept = np.nonzero(keep)[0]
        back = np.where(has_twin[kept], twin[kept], kept)
        if len(kept):
            prog = _program("indexed")
            self._programs.append(prog)
            vcol = vertex_colors if vertex_colors is not None else np.broadcast_to(DEFAULT_GREY, (len(v), 3))
            vbo = ctx.buffer(np.concatenate([v, vcol], axis=1).astype("f4").tobytes())
            ibo = ctx.buffer(f[kept].astype("i4").tobytes())
            vao = ctx.vertex_array(prog, [(vbo, "3f 3f", "in_pos", "in_color")], index_buffer=ibo, index_element_size=4)
            tex = [
                _face_texture(ctx, np.concatenate([n[kept], kept[:, None]], axis=1)),
                _face_texture(ctx, np.concatenate([colors[kept], back[:, None]], axis=1)),
                _face_texture(ctx, np.concatenate([colors[back], np.zeros((len(kept), 1))], axis=1)),
            ]
            self._parts.append(("indexed", prog, vao, [vbo, ibo], tex, len(kept), int(vertex_colors is not None)))

        # per-corner path: textured faces and their twins, one draw call per texture
        if corner.any():
            prog = _program("mesh")
            self._programs.append(prog)
            order = [np.nonzero(corner & ~textured)[0]] + [faces for faces, _ in textures]
            order_all = np.concatenate(order)
            per_vertex = np.concatenate(
                [
                    tri[order_all],
                    np.repeat(n[order_all, None], 3, axis=1),
                    np.repeat(colors[order_all, None], 3, axis=1),
                    np.nan_to_num(uv[order_all], nan=0.0),
                    np.repeat(order_all[:, None, None].astype(np.float64), 3, axis=1),
                    np.repeat(has_twin[order_all, None, None].astype(np.float64), 3, axis=1),
                ],
                axis=2,
            ).astype("f4")  # (faces, 3, 13)
            vbo = ctx.buffer(per_vertex.tobytes())
            fmt = "3f 3f 3f 2f 1f 1f"
            vao = ctx.vertex_array(prog, [(vbo, fmt, "in_pos", "in_normal", "in_color", "in_uv", "in_face", "in_twin")])
            import moderngl

            first = 0
            ranges = []
            for k, faces in enumerate(order):
                tex = None
                if k > 0:
                    img = np.ascontiguousarray(np.clip(textures[k - 1][1], 0.0, 1.0).astype("f4"))
                    tex = ctx.texture((img.shape[1], img.shape[0]), 3, img.tobytes(), dtype="f4")
                    tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
                    tex.repeat_x = tex.repeat_y = True
                ranges.append((first, len(faces), tex))
                first += len(faces)
            self._parts.append(("corner", prog, vao, [vbo], ranges, None, None))

    @classmethod
    def from_obj(cls, path, mesh: Mesh | None = None, **kwargs) -> GLMeshRenderer:
        """Renderer for an OBJ with its MTL colours and textures (file face order, so ``index`` is ``face_index``)."""
        from kpengine.io.mesh import load_mesh
        from kpengine.render.appearance import load_obj_appearance

        mesh = load_mesh(path) if mesh is None else mesh
        return cls(mesh, appearance=load_obj_appearance(path), name=str(path), **kwargs)

    def _draw(self, camera: Camera) -> None:
        import moderngl

        for kind, prog, vao, _, tex, count, use_vertex_color in self._parts:
            if kind == "indexed":
                prog["use_vertex_color"].value = use_vertex_color
                for unit, (t, name) in enumerate(zip(tex, ("face_a", "face_b", "face_c"))):
                    t.use(unit)
                    prog[name].value = unit
                vao.render(moderngl.TRIANGLES, vertices=3 * count)
                continue
            for first, n_faces, texture in tex:
                if n_faces == 0:
                    continue
                prog["use_texture"].value = int(texture is not None)
                if texture is not None:
                    texture.use(0)
                    prog["tex"].value = 0
                vao.render(moderngl.TRIANGLES, vertices=3 * n_faces, first=3 * first)

    def release(self) -> None:
        """Free the GL buffers and textures now (otherwise when the context goes)."""
        for kind, _, vao, buffers, tex, _, _ in self._parts:
            textures = tex if kind == "indexed" else [t for _, _, t in tex if t is not None]
            for obj in [vao, *buffers, *textures]:
                obj.release()
        self._parts = []


class GLSplatRenderer(_GLRenderer):
    """OpenGL splats of one cloud: ``points`` (N, 3); ``colors`` (N, 3) uint8 or None (grey); ``normals``
    (N, 3) or None (PCA, as the NumPy splatter); ``radius`` world units (default :func:`default_radius`).

    ``oriented=False`` (default): camera-facing discs at their point's depth, as
    :func:`kpengine.render.splat.render_points` draws them. ``oriented=True``: surfels, discs of radius
    ``radius`` in each point's tangent plane (normal ``normals``), each pixel's depth where its ray meets
    the disc: a closed-looking surface with correct depth at slants, for images (training renders);
    slower (per-fragment depth turns llvmpipe's early depth test off)."""

    def __init__(
        self,
        points: np.ndarray,
        *,
        colors: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        radius: float | None = None,
        max_radius_px: int = 12,
        oriented: bool = False,
        name: str = "points",
    ):
        points = np.asarray(points, np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise DataError(f"cannot render points of shape {points.shape}; expected (N, 3) with N > 0", path=name)
        if not np.isfinite(points).all():
            raise DataError("cannot render points with NaN or infinite coordinates", path=name)
        center = bbox_centre(points)
        self.radius = default_radius(points) if radius is None else float(radius)
        super().__init__(center, float(np.linalg.norm(points - center, axis=1).max()) + self.radius)
        self.points = points
        self.max_radius_px = max_radius_px
        self.oriented = oriented
        self.program = _program("surfel" if oriented else "splat")
        self._programs = [self.program]
        normals = estimate_normals(points) if normals is None else np.asarray(normals, np.float64)
        base = np.broadcast_to(DEFAULT_GREY, (len(points), 3)) if colors is None else np.asarray(colors) / 255.0
        data = np.concatenate([points, normals, base, np.arange(len(points), dtype=np.float64)[:, None]], axis=1)
        ctx = context()
        self._vbo = ctx.buffer(data.astype("f4").tobytes())
        self._vao = ctx.vertex_array(
            self.program, [(self._vbo, "3f 3f 3f 1f", "in_pos", "in_normal", "in_color", "in_face")]
        )

    def _draw(self, camera: Camera) -> None:
        import moderngl

        k = camera.intrinsics
        if self.oriented:
            self.program["radius"].value = float(self.radius)
            self.program["fx"].value = float(k.fx)
            self.program["intrinsics"].value = (float(k.fx), float(k.fy), float(k.cx), float(k.cy))
            self.program["depth_map"].value = self._depth_map
        else:
            self.program["radius_px"].value = float(self.radius * k.fx)
        self.program["max_radius_px"].value = float(self.max_radius_px)
        self._vao.render(moderngl.POINTS, vertices=len(self.points))

    def release(self) -> None:
        self._vao.release()
        self._vbo.release()


__all__ = ["GLMeshRenderer", "GLSplatRenderer", "gl_available", "gl_matrices", "context"]
