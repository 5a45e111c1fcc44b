"""The reconstruction networks and their losses (paper §4.2; MarrNet / ShapeHD), in plain torch.

* :class:`SketchNet`: RGB (B, 3, S, S) -> 2.5D sketches: mask logits (B, S, S), depth (B, S, S),
  camera-frame normals (B, 3, S, S). The silhouette network's encoder-decoder
  (``image.silhouette``) with five output channels instead of one.
* :class:`VoxelNet`: sketches (B, 5, S, S) -> occupancy logits (B, R, R, R) in the canonical frame
  (``geometry.voxelize``): a 2D ResNet encoder, a code, a viewpoint head whose probabilities join
  the code, a fully connected layer to (C, 4, 4, 4), then 3D transposed convolutions doubling the
  side up to R (32 by default; 64 and 128, the paper's size, add stages), the last one straight to
  logits added to the category's mean-shape logits (a residual from the mean shape).
* :class:`NaturalnessNet`: a 3D critic (B, R, R, R) -> (B,) scores; trained as a WGAN-GP critic
  on real shapes' voxels against the voxel network's outputs (ShapeHD), its negated score is the
  naturalness loss of a reconstruction.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from kpengine.image.reconstruct.backproject import OBS_CHANNELS
from kpengine.image.silhouette import SilhouetteNet, silhouette_loss
from kpengine.image.viewpoint import ResNetEncoder


class SketchNet(SilhouetteNet):
    """Image (B, 3, S, S), normalised -> ``{"mask": (B, S, S) logits, "depth": (B, S, S),
    "normals": (B, 3, S, S) unit}``; with ``viewpoint_head`` also ``"azimuth"`` (B, 24) and
    ``"elevation"`` (B, 12) logits from the encoder's deepest map (``image.viewpoint``'s bins): the
    viewpoint from RGB, against which the voxel network's viewpoint from sketches is compared
    (the paper's Table 5)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), size: int = 64, viewpoint_head: bool = False):
        super().__init__(widths)
        self.out = nn.Conv2d(widths[0], 5, 1)
        self.view_head = None
        if viewpoint_head:
            from kpengine.image.viewpoint import AZIMUTH_BINS, ELEVATION_BINS

            side = size // 2 ** len(widths)
            self.view_head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(widths[-1] * side * side, 256),
                nn.ReLU(),
                nn.Linear(256, AZIMUTH_BINS + ELEVATION_BINS),
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x, return_all=True)
        y = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        y = self.out(y)
        out = {"mask": y[:, 0], "depth": y[:, 1] / 4.0, "normals": F.normalize(y[:, 2:5], dim=1, eps=1e-6)}
        if self.view_head is not None:
            from kpengine.image.viewpoint import AZIMUTH_BINS

            v = self.view_head(feats[-1])
            out["azimuth"], out["elevation"] = v[:, :AZIMUTH_BINS], v[:, AZIMUTH_BINS:]
        return out


def sketch_loss(
    pred: dict[str, torch.Tensor], mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor
) -> torch.Tensor:
    """Silhouette BCE + Dice, and mean squared errors of depth (scaled by 4, as the voxel input) and
    normals on the object's pixels (MarrNet's losses)."""
    on = (mask > 0.5).float()
    n_on = on.sum().clamp(min=1.0)
    d = ((pred["depth"] - depth) * 4.0) ** 2
    n = ((pred["normals"] - normals) ** 2).sum(1)
    return silhouette_loss(pred["mask"], mask) + (d * on).sum() / n_on + (n * on).sum() / n_on


