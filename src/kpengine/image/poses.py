"""Where the camera is: pose hypotheses of candidate shapes and the choice among them (You et al. §4.4).

The pipeline (:mod:`kpengine.image.pipeline`) gets a viewpoint distribution from the network and one or
more candidate shapes; this module turns them into starting cameras (:func:`place_camera`, matched to
the mask's area and centroid), refines them against the mask by the soft silhouette
(:class:`kpengine.render.refine.PoseRefiner`) and chooses one (:func:`select_pose`). It is its own
module because the choice is where the half-turn errors are won or lost, and it is tested with stand-in
renderers and refiners (tests/test_image_pose_hypotheses.py), apart from the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera, rt_to_viewpoint
from kpengine.render.refine import downsample_mask, silhouette_iou


@dataclass
class ShapeCandidate:
    """A shape the pipeline can pose: its :class:`Shape` (points and keypoints in the mesh's frame),
    mesh, renderer and bounding-box centre; ``reconstructed`` for the photo's own shape."""

    shape: Shape
    mesh: Any
    renderer: Any
    center: np.ndarray
    reconstructed: bool = False


def place_camera(
    renderer, center: np.ndarray, mask: np.ndarray, view: Viewpoint, fov: float, size: int = 64
) -> tuple[Camera, float]:
    """A camera at ``view``'s angles whose silhouette matches the mask's area and centroid; and its IoU.

    Renders once at a nominal distance on a ``size``-pixel copy of the mask, scales the distance by the
    square root of the area ratio and moves the principal ray to the centroid (as
    :func:`kpengine.render.refine.coarse_search` does per bin), renders again to score."""
    from kpengine.render.refine import scale_intrinsics

    small = downsample_mask(mask, size)
    hs, ws = small.shape
    full = Intrinsics.from_fov(mask.shape[1], mask.shape[0], fov)
    k = scale_intrinsics(full, ws, hs)
    radius = float(np.linalg.norm(renderer.mesh.vertices - center, axis=1).max())
    d0 = fit_distance(radius, k, 0.8)
    cam = make_camera(Viewpoint(view.azimuth, view.elevation, d0, view.theta), k, center)
    r = renderer.render(cam)
    ii, jj = np.nonzero(small)
    ri, rj = np.nonzero(r.mask)
    if len(ri) and len(ii):
        s = np.sqrt(len(ii) / len(ri))
        pp = np.array([k.cx, k.cy])
        shift = np.array([jj.mean(), ii.mean()]) - (pp + s * (np.array([rj.mean(), ri.mean()]) - pp))
        z = d0 / s
        t_c = z * np.array([shift[0] / k.fx, shift[1] / k.fy, 1.0])
        cam = Camera(k, cam.R, t_c - cam.R @ center)
    iou = silhouette_iou(renderer.render(cam).mask, small)
    return Camera(full, cam.R, cam.t), iou


#: default number of starting viewpoints ``understand`` refines (docs/understanding.md, "Pose hypotheses")
POSE_HYPOTHESES = 4
#: refinement steps each hypothesis gets before the best is chosen and finished
SCREEN_STEPS = 5
#: how much better (silhouette IoU) another start must fit the mask to overrule the most probable one
SWITCH_MARGIN = 0.05
#: long side (pixels) of the mask the hypotheses are compared on
SCORE_SIZE = 128


@dataclass
class PoseHypothesis:
    """One starting viewpoint of one candidate shape, and what refinement made of it.

    ``kind``: ``"estimate"`` (the network's decoded viewpoint), ``"mode"`` / ``"half turn"`` (a mode of
    its azimuth distribution / that mode turned by 180°), ``"given"`` (an override); ``mass``: the
    distribution's probability around the start (NaN when unknown). ``start_iou``: the placed
    camera's silhouette IoU at 64 px; ``iou``: the hard IoU of ``camera`` that the selection compared
    (on a :data:`SCORE_SIZE` px copy of the mask, the better of start and screened pose), or, for the
    chosen hypothesis, of its final pose at the mask's resolution."""

    view: Viewpoint
    mass: float
    kind: str
    shape: ShapeCandidate
    camera_start: Camera
    start_iou: float
    camera: Camera | None = None
    iou: float = float("nan")
    chosen: bool = False
    keypoint_ll: float = float("nan")  # agreement with the heatmap network (fusion.keypoint_log_likelihood)
    finished: bool = False  # refined the whole schedule (the first start and a challenger the screen nominated)

    def to_json(self) -> dict[str, Any]:
        v = rt_to_viewpoint(self.camera.R, self.camera.t, self.shape.center) if self.camera is not None else None
        return {
            "kind": self.kind,
            "model_id": self.shape.shape.model_id,
            "start_azimuth": round(float(self.view.azimuth), 3),
            "start_elevation": round(float(self.view.elevation), 3),
            "mass": None if not np.isfinite(self.mass) else round(float(self.mass), 4),
            "start_iou": round(float(self.start_iou), 4),
            "iou": None if not np.isfinite(self.iou) else round(float(self.iou), 4),
            "azimuth": None if v is None else round(float(v.azimuth), 3),
            "keypoint_log_likelihood": None if not np.isfinite(self.keypoint_ll) else round(float(self.keypoint_ll), 3),
            "finished": self.finished,
            "chosen": self.chosen,
        }


def viewpoint_hypotheses(vp: dict[str, Any], n: int) -> list[tuple[Viewpoint, float, str]]:
    """``n`` starting viewpoints ``(view, mass, kind)`` from a viewpoint estimate, most probable first.

    ``n == 1``: the network's decoded estimate alone (the paper). More: the modes of the azimuth
    distribution and their half turns (:func:`kpengine.image.viewpoint.azimuth_hypotheses`), at the
    estimated elevation; an estimate without a distribution (a sketch head) gives the estimate and
    its half turn. Fewer than ``n`` come back when the distribution has fewer separate modes."""
    from kpengine.image.viewpoint import azimuth_hypotheses

    el, theta = float(vp["elevation"]), float(vp.get("theta", 0.0))
    if n == 1:
        return [(Viewpoint(float(vp["azimuth"]), el, 1.0, theta), float("nan"), "estimate")]
    prob = vp.get("azimuth_probabilities")
    if prob is None:
        az = float(vp["azimuth"])
        return [(Viewpoint(az, el, 1.0, theta), float("nan"), "estimate"),
                (Viewpoint((az + 180.0) % 360.0, el, 1.0, theta), float("nan"), "half turn")]  # fmt: skip
    return [(Viewpoint(az, el, 1.0, theta), mass, kind) for az, mass, kind in azimuth_hypotheses(np.asarray(prob), n)]


def pose_confidence(tried: list[PoseHypothesis]) -> float:
    """The chosen start's share of the viewpoint mass among the starts tried for its shape, in [0, 1].

    1 with a single start, or when the masses are unknown (an override, a sketch head): the paper's
    confidence then stands alone (the IoU factor of the keypoints)."""
    chosen = next((h for h in tried if h.chosen), None)
    if chosen is None:
        return 1.0
    masses = [h.mass for h in tried if h.shape is chosen.shape]
    if len(masses) < 2 or not np.isfinite(masses).all() or sum(masses) <= 0:
        return 1.0
    return float(chosen.mass / sum(masses))


def _sigma_at(step: int, steps: int, sigma: tuple[float, float] = (3.0, 0.3)) -> float:
    """The blur :class:`~kpengine.render.refine.PoseRefiner` anneals to at ``step`` of ``steps`` (geometric)."""
    return float(sigma[0] * (sigma[1] / sigma[0]) ** (min(step, steps - 1) / max(steps - 1, 1)))


def _winner(
    tried: list[PoseHypothesis], scores: list[float], margin: float, agreement: list[float] | None = None
) -> PoseHypothesis:
    """Per candidate shape, its first hypothesis unless another beats it by more than ``margin``, or (given
    ``agreement``, the heatmap's log-likelihood of each) beats it on both score and agreement; the
    best-scoring of those that may overrule it; then the best-scoring shape (shapes compete on fit alone,
    as the shape routes always did)."""
    per_shape: dict[int, tuple[PoseHypothesis, float]] = {}
    for n, (h, sc) in enumerate(zip(tried, scores)):
        key = id(h.shape)
        if key not in per_shape:
            per_shape[key] = (h, sc)  # the most probable start of this shape
        else:
            f = next(i for i, x in enumerate(tried) if id(x.shape) == key)
            both = agreement is not None and sc > scores[f] and agreement[n] > agreement[f]
            if (sc > scores[f] + margin or both) and (per_shape[key][0] is tried[f] or sc > per_shape[key][1]):
                per_shape[key] = (h, sc)
    return max(per_shape.values(), key=lambda x: x[1])[0]


def select_pose(
    tried: list[PoseHypothesis],
    mask: np.ndarray,
    *,
    steps: int,
    screen_steps: int = SCREEN_STEPS,
    size: int = 64,
    margin: float = SWITCH_MARGIN,
    evidence: Any = None,
    rechoose: bool = True,
) -> PoseHypothesis:
    """Choose among pose hypotheses by their fit to ``mask`` (H, W) bool and refine the winner; returns it,
    ``chosen`` set and ``camera`` the final pose.

    One hypothesis (the paper): refined ``steps`` steps from its start. Several: each is refined
    ``screen_steps`` steps (the first part of the blur schedule, σ 3 px down to where a ``steps``-step
    run would be) and scored by the hard silhouette IoU on a :data:`SCORE_SIZE` px copy of the mask.
    The screen's winner is the first (most probable) hypothesis unless another fits the mask better
    by more than ``margin`` IoU: a near-symmetric object fits its half turn about as well as its
    true view, and a small IoU difference is refinement noise, not evidence (docs/understanding.md).
    **A silhouette win on the screen is re-checked**: when the screen's winner is another start that
    beat the first by more than ``margin``, both are refined the remaining ``steps - screen_steps``
    steps down to σ 0.3 px and the same rule is applied again to their finished poses at full
    resolution (on the real chair photo the screen favoured the half turn by 0.12 IoU; finished, the
    most probable start fitted as well, 0.617 against 0.608, and was the right pose). A challenger
    nominated by the heatmap's vote within the margin is finished alone, as before. ``rechoose=False``:
    the screen's winner is always finished alone (the sixth session's rule). Steps in all:
    ``n * screen_steps`` plus ``steps - screen_steps`` once, or twice when re-checked. ``steps == 0``:
    no refinement, the placed starts' 64 px IoU decide.
    In every case a finished hypothesis keeps whichever of its start, screened and finished pose
    fits the mask better at full resolution (the blur can walk a good start away).

    ``evidence`` (a :class:`kpengine.image.fusion.KeypointEvidence` of the heatmap network): each
    hypothesis also gets ``keypoint_ll``, the heatmap's log-likelihood of its shape's keypoints
    projected (with visibility) at the compared pose (for the finalists, again at the finished
    pose), and another start also overrules the first when it beats it on *both* silhouette IoU
    (by any amount) and that likelihood: two weak, partly independent cues agreeing
    (docs/understanding.md, "Choosing the half turn")."""
    from kpengine.render.refine import PoseRefiner, scale_intrinsics

    if not tried:
        raise DataError("no pose hypothesis to choose from")
    small = downsample_mask(mask, SCORE_SIZE)  # hypotheses are compared at 128 px: a 480 px render each costs more

    def small_view(h: PoseHypothesis, cam: Camera) -> tuple[Camera, Any]:
        """``cam`` scaled to the 128 px comparison size and ``h``'s render through it (mask and depth)."""
        c = Camera(scale_intrinsics(cam.intrinsics, small.shape[1], small.shape[0]), cam.R, cam.t)
        return c, h.shape.renderer.render(c)

    def agreement(h: PoseHypothesis, view: tuple[Camera, Any]) -> float:
        """The heatmap's log-likelihood of ``h``'s keypoints seen in ``view`` (a :func:`small_view`:
        the depth test at 128 px reuses the render the IoU was scored on)."""
        from kpengine.image.fusion import keypoint_log_likelihood
        from kpengine.render.project import project_points

        (c, r), (hs, ws), shape = view, small.shape, h.shape.shape
        p = project_points(shape.keypoints.astype(np.float64), c, r.depth)
        uv = (p.uv + 0.5) * np.array([mask.shape[1] / ws, mask.shape[0] / hs]) - 0.5
        return keypoint_log_likelihood(evidence, uv, p.visible, shape.semantic_ids)

    use_agreement = evidence is not None and len(tried) > 1
    if steps <= 0:
        for h in tried:
            h.camera = h.camera_start
            if use_agreement:
                h.keypoint_ll = agreement(h, small_view(h, h.camera))
        lls = [h.keypoint_ll for h in tried] if use_agreement else None
        best = _winner(tried, [h.start_iou for h in tried], margin, lls)
        best.iou, best.chosen = silhouette_iou(best.shape.renderer.render(best.camera).mask, mask), True
        return best
    refiners: dict[int, PoseRefiner] = {}

    def refiner(h: PoseHypothesis) -> PoseRefiner:
        if id(h.shape) not in refiners:
            refiners[id(h.shape)] = PoseRefiner(h.shape.mesh, center=h.shape.center)
        return refiners[id(h.shape)]

    def full_iou(h: PoseHypothesis, cam: Camera) -> float:
        return silhouette_iou(h.shape.renderer.render(cam).mask, mask)

    if len(tried) == 1:
        best = tried[0]
        finished = refiner(best).refine(mask, best.camera_start, steps=steps, size=size, fit_focal=True).camera
        poses = [best.camera_start, finished]
        scores = [full_iou(best, cam) for cam in poses]
        i = int(np.argmax(scores))
        best.camera, best.iou, best.chosen, best.finished = poses[i], scores[i], True, True
        return best
    k = min(screen_steps, steps)
    mid = _sigma_at(k, steps)
    for h in tried:  # the better of the start and its screened pose: the blur can walk a good start away
        screened = refiner(h).refine(mask, h.camera_start, steps=k, size=size, fit_focal=True, sigma=(3.0, mid))
        views = [(c, small_view(h, c)) for c in (h.camera_start, screened.camera)]
        h.camera, view, h.iou = max(((c, v, silhouette_iou(v[1].mask, small)) for c, v in views), key=lambda x: x[2])
        if use_agreement:
            h.keypoint_ll = agreement(h, view)
    nominee = _winner(tried, [h.iou for h in tried], margin, [h.keypoint_ll for h in tried] if use_agreement else None)
    first = next(h for h in tried if h.shape is nominee.shape)
    # a challenger the silhouette alone nominated (beyond the margin) is finished beside the most probable
    # start and must win again on the finished poses: the 5-step screen can favour a start that 20 steps
    # make no better. One nominated by the heatmap's vote (both cues better, within the margin) stands:
    # finishing two near-equal fits only re-draws their IoU (docs/understanding.md, "Pose hypotheses")
    challenged = rechoose and nominee is not first and nominee.iou > first.iou + margin
    finalists = [first, nominee] if challenged else [nominee]
    for h in finalists:
        poses = [h.camera_start, h.camera]
        if steps > k:
            r = refiner(h).refine(mask, h.camera, steps=steps - k, size=size, fit_focal=True, sigma=(mid, 0.3))
            poses.append(r.camera)
        scores = [full_iou(h, cam) for cam in poses]
        i = int(np.argmax(scores))
        h.camera, h.iou, h.finished = poses[i], scores[i], True
        if use_agreement and len(finalists) > 1:
            h.keypoint_ll = agreement(h, small_view(h, h.camera))
    best = finalists[0]
    if len(finalists) > 1:
        lls = [h.keypoint_ll for h in finalists] if use_agreement else None
        best = _winner(finalists, [h.iou for h in finalists], margin, lls)
    best.chosen = True
    return best
