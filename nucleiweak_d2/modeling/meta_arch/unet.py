"""Parts shared by the UNet meta-architectures: building (optional ImageNet encoder and
hematoxylin input channel), preprocessing, (tiled) stride-1 logits, output resizing, and
Detectron2 ``Instances`` from an instance map."""

import logging

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from scipy import ndimage as ndi

from ..backbone.fold_bn import fold_batchnorm, parameter_versions
from ..backbone.hematoxylin import hematoxylin_channel
from ..backbone.imagenet import imagenet_weights_from_cfg
from ..backbone.tiling import sliding_window_apply
from .stain_input import StainInputMixin, stain_args_from_cfg

logger = logging.getLogger(__name__)

__all__ = ["FLIP_CHOICES", "UNetModelMixin", "flip_averaged", "instances_from_map"]

#: Test-time flips allowed: none, left-right, both axes, the whole dihedral group.
FLIP_CHOICES = (1, 2, 4, 8)


def flip_averaged(fn, x, flips):
    """Mean of ``fn`` over flips of ``x``, each output mapped back to ``x``'s frame.

    Test-time augmentation, not in the papers: an ensemble of the network over the symmetries
    of the pixel grid, which H&E nuclei do not prefer. ``flips``: 1 (``fn(x)``), 2 (identity
    and left-right flip), 4 (also up-down and both) or 8 (also the four transposed, i.e. the
    eight rotations and reflections; a non-square ``x`` is run at ``(W, H)``).

    Parameters
    ----------
    fn : callable
        ``(N, C, H, W)`` tensor to ``(N, K, H, W)`` per-pixel outputs; flipping its input must
        flip its output and nothing else (class scores, not offsets or coordinates).
    x : torch.Tensor
        ``(N, C, H, W)`` input.
    flips : int
        1, 2, 4 or 8.
    """
    if flips not in FLIP_CHOICES:
        raise ValueError(f"flips must be 1, 2, 4 or 8, got {flips!r}")
    axes = [(), (3,), (2,), (2, 3)][: min(flips, 4)]
    total = None
    for transpose in (False, True)[: 2 if flips == 8 else 1]:
        xt = x.transpose(2, 3) if transpose else x
        for dims in axes:
            out = fn(xt.flip(dims) if dims else xt)
            out = out.flip(dims) if dims else out
            out = out.transpose(2, 3) if transpose else out
            total = out if total is None else total + out
    return total / flips


def instances_from_map(instance_map, prob):
    """Detectron2 ``Instances`` (dense ``pred_masks``) from an ``(H, W)`` int instance map.

    ``scores`` is the mean foreground probability of each object.
    """
    h, w = instance_map.shape
    n = int(instance_map.max())
    ids = np.arange(1, n + 1)
    masks = (
        torch.from_numpy(instance_map[None] == ids[:, None, None])
        if n
        else torch.zeros((0, h, w), dtype=torch.bool)
    )
    scores = ndi.mean(prob, instance_map, ids) if n else np.zeros(0)
    inst = Instances((h, w))
    inst.pred_masks = masks
    inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
    inst.scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    return inst