@torch.no_grad()
def sketch_errors(
    pred: dict[str, torch.Tensor], mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-item errors (B,): mask IoU, mean absolute depth error (model units) and mean normal angle
    (degrees) over the pixels both masks cover."""
    pm, tm = pred["mask"] > 0, mask > 0.5
    inter = (pm & tm).sum((1, 2)).float()
    union = (pm | tm).sum((1, 2)).float()
    both = (pm & tm).float()
    cnt = both.sum((1, 2)).clamp(min=1.0)
    derr = ((pred["depth"] - depth).abs() * both).sum((1, 2)) / cnt
    cos = (pred["normals"] * normals).sum(1).clamp(-1.0, 1.0)
    ang = (torch.rad2deg(torch.acos(cos)) * both).sum((1, 2)) / cnt
    return {"mask_iou": torch.where(union > 0, inter / union.clamp(min=1), 1.0), "depth_mae": derr, "normal_deg": ang}


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    """A linear layer with zero weights and bias (``n_out`` may be 0: a bank not yet set)."""
    with warnings.catch_warnings():  # torch warns that initialising a zero-element tensor is a no-op
        warnings.simplefilter("ignore", UserWarning)
        lin = nn.Linear(n_in, n_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class VoxelNet(nn.Module):
    """Sketches (B, 5, S, S) [+ category index (B,)] -> occupancy logits (B, R, R, R), R = 4 * 2 ** k
    (32, 64, 128), in the category's canonical frame; with ``viewpoint_head`` also the viewpoint
    logits ``{"azimuth": (B, 24), "elevation": (B, 12)}`` (``image.viewpoint``'s bins).

    * **Residual from the category's mean shape** (``prior``, (K, R, R, R) logits of the mean
      training grid per category, set by the task before training, saved with the weights): the
      decoder predicts what the shape has that the mean does not. The last layer starts at zero, so
      an untrained network already scores the mean shape's IoU (0.381 bathtub, 0.263 bed on val,
      above the first plain network's 0.303 / 0.133).
    * **Viewpoint conditioning**: the sketches are in the camera frame, the output in the canonical
      frame, so the network must undo the viewpoint. A head classifies azimuth and elevation from
      the encoder's code (trained on the renders' true viewpoint), and the decoder reads the code
      together with those probabilities (or, given, a viewpoint distribution ``view`` (B, 36) from
      elsewhere: the true one, another network's).
    * A learnt **category embedding** joins the code (one network for several categories).
    * ``basis`` k > 0: instead of the 3D convolutions, a head predicts k coefficients of the
      category's PCA basis of training grids (``mean_grid`` (K, R³), ``basis_vectors`` (K, k, R³),
      set by :meth:`set_basis`; ``reconstruct.shape_space``). :meth:`occupancy` gives the raw blend
      ``mean + c @ basis`` (B, R, R, R), unclamped, for the loss (:func:`basis_loss`); ``forward``
      its logits after clamping to [1e-4, 1 - 1e-4], so that ``logits > 0`` is occupancy > 0.5 as
      for the convolutional decoder. The last layer starts at zero: the mean shape.
    * ``retrieval``: the residual is taken from a **retrieved blend of training shapes** instead of
      the category's mean (a departure from ShapeHD, docs/reconstruction.md, fourth pass). A head
      scores every training grid of the bank (``bank`` (N, R, R, R) bool, ``bank_category`` (N,),
      set by :meth:`set_bank`; only the item's category's grids count), the softmax of its scores
      weighs them, and the logits of that blend replace the mean-shape prior. The head starts at
      zero: equal weights, so the blend is the category's mean grid and an untrained head changes
      nothing. :meth:`parts` gives the retrieval scores for their own loss. A checkpoint's bank
      size is read from the checkpoint (:meth:`_load_from_state_dict`).
    """

    def __init__(
        self,
        resolution: int = 32,
        size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        latent: int = 256,
        channels: int = 64,
        n_categories: int = 1,
        viewpoint_head: bool = True,
        basis: int = 0,
        retrieval: bool = False,
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"voxel resolution must be a power of two >= 8, got {resolution}")
        from kpengine.image.viewpoint import AZIMUTH_BINS, ELEVATION_BINS

        self.resolution = resolution
        self.encoder = ResNetEncoder(5, widths)
        side = size // 2 ** len(widths)
        self.code = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, latent), nn.ReLU())
        self.n_view = AZIMUTH_BINS + ELEVATION_BINS if viewpoint_head else 0
        self.view_head = nn.Linear(latent, self.n_view) if viewpoint_head else None
        self.category = nn.Embedding(n_categories, 16)
        self.register_buffer("prior", torch.zeros(n_categories, resolution, resolution, resolution))
        self.channels = channels
        self.basis = basis
        self.retrieval = retrieval
        if retrieval and basis > 0:
            raise ValueError("a voxel network takes either a PCA basis or a retrieval prior, not both")
        if retrieval:
            self.retrieve = _zero_linear(latent + self.n_view + 16, 0)
            self.register_buffer("bank", torch.zeros(0, resolution, resolution, resolution, dtype=torch.bool))
            self.register_buffer("bank_category", torch.zeros(0, dtype=torch.long))
        if basis > 0:
            self.coef = nn.Sequential(nn.Linear(latent + self.n_view + 16, latent), nn.ReLU(), nn.Linear(latent, basis))
            nn.init.zeros_(self.coef[-1].weight)  # start at the mean shape
            nn.init.zeros_(self.coef[-1].bias)
            self.register_buffer("mean_grid", torch.zeros(n_categories, resolution**3))
            self.register_buffer("basis_vectors", torch.zeros(n_categories, basis, resolution**3))
            return
        self.fc = nn.Linear(latent + self.n_view + 16, channels * 64)
        ups, c, r = [], channels, 4
        while r < resolution // 2:
            out = max(c // 2, 8)
            ups += [nn.ConvTranspose3d(c, out, 4, 2, 1, bias=False), nn.BatchNorm3d(out), nn.ReLU()]
            c, r = out, r * 2
        self.ups = nn.Sequential(*ups)
        # the last doubling goes straight to one channel: a feature map at full resolution (8 channels
        # and a 3x3x3 convolution) cost 4x the time of the whole rest on 2 CPU cores (157 s an epoch)
        self.out = nn.ConvTranspose3d(c, 1, 4, 2, 1)
        nn.init.zeros_(self.out.weight)  # start at the prior: the mean shape
        nn.init.zeros_(self.out.bias)

    def set_prior(self, mean_grids: torch.Tensor) -> None:
        """Mean occupancy (K, R, R, R) in [0, 1] per category -> the prior logits (clipped to ±4.6)."""
        p = mean_grids.float().clamp(0.01, 0.99)
        self.prior.copy_(torch.log(p) - torch.log1p(-p))

    def set_basis(self, means: torch.Tensor, bases: torch.Tensor) -> None:
        """Per category the mean grid (K, R³) and a basis (K, k, R³) (``shape_space.pca_basis``)."""
        self.mean_grid.copy_(means.reshape(self.mean_grid.shape))
        self.basis_vectors.copy_(bases.reshape(self.basis_vectors.shape))

    def set_bank(self, grids: torch.Tensor, category: torch.Tensor) -> None:
        """The retrieval bank: training grids (N, R, R, R) (occupied > 0.5) and their category index (N,).
        The head is rebuilt at zero for N shapes (equal weights: the blend starts at each category's
        mean grid)."""
        if not self.retrieval:
            raise ValueError("set_bank() is for networks built with retrieval=True")
        dev = self.prior.device
        self.bank = (grids > 0.5).to(dev)
        self._bank_cache = None
        self.bank_category = category.long().to(dev)
        self.retrieve = _zero_linear(self.retrieve.in_features, grids.shape[0]).to(dev)

    def _bank_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """The bank as a float matrix (N, R³), converted once per bank and device: converting it at
        every step doubled the blend's cost (0.25 s against 0.13 s a batch of 32 on one core)."""
        m = getattr(self, "_bank_cache", None)
        if m is None or m.shape[0] != self.bank.shape[0] or m.device != self.bank.device or m.dtype != dtype:
            m = self.bank.flatten(1).to(dtype)
            self._bank_cache = m
        return m

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the bank's size is the training set's, known to the checkpoint, not to the config: resize first
        w = state_dict.get(prefix + "retrieve.weight")
        if self.retrieval and w is not None and w.shape[0] != self.bank.shape[0]:
            self.bank = torch.zeros(w.shape[0], *self.bank.shape[1:], dtype=torch.bool, device=self.bank.device)
            self.bank_category = torch.zeros(w.shape[0], dtype=torch.long, device=self.bank.device)
            self.retrieve = _zero_linear(w.shape[1], w.shape[0]).to(self.bank.device)
        self._bank_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _code(self, sketches, category, view):
        h = self.code(self.encoder(sketches))
        parts, logits = [h], None
        if self.view_head is not None:
            from kpengine.image.viewpoint import AZIMUTH_BINS

            v = self.view_head(h)
            logits = {"azimuth": v[:, :AZIMUTH_BINS], "elevation": v[:, AZIMUTH_BINS:]}
            if view is None:
                view = torch.cat([F.softmax(logits["azimuth"], -1), F.softmax(logits["elevation"], -1)], 1)
            parts.append(view)
        parts.append(self.category(category))
        return torch.cat(parts, 1), logits

    def occupancy(
        self, sketches: torch.Tensor, category: torch.Tensor | None = None, view: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Basis networks only: the raw blend (B, R, R, R) ``mean + coefficients @ basis`` of each
        item's category (not clamped: values past 0 or 1 are what the loss needs to see), and the
        viewpoint logits (None without the head)."""
        if self.basis <= 0:
            raise ValueError("occupancy() is for networks with a shape basis (basis > 0)")
        if category is None:
            category = torch.zeros(sketches.shape[0], dtype=torch.long, device=sketches.device)
        z, logits = self._code(sketches, category, view)
        c = self.coef(z)
        occ = self.mean_grid[category] + torch.einsum("bk,bkv->bv", c, self.basis_vectors[category])
        r = self.resolution
        return occ.view(-1, r, r, r), logits

    def forward(
        self,
        sketches: torch.Tensor,
        category: torch.Tensor | None = None,
        view: torch.Tensor | None = None,
        with_view: bool = False,
        parts: bool = False,
    ):
        """``category`` (B,) long (default 0), ``view`` (B, 36) azimuth+elevation probabilities that
        replace the head's; ``with_view`` also returns the viewpoint logits; ``parts`` returns the
        dict of :meth:`parts` instead (decoder networks)."""
        b = sketches.shape[0]
        if category is None:
            category = torch.zeros(b, dtype=torch.long, device=sketches.device)
        if self.basis > 0:
            o, logits = self.occupancy(sketches, category, view)
            o = o.clamp(1e-4, 1 - 1e-4)
            occ = torch.log(o) - torch.log1p(-o)
            return (occ, logits) if with_view else occ
        out = self.parts(sketches, category, view)
        if parts:
            return out
        return (out["logits"], out["view"]) if with_view else out["logits"]

    def parts(
        self, sketches: torch.Tensor, category: torch.Tensor | None = None, view: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | dict[str, torch.Tensor] | None]:
        """Decoder networks: ``logits`` of occupancy (B, R, R, R), ``view`` logits (or None), and with
        ``retrieval`` also ``scores`` (B, N) of the bank's grids (other categories' at -1e9) and
        ``blend`` (B, R, R, R), the softmax-weighted mean of the bank's grids the residual starts from."""
        if self.basis > 0:
            raise ValueError("parts() is for the voxel decoder; a basis network has occupancy()")
        b = sketches.shape[0]
        if category is None:
            category = torch.zeros(b, dtype=torch.long, device=sketches.device)
        z, logits = self._code(sketches, category, view)
        out: dict = {"view": logits}
        if self.retrieval:
            scores = self.retrieve(z).masked_fill(self.bank_category[None] != category[:, None], -1e9)
            w = F.softmax(scores, -1)
            blend = (w @ self._bank_matrix(w.dtype)).view(b, *self.bank.shape[1:])
            p = blend.clamp(0.01, 0.99)
            prior = torch.log(p) - torch.log1p(-p)
            out["scores"], out["blend"] = scores, blend
        else:
            prior = self.prior[category]
        h = self.fc(z).view(-1, self.channels, 4, 4, 4)
        out["logits"] = self.out(self.ups(F.relu(h)))[:, 0] + prior
        return out


