"""``NucleiWeakWang2024DoNuSeg``: DoNuSeg (Wang et al., MICCAI 2024) on Detectron2's FCOS.

An FPN-ResNet (``MODEL.BACKBONE.NAME``, ``build_nucleiweak_resnet_fpn_backbone``), the FCOS
head on the FPN levels (``MODEL.RETINANET`` keys) and three heads of :mod:`.heads`:

Training (from the annotated points of each augmented crop only)
    - L_det: FCOS losses on pseudo-boxes of the points (:mod:`.pseudo_boxes`). With partial
      points (``ignore_sources``), unmatched anchor points on ignored pixels are neither
      positive nor negative (:mod:`.fcos`), the ignored pixels being the foreground and ignore
      band of M (``"initial_label"``) and/or the foreground of P (``"pseudo_label"``), so that
      an unannotated nucleus near an annotated one (or one the CAM finds) is no negative;
    - L_seg: BCE of the segmentation Y against the initial label M (Eq. 1, :mod:`.targets`);
    - L_loc: MSE of the localisation head (point count per cell of the last encoder block);
    - L_dcs: the Grad-CAM of every encoder block (:mod:`.cam`) is binarised (theta), the one
      agreeing best with M (alpha, :mod:`.dcs`) is the pseudo-label P, Y is trained on it
      weighted by alpha (Eq. 5);
    - L_ccl: the projector's features Z are contrasted with anchors from M and keys from P
      (Eq. 6-7, :mod:`.ccl_loss`).

    L = w_det L_det + w_seg L_seg + w_loc L_loc + omega1 L_dcs + omega2 L_ccl (Eq. 2).

Inference
    FCOS boxes (score threshold, NMS) split the foreground ``Y > threshold`` into instances
    (:mod:`.instances`). Outputs per image: ``"instance_map"`` (H, W) int32, ``"prob"`` and
    ``"sem_seg"`` (1, H, W) nucleus probability, ``"pred_points"`` (the box centres of the
    instances, in pixel indices) and, with ``output_instances``, ``"instances"``
    (``pred_masks``, ``pred_boxes`` = the masks' boxes, ``scores`` = the detection scores,
    ``pred_classes``) for COCOEvaluator, and ``"detections"`` (the FCOS ``pred_boxes`` and
    ``scores`` above the score threshold, read by the pipeline's ``select_postprocess``).
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOSHead
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .cam import binarize_cam, grad_cam, normalize_cam
from .ccl_loss import cam_contrastive_loss
from .dcs import select_cam, similarity_rate
from .fcos import IgnoreAwareFCOS
from .heads import LocalizationHead, Projector, SegmentationHead
from .instances import SPLIT_RULES, UNBOXED_RULES
from .outputs import image_outputs
from .pseudo_boxes import BOX_RULES, point_boxes
from .seg_loss import dcs_loss, masked_bce
from .targets import initial_labels, point_count_map

__all__ = ["NucleiWeakWang2024DoNuSeg"]

IGNORE_SOURCES = ("initial_label", "pseudo_label")
LOSS_KEYS = ("det", "seg", "loc", "dcs", "ccl")


@META_ARCH_REGISTRY.register()
class NucleiWeakWang2024DoNuSeg(IgnoreAwareFCOS):
    """DoNuSeg; see the module docstring.

    Parameters
    ----------
    loc_head : LocalizationHead
    seg_head : SegmentationHead
    projector : Projector
    loc_in_feature : str
        Encoder block (bottom-up output) read by the localisation head.
    ccl_in_feature : str
        Encoder block or FPN level read by the projector.
    cam_blocks : sequence of str
        Encoder blocks whose CAMs compete in the dynamic selection.
    seg_in_features : sequence of str
        FPN levels of the segmentation head.
    r, d : float
        Radii of the initial label M.
    theta : float
        CAM binarisation threshold (Eq. 3).
    cam_norm_window : int
        0: CAMs scaled by their min and max over the image; odd > 0: by the local maximum in a
        window of that side (a deviation, see :func:`.cam.normalize_cam`).
    tau, key_fraction : float
        Contrastive loss temperature and fraction of keys.
    loss_weights : dict
        Weights of ``"det"``, ``"seg"``, ``"loc"``, ``"dcs"``, ``"ccl"``.
    box_rule, box_size, nn_factor, min_box_size, max_box_size
        Pseudo-boxes, see :func:`.pseudo_boxes.point_boxes`.
    ignore_sources : sequence of str
        Subset of ``("initial_label", "pseudo_label")``: where unmatched anchors are ignored.
    seg_threshold : float
        Foreground threshold of the nucleus probability at inference.
    split_rule, unboxed, keep_largest, min_area
        Instance split, see :func:`.instances.split_mask_by_boxes`.
    output_instances : bool
        Also return ``"instances"``.
    **kwargs
        Arguments of Detectron2's ``FCOS``.
    """

    @configurable
    def __init__(
        self,
        *,
        loc_head,
        seg_head,
        projector,
        loc_in_feature="res5",
        cam_blocks=("res2", "res3", "res4", "res5"),
        seg_in_features=("p2", "p3", "p4", "p5", "p6"),
        ccl_in_feature="res5",
        r=4.0,
        d=20.0,
        theta=0.8,
        cam_norm_window=0,
        tau=1.0,
        key_fraction=1.0,
        loss_weights=None,
        box_rule="nearest_neighbor",
        box_size=50.0,
        nn_factor=1.0,
        min_box_size=8.0,
        max_box_size=40.0,
        ignore_sources=(),
        seg_threshold=0.5,
        split_rule="nearest_center",
        unboxed="drop",
        keep_largest=True,
        min_area=10,
        output_instances=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        encoder = getattr(self.backbone, "bottom_up", None)
        if encoder is None:
            raise ValueError(
                "DoNuSeg needs an FPN backbone with a bottom_up encoder "
                f"(build_nucleiweak_resnet_fpn_backbone), got {type(self.backbone).__name__}"
            )
        fpn = self.backbone.output_shape()
        blocks = {loc_in_feature, *cam_blocks} | ({ccl_in_feature} - set(fpn))
        missing = sorted(
            b for b in blocks if b not in encoder.output_shape() or not hasattr(encoder, b)
        )
        if missing:
            raise ValueError(
                f"encoder blocks {missing} are not outputs of the bottom-up network "
                f"(MODEL.RESNETS.OUT_FEATURES: {sorted(encoder.output_shape())})"
            )
        strides = {k: v.stride for k, v in encoder.output_shape().items()}
        later = [b for b in cam_blocks if strides[b] > strides[loc_in_feature]]
        if later:
            raise ValueError(
                f"CAM blocks {later} come after the localisation head's input "
                f"{loc_in_feature!r}: their Grad-CAM does not exist"
            )
        unknown = set(seg_in_features) - set(fpn)
        if unknown:
            raise ValueError(f"segmentation head features {sorted(unknown)} are not FPN outputs")
        for name, value, allowed in (
            ("pseudo-box rule", box_rule, BOX_RULES),
            ("split rule", split_rule, SPLIT_RULES),
            ("unboxed rule", unboxed, UNBOXED_RULES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if set(ignore_sources) - set(IGNORE_SOURCES):
            raise ValueError(
                f"FCOS ignore sources must be among {IGNORE_SOURCES}, got {list(ignore_sources)}"
            )
        if not 0.5 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0.5, 1], got {theta}")
        self.loc_head, self.seg_head, self.projector = loc_head, seg_head, projector
        self.loc_in_feature, self.ccl_in_feature = loc_in_feature, ccl_in_feature
        self.cam_blocks, self.seg_in_features = list(cam_blocks), list(seg_in_features)
        self._blocks = sorted(blocks)
        self.r, self.d, self.theta = float(r), float(d), float(theta)
        if cam_norm_window < 0 or (cam_norm_window and cam_norm_window % 2 == 0):
            raise ValueError(
                f"NUCLEIWEAK.WANG2024.CAM.NORM_WINDOW must be 0 or odd, got {cam_norm_window}"
            )
        self.cam_norm_window = int(cam_norm_window)
        self.tau, self.key_fraction = float(tau), float(key_fraction)
        self.loss_weights = {k: 1.0 for k in LOSS_KEYS}
        self.loss_weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.box_rule = box_rule
        self.box_args = dict(
            size=float(box_size),
            nn_factor=float(nn_factor),
            min_size=float(min_box_size),
            max_size=float(max_box_size),
        )
        self.ignore_sources = tuple(ignore_sources)
        self.seg_threshold = float(seg_threshold)
        self.split_args = dict(
            rule=split_rule,
            unboxed=unboxed,
            keep_largest=bool(keep_largest),
            min_area=int(min_area),
        )
        self.output_instances = bool(output_instances)

    @classmethod
    def from_config(cls, cfg):
        w, ret = cfg.NUCLEIWEAK.WANG2024, cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        in_features = list(ret.IN_FEATURES)
        head = FCOSHead(
            input_shape=[shapes[f] for f in in_features],
            conv_dims=[shapes[in_features[0]].channels] * ret.NUM_CONVS,
            num_classes=ret.NUM_CLASSES,
            norm=ret.NORM,
            prior_prob=ret.PRIOR_PROB,
        )
        encoder = backbone.bottom_up.output_shape() if hasattr(backbone, "bottom_up") else {}

        def channels(name, fpn_ok=False):
            if fpn_ok and name in shapes:
                return shapes[name].channels
            if name not in encoder:
                raise ValueError(f"{name!r} is not an encoder output (MODEL.RESNETS.OUT_FEATURES)")
            return encoder[name].channels

        fpn_channels = shapes[w.SEG.IN_FEATURES[0]].channels
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": in_features,
            "num_classes": ret.NUM_CLASSES,
            "center_sampling_radius": w.FCOS.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": ret.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": ret.FOCAL_LOSS_GAMMA,
            "test_score_thresh": ret.SCORE_THRESH_TEST,
            "test_topk_candidates": ret.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": ret.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loc_head": LocalizationHead(channels(w.LOC.IN_FEATURE), w.LOC.HIDDEN_DIM),
            "seg_head": SegmentationHead(fpn_channels, w.SEG.CONV_DIM, w.SEG.NUM_CONVS, w.SEG.NORM),
            "projector": Projector(
                channels(w.CCL.IN_FEATURE, fpn_ok=True),
                w.CCL.CONV_DIM,
                w.CCL.MLP_DIM,
                w.CCL.OUT_DIM,
                w.SEG.NORM,
            ),
            "loc_in_feature": w.LOC.IN_FEATURE,
            "cam_blocks": list(w.CAM.BLOCKS),
            "seg_in_features": list(w.SEG.IN_FEATURES),
            "ccl_in_feature": w.CCL.IN_FEATURE,
            "r": w.R,
            "d": w.D,
            "theta": w.CAM.THETA,
            "cam_norm_window": w.CAM.NORM_WINDOW,
            "tau": w.CCL.TAU,
            "key_fraction": w.CCL.KEY_FRACTION,
            "loss_weights": {
                "det": w.LOSS.DET_WEIGHT,
                "seg": w.LOSS.SEG_WEIGHT,
                "loc": w.LOSS.LOC_WEIGHT,
                "dcs": w.LOSS.DCS_WEIGHT,
                "ccl": w.LOSS.CCL_WEIGHT,
            },
            "box_rule": w.BOXES.RULE,
            "box_size": w.BOXES.SIZE,
            "nn_factor": w.BOXES.NN_FACTOR,
            "min_box_size": w.BOXES.MIN_SIZE,
            "max_box_size": w.BOXES.MAX_SIZE,
            "ignore_sources": list(w.FCOS.IGNORE),
            "seg_threshold": w.SEG.THRESHOLD,
            "split_rule": w.INSTANCES.SPLIT_RULE,
            "unboxed": w.INSTANCES.UNBOXED,
            "keep_largest": w.INSTANCES.KEEP_LARGEST,
            "min_area": w.INSTANCES.MIN_AREA,
            "output_instances": w.INSTANCES.OUTPUT_INSTANCES,
        }

    # ------------------------------------------------------------------ features
    def _features(self, images):
        """FPN features, plus (training) the encoder blocks' outputs kept in the graph.

        The blocks are read with forward hooks on the bottom-up stages; the output of a frozen
        block (``MODEL.BACKBONE.FREEZE_AT``) is made to require grad so its Grad-CAM exists.
        """
        if not self.training:
            return self.backbone(images), {}
        encoder, handles = {}, []

        def keep(name):
            def hook(module, inputs, output):
                if not output.requires_grad:
                    output.requires_grad_()
                encoder[name] = output

            return hook

        for name in self._blocks:
            handles.append(getattr(self.backbone.bottom_up, name).register_forward_hook(keep(name)))
        try:
            features = self.backbone(images)
        finally:
            for h in handles:
                h.remove()
        return features, encoder

    def forward(self, batched_inputs):
        """Losses in training, a list of output dicts (module docstring) in inference."""
        images = self.preprocess_image(batched_inputs)
        features, encoder = self._features(images.tensor)
        predictions = self.head([features[f] for f in self.head_in_features])
        seg_logits = self.seg_head(
            [features[f] for f in self.seg_in_features], images.tensor.shape[-2:]
        )
        if not self.training:
            return self.inference(batched_inputs, images, features, predictions, seg_logits)
        if "instances" not in batched_inputs[0] or not batched_inputs[0]["instances"].has(
            "gt_points"
        ):
            raise ValueError(
                "training inputs need 'instances' with gt_points (NUCLEIWEAK.MAPPER: "
                "NucleiDatasetMapper)"
            )
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        losses, labels = self.weak_losses(images, {**features, **encoder}, seg_logits, gt)
        ignore_maps = self.ignore_maps(
            labels["initial_label"], labels["pseudo_label"], labels["valid"]
        )
        det = self.detection_losses(images, features, predictions, gt, ignore_maps)
        losses.update({k: self.loss_weights["det"] * v for k, v in det.items()})
        return losses

    # ------------------------------------------------------------------ training
    def weak_losses(self, images, feats, seg_logits, gt):
        """L_seg, L_loc, L_dcs, L_ccl (weighted), and the labels of the batch.

        Parameters
        ----------
        images : ImageList
        feats : dict
            FPN levels and encoder blocks (the latter in the graph) by name.
        seg_logits : torch.Tensor
            ``(N, H, W)`` segmentation logits at the padded input size.
        gt : list of Instances
            With ``gt_points``.

        Returns
        -------
        losses : dict
        labels : dict
            ``initial_label`` M, ``pseudo_label`` P (``(N, H, W)`` uint8, 0/1/2 = ignored),
            ``valid`` (``(N, H, W)`` bool, the image pixels, not the padding), and every
            block's raw Grad-CAM ``cams`` (list of ``(N, h_k, w_k)``) and binarised CAM
            ``binary_cams`` (``(N, K, H, W)``) with its ``alpha`` (``(N, K)``), which
            ``benchmarks/wang2024_cam_quality.py`` scores.
        """
        size = tuple(images.tensor.shape[-2:])
        valid = torch.zeros((len(gt), *size), dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(images.image_sizes):
            valid[i, :h, :w] = True
        points = [inst.gt_points for inst in gt]
        m = initial_labels(points, images.image_sizes, size, self.r, self.d, self.device)

        loc = self.loc_head(feats[self.loc_in_feature])
        stride = self.backbone.bottom_up.output_shape()[self.loc_in_feature].stride
        loss_loc = F.mse_loss(loc, point_count_map(points, loc.shape[-2:], stride, self.device))
        cams = grad_cam(loc.sum(dim=(1, 2, 3)), [feats[b] for b in self.cam_blocks])
        binary = torch.stack(
            [
                binarize_cam(
                    normalize_cam(c, size, valid, window=self.cam_norm_window), self.theta, valid
                )
                for c in cams
            ],
            dim=1,
        )
        alpha = similarity_rate(binary, m)
        p, alpha_p, index = select_cam(binary, alpha)

        z = self.projector(feats[self.ccl_in_feature], size)
        w = self.loss_weights
        losses = {
            "loss_seg": w["seg"] * masked_bce(seg_logits, m),
            "loss_loc": w["loc"] * loss_loc,
            "loss_dcs": w["dcs"] * dcs_loss(seg_logits, p, alpha_p),
            "loss_ccl": w["ccl"]
            * cam_contrastive_loss(z, m, p, alpha_p, self.tau, self.key_fraction),
        }
        storage = get_event_storage()
        storage.put_scalar("wang2024/alpha_p", alpha_p.mean().item())
        for k, block in enumerate(self.cam_blocks):
            storage.put_scalar(f"wang2024/selected_{block}", (index == k).float().mean().item())
        labels = {"initial_label": m, "pseudo_label": p, "valid": valid}
        return losses, {**labels, "cams": cams, "binary_cams": binary, "alpha": alpha}

    def ignore_maps(self, initial_label, pseudo_label, valid):
        """Per image, the pixels where unmatched anchor points are ignored: M's foreground and
        ignore band (``"initial_label"``: within d of an annotated point) and/or P's foreground
        (``"pseudo_label"``). The padding stays negative, as in FCOS."""
        ignore = torch.zeros_like(valid)
        if "initial_label" in self.ignore_sources:
            ignore |= (initial_label != 0) & valid
        if "pseudo_label" in self.ignore_sources:
            ignore |= pseudo_label == 1
        return list(ignore)

    def detection_losses(self, images, features, predictions, gt, ignore_maps):
        """FCOS losses on the pseudo-boxes, with ignored anchors."""
        targets = []
        for inst, size in zip(gt, images.image_sizes):
            t = Instances(inst.image_size)
            t.gt_boxes = point_boxes(
                inst.gt_points,
                size,
                self.box_rule,
                given=inst.gt_boxes if inst.has("gt_boxes") else None,
                **self.box_args,
            )
            t.gt_classes = inst.gt_classes
            targets.append(t)
        logits, deltas, ctrness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator([features[f] for f in self.head_in_features])
        gt_labels, gt_boxes = self.label_anchors(anchors, targets, ignore_maps)
        return self.losses(anchors, logits, gt_labels, deltas, gt_boxes, ctrness)

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs, images, features, predictions, seg_logits):
        """Detections split the foreground into instances; one output dict per image."""
        detections = self.forward_inference(
            images, [features[f] for f in self.head_in_features], predictions
        )
        outputs = []
        for i, (inp, size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            det = detector_postprocess(detections[i], height, width)
            prob = torch.sigmoid(sem_seg_postprocess(seg_logits[i : i + 1], size, height, width))[0]
            out = image_outputs(
                prob, det, self.seg_threshold, self.split_args, self.output_instances
            )
            out["detections"] = det  # the FCOS boxes and scores (post-processing on val)
            outputs.append(out)
        return outputs
