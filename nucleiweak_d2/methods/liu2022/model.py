"""``NucleiWeakLiu2022Model``: SPN + IEN in one meta-architecture (Liu et al.'s full model).

Design: the final model holds both networks as sub-modules, ``spn`` (the shared
``NucleiWeakUNetSegmentor``, 2 classes) and ``ien`` (:class:`~.embedding.NucleiWeakLiu2022EmbeddingNet`),
so one state dict (keys ``spn.*`` and ``ien.*``) is the whole trained model and
``--eval-only MODEL.WEIGHTS <file>`` needs nothing else.

The IEN stage trains *this* model: the SPN is frozen (``requires_grad`` off, always in eval
mode, so its batch-norm statistics stay), training steps run the IEN's loss only, and the
periodic val evaluation scores the full inference, so the checkpoint kept on val
(``model_best.pth``) is the final model. The pipeline passes the trained SPN
(``spn_weights``) and the IEN's initial encoder weights (``ien_weights``) as constructor
arguments; a model built for evaluation gets neither and loads one checkpoint.

Inference per image (paper, section 2.1): the SPN probability ``P``; the foreground
``P > T_0`` with objects smaller than ``min_area`` removed and holes filled (the authors'
post-cutoff cleaning); the IEN embeddings of the foreground grouped by mean-shift
(:func:`~.instances.group_foreground`). Outputs: ``"prob"`` (H, W), ``"sem_seg"`` (2, H, W)
SPN class probabilities, ``"instance_map"`` (H, W) int32 and, with ``output_instances``,
``"instances"`` (dense ``pred_masks``) - the same outputs as every UNet method, so
``NucleiEvaluator`` scores it.
"""

import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...engine.predictor import load_trained_weights
from ...modeling.meta_arch.postprocess import instances_from_foreground
from ...modeling.meta_arch.segmentor import NucleiWeakUNetSegmentor
from ...modeling.meta_arch.unet import instances_from_map
from .embedding import NucleiWeakLiu2022EmbeddingNet
from .grouping import mean_shift
from .instances import check_bg_rule, group_foreground

__all__ = ["NucleiWeakLiu2022Model"]


@META_ARCH_REGISTRY.register()
class NucleiWeakLiu2022Model(nn.Module):
    """SPN + IEN (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        spn,
        ien,
        fg_threshold=0.3,
        bandwidth=1.5,
        group_tile=224,
        bg_rule="fragments",
        bg_min_fragments=5,
        t_bg=0.3,
        sample_size=2048,
        min_area=20,
        fill_holes=True,
        output_instances=True,
        spn_weights="",
        ien_weights="",
    ):
        """
        Parameters
        ----------
        spn : NucleiWeakUNetSegmentor
            Semantic proposal network (2 classes); frozen here.
        ien : NucleiWeakLiu2022EmbeddingNet
            Instance encoding network.
        fg_threshold : float
            ``T_0``: SPN probability above which a pixel is grouped.
        bandwidth, group_tile, bg_rule, bg_min_fragments, sample_size
            Grouping, see :func:`~.instances.group_foreground` and :func:`~.grouping.mean_shift`.
        t_bg : float
            ``bg_rule="embedding"``: pixels whose SPN probability is at most this are the
            background reference (``IEN.T_BG``, the threshold of the IEN's background label).
        min_area, fill_holes
            Cleaning of the foreground before grouping and of the instances after it.
        output_instances : bool
            Also return ``"instances"`` (one dense mask per object).
        spn_weights : str
            Trained SPN checkpoint loaded into ``spn`` (the IEN stage passes it); "" = none.
        ien_weights : str
            Initial weights of ``ien`` (e.g. ImageNet encoder), loaded leniently; "" = none.
        """
        super().__init__()
        self.spn, self.ien = spn, ien
        self.fg_threshold, self.bandwidth = float(fg_threshold), float(bandwidth)
        self.group_tile, self.bg_min_fragments = int(group_tile), int(bg_min_fragments)
        self.bg_rule, self.t_bg = str(check_bg_rule(bg_rule)), float(t_bg)
        self.sample_size = int(sample_size)
        self.min_area, self.fill_holes = int(min_area), bool(fill_holes)
        self.output_instances = bool(output_instances)
        #: mean-shift of the grouping (``select_t0`` sets a :class:`~.grouping.MemoClusterer`)
        self.clusterer = mean_shift
        if spn_weights:
            load_trained_weights(self.spn, spn_weights)  # strict: the whole trained SPN
        if ien_weights:
            DetectionCheckpointer(self.ien).load(ien_weights)  # lenient: initialisation
        for p in self.spn.parameters():
            p.requires_grad_(False)
        self.spn.eval()

    @classmethod
    def from_config(cls, cfg):
        spn_cfg = cfg.clone()
        spn_cfg.defrost()
        spn_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
        inf, unet = cfg.NUCLEIWEAK.LIU2022.INFERENCE, cfg.NUCLEIWEAK.UNET
        return {
            "spn": NucleiWeakUNetSegmentor(spn_cfg),
            "ien": NucleiWeakLiu2022EmbeddingNet(cfg),
            "fg_threshold": inf.T0,
            "bandwidth": inf.BANDWIDTH,
            "group_tile": inf.GROUP_TILE,
            "bg_rule": inf.BG_RULE,
            "bg_min_fragments": inf.BG_MIN_FRAGMENTS,
            "t_bg": cfg.NUCLEIWEAK.LIU2022.IEN.T_BG,
            "sample_size": inf.SAMPLE_SIZE,
            "min_area": unet.MIN_AREA,
            "fill_holes": unet.FILL_HOLES,
            "output_instances": unet.OUTPUT_INSTANCES,
        }

    @property
    def device(self):
        return self.ien.device

    def train(self, mode=True):
        """Set the IEN's mode; the frozen SPN always stays in eval mode."""
        super().train(mode)
        self.spn.eval()
        return self

    def forward(self, batched_inputs):
        """IEN losses in training; a list of output dicts (module docstring) in inference."""
        if self.training:
            return self.ien(batched_inputs)
        images, _ = self.spn.preprocess(batched_inputs)
        with torch.no_grad():
            spn_logits = self.spn.logits(images)
            emb = self.ien.embed(batched_inputs, images)
        outputs = []
        for i, x in enumerate(batched_inputs):
            size = images.image_sizes[i]
            scores = F.softmax(self.spn.resize_output(spn_logits[i], size, x).float(), dim=0)
            embedding = self.ien.resize_output(emb[i], size, x).float()
            outputs.append(self.inference_single(scores, embedding))
        return outputs

    def inference_single(self, scores, embedding):
        """Outputs of one image from its SPN class probabilities and its embeddings."""
        prob = scores[1]
        fg = (
            instances_from_foreground(
                (prob > self.fg_threshold).cpu().numpy(), self.min_area, self.fill_holes
            )
            > 0
        )
        inst_map = group_foreground(
            embedding,
            fg,
            bandwidth=self.bandwidth,
            tile=self.group_tile,
            bg_rule=self.bg_rule,
            bg_min_fragments=self.bg_min_fragments,
            background=(prob <= self.t_bg).cpu().numpy() if self.bg_rule == "embedding" else None,
            min_area=self.min_area,
            fill_holes=self.fill_holes,
            clusterer=self.clusterer,
            sample_size=self.sample_size,
        )
        out = {"sem_seg": scores, "prob": prob, "instance_map": torch.from_numpy(inst_map)}
        if self.output_instances:
            out["instances"] = instances_from_map(inst_map, prob.cpu().numpy())
        return out
