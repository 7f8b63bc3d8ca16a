"""``NucleiWeakLiu2022EmbeddingNet``: Liu et al.'s Instance Encoding Network (IEN).

The shared ResNet encoder + UNet head with ``NUM_CLASSES = D`` (the embedding dimension) and
a CoordConv stem: the normalised image and the two coordinate channels of :mod:`.coords` go
through a 1x1 convolution 5 -> 3 (the authors' stem) before the ResNet, so ImageNet encoder
weights still fit. The 1x1 convolution starts as the identity on the colour channels and zero
on the coordinates (our choice; the authors' starts at random): the network starts as the
plain UNet and learns how much position to use.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList

from ...modeling.backbone.tiling import sliding_window_apply
from ...modeling.meta_arch.unet import UNetModelMixin
from .coords import coordinate_grid
from .losses import discriminative_loss
from .pseudo_labels import BACKGROUND_ID

__all__ = ["NucleiWeakLiu2022EmbeddingNet"]


@META_ARCH_REGISTRY.register()
class NucleiWeakLiu2022EmbeddingNet(UNetModelMixin, SemanticSegmentor):
    """IEN: per-pixel ``D``-dimensional embeddings trained with the discriminative loss.

    Training inputs carry ``"ins_seg"`` ``(H, W)`` (0 ignore, 1 background, ``>= 2``
    instances) and ``"coords"`` ``(2, H, W)`` (``NucleiWeakLiu2022IENMapper``). Losses
    ``loss_var``, ``loss_dist``, ``loss_reg``: :func:`~.losses.discriminative_loss` per image,
    averaged over the batch (the paper averages the per-image loss).

    Inference output per image: ``"embedding"`` ``(D, H, W)``. Coordinates come from the input's
    ``"coords"`` when present, else from the image size (the whole image at test time).
    """

    # the CoordConv stem takes the 3 colour channels and 2 coordinates (5 inputs), so the
    # optional hematoxylin input channel (NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT) is refused
    HEMATOXYLIN_INPUT_SUPPORTED = False
    # embeddings of a CoordConv net are not flip-equivariant: no NUCLEIWEAK.UNET.TEST_FLIPS
    FLIP_TTA_SUPPORTED = False

    @configurable
    def __init__(
        self,
        *,
        coord_conv=True,
        delta_v=0.5,
        delta_d=1.5,
        gamma=0.001,
        bg_weight=1.0,
        min_pixels=10,
        **kwargs,
    ):
        """
        Parameters
        ----------
        coord_conv : bool
            Use the CoordConv stem (paper: yes).
        delta_v, delta_d, gamma, bg_weight, min_pixels
            Discriminative loss, see :func:`~.losses.discriminative_loss` (``bg_weight`` is
            its ``alpha``).
        **kwargs
            ``backbone``, ``sem_seg_head`` (``D`` output channels), ``pixel_mean``,
            ``pixel_std`` of :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        self.coord_conv = None
        if coord_conv:
            self.coord_conv = Conv2d(5, 3, kernel_size=1)
            with torch.no_grad():
                self.coord_conv.weight.zero_()
                self.coord_conv.weight[:, :3, 0, 0] = torch.eye(3)
                self.coord_conv.bias.zero_()
        self.loss_args = dict(
            delta_v=float(delta_v),
            delta_d=float(delta_d),
            gamma=float(gamma),
            alpha=float(bg_weight),
            min_pixels=int(min_pixels),
        )

    @classmethod
    def from_config(cls, cfg):
        ien = cfg.NUCLEIWEAK.LIU2022.IEN
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = int(ien.EMBED_DIM)
        ret = super().from_config(cfg)
        ret.update(
            coord_conv=ien.COORD_CONV,
            delta_v=ien.DELTA_V,
            delta_d=ien.DELTA_D,
            gamma=ien.GAMMA,
            bg_weight=ien.BG_WEIGHT,
            min_pixels=ien.MIN_PIXELS,
        )
        return ret

    def coordinates(self, batched_inputs, images):
        """``(N, 2, Hpad, Wpad)`` coordinates: the inputs' ``"coords"``, else the image grid."""
        grids = [
            x["coords"].to(self.device).float()
            if "coords" in x
            else coordinate_grid(h, w, as_tensor=True, device=self.device)
            for x, (h, w) in zip(batched_inputs, images.image_sizes)
        ]
        return ImageList.from_tensors(grids, self.backbone.size_divisibility).tensor

    def embed(self, batched_inputs, images):
        """Stride-1 embeddings ``(N, D, Hpad, Wpad)`` of normalised ``images`` (tiled when
        ``tile > 0``; the coordinates are tiled with the image)."""
        x = images.tensor
        if self.coord_conv is not None:
            x = torch.cat([x, self.coordinates(batched_inputs, images)], dim=1)

        def run(t):
            if self.coord_conv is not None:
                t = self.coord_conv(t)
            return self.sem_seg_head.layers(self.backbone(t))

        if self.tile <= 0:
            return run(x)
        return torch.cat(
            [
                sliding_window_apply(
                    run, x[i : i + 1], self.tile, self.tile_overlap, self.backbone.size_divisibility
                )
                for i in range(len(x))
            ]
        )

    def forward(self, batched_inputs):
        """Losses in training; ``[{"embedding": (D, H, W)}, ...]`` in inference."""
        images, _ = self.preprocess(batched_inputs)
        if self.training:
            if "ins_seg" not in batched_inputs[0]:
                raise ValueError("training inputs need 'ins_seg' instance pseudo-labels")
            labels = ImageList.from_tensors(
                [x["ins_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility,
                0,
            ).tensor
            emb = self.embed(batched_inputs, images).float()
            terms = [
                discriminative_loss(emb[i], labels[i], background=BACKGROUND_ID, **self.loss_args)
                for i in range(len(emb))
            ]
            return {
                f"loss_{k}": torch.stack([t[k] for t in terms]).mean()
                for k in ("var", "dist", "reg")
            }
        with torch.no_grad():
            emb = self.embed(batched_inputs, images)
        return [
            {"embedding": self.resize_output(emb[i], images.image_sizes[i], x)}
            for i, x in enumerate(batched_inputs)
        ]