def voxel_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 2.0) -> torch.Tensor:
    """Binary cross-entropy of occupancy (B, R, R, R); occupied voxels weigh ``pos_weight`` (they are
    5-15 % of a grid; unweighted, thin parts vanish first)."""
    w = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=w)


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − soft IoU of occupancy probabilities (B, R, R, R) against 0/1 targets, per item, averaged:
    ``1 − Σ p t / Σ (p + t − p t)``. The benchmark's measure made differentiable: BCE weighs every
    voxel alike, while IoU ignores the empty space and counts each shape once whatever its volume."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1).clamp(min=1e-6)
    return (1.0 - inter / union).mean()


def retrieval_targets(grids: torch.Tensor, category: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Soft retrieval targets among training grids (N, R, R, R) of categories (N,) -> (N, N): row i
    is the softmax of ``IoU(grid i, grid j) / tau`` over the *other* grids j of i's category (its own
    weight is 0). Leaving the shape itself out trains the head for what it meets at test time, a
    shape not in the bank: the best *other* training grids. With tau 0.05 the truth-weighted blend
    of the nearest training shapes scores IoU 0.72 (bathtub) / 0.62 (bed) on the test split, above
    the single nearest one (0.69 / 0.60; docs/reconstruction.md). A shape alone in its category
    gets an all-zero row."""
    a = (grids > 0.5).flatten(1).float()
    inter = a @ a.T
    vol = a.sum(1)
    iou = inter / (vol[:, None] + vol[None] - inter).clamp(min=1.0)
    other = (category[:, None] == category[None]) & ~torch.eye(len(a), dtype=torch.bool)
    s = (iou / tau).masked_fill(~other, float("-inf"))
    w = torch.softmax(s, 1)
    return torch.nan_to_num(w, nan=0.0)


def retrieval_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the head's scores (B, N) against soft targets (B, N) (rows summing to 1)."""
    return -(targets * F.log_softmax(scores, -1)).sum(1).mean()