class UNetModelMixin(StainInputMixin):
    """Building, preprocessing and (tiled) logits shared by the UNet meta-architectures.

    Listed before :class:`SemanticSegmentor` in the bases, so that the meta-architecture's
    ``super().__init__`` / ``super().from_config`` come here first.

    Hematoxylin input (``NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT``): :meth:`preprocess` appends the
    standardised hematoxylin optical density
    (:func:`~nucleiweak_d2.modeling.backbone.hematoxylin.hematoxylin_channel`, computed from the
    input image in ``INPUT.FORMAT`` order) to the normalised image, and :meth:`from_config`
    builds the encoder with one more input channel; training, evaluation and the predictor get it
    through the model, no mapper changes. A meta-architecture whose forward feeds the backbone
    something else than :meth:`preprocess`'s image sets ``HEMATOXYLIN_INPUT_SUPPORTED = False``.

    Stain normalisation (``NUCLEIWEAK.DATA.STAIN_NORM``): the method and its fitted target are
    persistent buffers (``stain_code``, ``stain_target``, :class:`.stain_input.StainInputMixin`),
    so they are saved with the weights and a checkpoint brings its own normalisation to
    evaluation, ``tools/predict.py`` and the API. In eval mode :meth:`preprocess` normalises every input image (whole image, or each inference
    tile of a slide) with :class:`~nucleiweak_d2.data.stain.StainNormalizer`; in training the
    mappers normalise the whole image before cropping, so the model does not. A checkpoint
    written before these buffers existed loads without normalisation, its old behaviour.
    """

    # Whether the class's forward passes preprocess()'s images (with the extra channel) on.
    HEMATOXYLIN_INPUT_SUPPORTED = True
    # Whether the logits are per-pixel class scores that a flip of the input flips and nothing
    # else changes (false for offsets or coordinate-aware embeddings): NUCLEIWEAK.UNET.TEST_FLIPS.
    FLIP_TTA_SUPPORTED = True

    def __init__(
        self,
        *,
        hematoxylin_input=False,
        input_format="RGB",
        stain_method="none",
        stain_target=(),
        fast_cpu_inference=False,
        tile=0,
        tile_overlap=80,
        test_flips=1,
        **kwargs,
    ):
        """
        Parameters
        ----------
        hematoxylin_input : bool
            Append the hematoxylin channel to the normalised input (the backbone must take
            ``len(pixel_mean) + 1`` channels).
        input_format : str
            ``"RGB"`` or ``"BGR"``: channel order of the input images (read for the
            hematoxylin channel and the stain normalisation).
        stain_method : str
            ``"none"``, ``"reinhard"`` or ``"macenko"``: inference-time stain normalisation.
        stain_target : sequence of float
            Its flat target (empty while not fitted: the trainer fits it before training, a
            checkpoint brings its own).
        fast_cpu_inference : bool
            CPU inference in bfloat16 autocast with channels_last weights (see :meth:`logits`).
        tile, tile_overlap : int
            Sliding-window inference (``tile <= 0``: whole image) and the tiles' overlap in
            pixels.
        test_flips : int
            Eval-mode test-time augmentation (:meth:`logits`): the logits averaged over 1 (off),
            2, 4 or 8 flips and transposes of the input; only where ``FLIP_TTA_SUPPORTED``.
        **kwargs
            Those of :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        if hematoxylin_input and input_format not in ("RGB", "BGR"):
            raise ValueError(
                f"NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT needs INPUT.FORMAT RGB or BGR, got "
                f"{input_format!r}"
            )
        self.hematoxylin_input = bool(hematoxylin_input)
        self.init_stain_input(stain_method, stain_target, input_format)
        self.fast_cpu_inference = bool(fast_cpu_inference)
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)
        if int(test_flips) not in FLIP_CHOICES:
            raise ValueError(
                f"NUCLEIWEAK.UNET.TEST_FLIPS must be one of {FLIP_CHOICES}, got {test_flips!r}"
            )
        if int(test_flips) > 1 and not self.FLIP_TTA_SUPPORTED:
            raise ValueError(
                f"{type(self).__name__} does not support NUCLEIWEAK.UNET.TEST_FLIPS (its outputs "
                "are not flip-equivariant class scores); set it to 1"
            )
        self.test_flips = int(test_flips)

    @classmethod
    def from_config(cls, cfg):
        """:class:`SemanticSegmentor`'s arguments, with the UNet-specific building steps.

        The backbone takes ``len(MODEL.PIXEL_MEAN)`` channels, plus one with
        ``NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT``; ``NUCLEIWEAK.UNET.IMAGENET_WEIGHTS`` is loaded
        into the encoder
        (:func:`~nucleiweak_d2.modeling.backbone.imagenet.imagenet_weights_from_cfg`) before the
        head is built; the head keeps its random initialisation.
        """
        unet = cfg.NUCLEIWEAK.UNET
        hematoxylin = bool(unet.HEMATOXYLIN_INPUT)
        if hematoxylin and not cls.HEMATOXYLIN_INPUT_SUPPORTED:
            raise ValueError(
                f"{cls.__name__} does not support NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT; set it False"
            )
        channels = len(cfg.MODEL.PIXEL_MEAN) + (1 if hematoxylin else 0)
        backbone = build_backbone(cfg, ShapeSpec(channels=channels))
        loaded = imagenet_weights_from_cfg(cfg, backbone)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        if loaded is not None:
            logger.info(
                "ImageNet weights %s: %d encoder tensors loaded%s; random initialisation kept "
                "by the decoder (sem_seg_head, %d tensors)",
                unet.IMAGENET_WEIGHTS,
                len(loaded),
                " (stem.conv1 hematoxylin channel zero-initialised)" if hematoxylin else "",
                len(sem_seg_head.state_dict()),
            )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "hematoxylin_input": hematoxylin,
            "input_format": cfg.INPUT.FORMAT,
            **stain_args_from_cfg(cfg),
            "fast_cpu_inference": bool(unet.FAST_CPU_INFERENCE),
            "tile": unet.INFERENCE_TILE,
            "tile_overlap": unet.INFERENCE_OVERLAP,
            "test_flips": unet.TEST_FLIPS,
        }

    def preprocess(self, batched_inputs):
        """Return ``(normalised ImageList, raw ImageList in [0, 1])``, both zero-padded.

        In eval mode the images are first stain-normalised when the model has a stain method.

        With ``hematoxylin_input`` the normalised images carry a last channel, the standardised
        hematoxylin density of the raw image; the raw images keep their own channels.
        """
        raw = self.stain_normalised([x["image"].to(self.device).float() for x in batched_inputs])
        norm = [(x - self.pixel_mean) / self.pixel_std for x in raw]
        if getattr(self, "hematoxylin_input", False):
            norm = [
                torch.cat([n, hematoxylin_channel(x / 255.0, self.input_format)], dim=0)
                for n, x in zip(norm, raw)
            ]
        div = self.backbone.size_divisibility
        images = ImageList.from_tensors(norm, div)
        raw01 = ImageList.from_tensors([x / 255.0 for x in raw], div)
        return images, raw01

    def logits(self, images):
        """Stride-1 logits ``(N, C, Hpad, Wpad)``; tiled per image when ``tile > 0``.

        In eval mode on CPU with ``NUCLEIWEAK.UNET.FAST_CPU_INFERENCE`` (attribute
        ``fast_cpu_inference``, set by the meta-architecture's ``from_config``) the network
        runs as a channels_last copy with batch norm folded into the convolutions, under
        bfloat16 autocast; the logits are returned in float32.

        In eval mode with ``test_flips`` > 1 (``NUCLEIWEAK.UNET.TEST_FLIPS``) each image (each
        tile when tiled) is also run flipped left-right (2), and up-down and both (4), and the
        four transposed (8); the logits, mapped back, are averaged (:func:`flip_averaged`).
        """
        if (
            getattr(self, "fast_cpu_inference", False)
            and not self.training
            and images.tensor.device.type == "cpu"
        ):
            backbone, head = self._folded_networks()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._logits(images, backbone, head).float()
        return self._logits(images)

    def _folded_networks(self):
        """Channels_last copies of the backbone and head with batch norm folded into the
        convolutions (:func:`fold_batchnorm`), rebuilt when a weight changes (e.g. between the
        evaluations of a training run; the model's own buffers, e.g. a calibrated threshold,
        do not count)."""
        key = parameter_versions(self.backbone) + parameter_versions(self.sem_seg_head)
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            nets = [
                fold_batchnorm(net).to(memory_format=torch.channels_last)
                for net in (self.backbone, self.sem_seg_head)
            ]
            self.__dict__["_folded"] = cached = (key, *nets)  # not a submodule: no state_dict
        return cached[1], cached[2]

    def _logits(self, images, backbone=None, head=None):
        backbone = self.backbone if backbone is None else backbone
        head = self.sem_seg_head if head is None else head

        def net(x):
            return head.layers(backbone(x))

        flips = 1 if self.training else getattr(self, "test_flips", 1)

        def run(x):
            return flip_averaged(net, x, flips) if flips > 1 else net(x)

        if self.tile <= 0:
            return run(images.tensor)
        return torch.cat(
            [
                sliding_window_apply(
                    run,
                    images.tensor[i : i + 1],
                    self.tile,
                    self.tile_overlap,
                    self.backbone.size_divisibility,
                )
                for i in range(len(images.tensor))
            ]
        )

    def resize_output(self, result, image_size, input_per_image):
        """Crop padding and resize to the record's ``height``/``width``."""
        height = input_per_image.get("height", image_size[0])
        width = input_per_image.get("width", image_size[1])
        return sem_seg_postprocess(result, image_size, height, width)