def basis_loss(occupancy: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Squared hinge of a raw blend (B, R, R, R) against 0/1 targets: occupied voxels pay
    ``(1 - o)²`` below 1, empty ones ``o²`` above 0, nothing beyond (a blend may overshoot on the
    right side: 1.3 is as occupied as 1). Plain squared error would spend the basis's few degrees
    of freedom pulling overshoots back; BCE has no gradient past the clamp."""
    on = target > 0.5
    miss = torch.where(on, (1.0 - occupancy).clamp(min=0.0) * pos_weight**0.5, occupancy.clamp(min=0.0))
    return (miss**2).mean()


class NaturalnessNet(nn.Module):
    """3D critic: occupancy in [0, 1] (B, R, R, R) -> scores (B,) (higher = more like real shapes).
    No batch normalisation (the gradient penalty is per item)."""

    def __init__(self, resolution: int = 32, channels: int = 16):
        super().__init__()
        layers, c, r = [], 1, resolution
        while r > 4:
            out = channels if c == 1 else min(c * 2, 128)
            layers += [nn.Conv3d(c, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c, r = out, r // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 64, 1)

    def forward(self, occ: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(occ[:, None]).flatten(1))[:, 0]


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: mean (|grad critic(x)| - 1)^2 at random points x between real and fake (B, R, R, R)."""
    a = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


class CompletionNet(nn.Module):
    """The back-projecting 3D estimator (a departure from ShapeHD; ``reconstruct.backproject``): the
    observation grid (B, 5, R, R, R) of a view in the canonical frame, plus the category's mean-shape
    logits as a sixth channel, -> occupancy logits (B, R, R, R) through a small 3D U-Net (R -> R/2 ->
    R/4 -> R/8 and back, a skip connection at each side), added to the mean-shape logits (the last
    layer starts at zero: an untrained network scores the mean shape, as :class:`VoxelNet`).

    Nothing but the last layer runs at full resolution, and it is 1×1×1 over the upsampled features
    and the input grid (which carries the visible surface at full resolution): on 2 CPU cores a batch
    of 32 took 2.1-3.5 s this way at width 8 against 6-14 s with a 3×3×3 layer there (measured at
    load 5), the difference between 4 and 12 epochs in the hour of training."""

    def __init__(self, resolution: int = 32, n_categories: int = 1, width: int = 8, observation: str = "depth"):
        super().__init__()
        if resolution < 16 or resolution & (resolution - 1):
            raise ValueError(f"voxel resolution must be a power of two >= 16, got {resolution}")
        self.resolution = resolution
        #: what its input grids hold: "depth" (``backproject.observation_grid``) or "cone" (``cone_grid``)
        self.observation = observation
        self.register_buffer("prior", torch.zeros(n_categories, resolution, resolution, resolution))
        w, c_in = width, OBS_CHANNELS + 1

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU())

        self.enc1 = nn.Sequential(block(c_in, 2 * w, 2), block(2 * w, 2 * w))
        self.enc2 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w))
        self.enc3 = nn.Sequential(block(4 * w, 8 * w, 2), block(8 * w, 8 * w))
        self.up3 = nn.ConvTranspose3d(8 * w, 4 * w, 2, 2)
        self.dec2 = block(8 * w, 4 * w)
        self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, 2)
        self.dec1 = block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose3d(2 * w, w, 2, 2)
        self.out = nn.Conv3d(w + c_in, 1, 1)
        nn.init.zeros_(self.out.weight)  # start at the prior: the mean shape
        nn.init.zeros_(self.out.bias)

    set_prior = VoxelNet.set_prior  # mean occupancy (K, R, R, R) -> the prior logits, as the decoder's

    def forward(self, obs: torch.Tensor, category: torch.Tensor | None = None) -> torch.Tensor:
        """Observation grids (B, 5, R, R, R), categories (B,) long (default 0) -> logits (B, R, R, R)."""
        if category is None:
            category = torch.zeros(obs.shape[0], dtype=torch.long, device=obs.device)
        prior = self.prior[category]
        x = torch.cat([obs, prior[:, None] / 4.0], 1)
        x1 = self.enc1(x)
        x2 = self.enc2(x1)
        y = self.dec2(torch.cat([self.up3(self.enc3(x2)), x2], 1))
        y = self.dec1(torch.cat([self.up2(y), x1], 1))
        y = self.out(torch.cat([F.relu(self.up1(y)), x], 1))
        return y[:, 0] + prior
