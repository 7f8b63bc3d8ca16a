"""Detectron2's ``GeneralizedRCNN`` with the inference-time stain normalisation of the recipe.

The base of the Mask R-CNN meta-architectures of the methods (Feng et al.'s model and its
baselines), so that ``NUCLEIWEAK.DATA.STAIN_NORM`` works for them as for the UNet methods:
the training mappers normalise each whole training image, the model normalises its eval-mode
inputs with the target saved in its weights (:class:`.stain_input.StainInputMixin`). With the
method ``"none"`` (the default) it is ``GeneralizedRCNN``.
"""

from detectron2.config import configurable
from detectron2.modeling import GeneralizedRCNN

from .stain_input import StainInputMixin, stain_args_from_cfg

__all__ = ["NucleiWeakStainRCNN"]


class NucleiWeakStainRCNN(StainInputMixin, GeneralizedRCNN):
    """``GeneralizedRCNN`` whose :meth:`preprocess_image` stain-normalises eval-mode images.

    Parameters
    ----------
    stain_method : str
        ``"none"``, ``"reinhard"`` or ``"macenko"`` (``NUCLEIWEAK.DATA.STAIN_NORM.METHOD``).
    stain_target : sequence of float
        Its fitted target (``NUCLEIWEAK.DATA.STAIN_NORM.TARGET``; a checkpoint brings its own).
    **kwargs
        Arguments of ``GeneralizedRCNN`` (its ``input_format`` gives the channel order).
    """

    @configurable
    def __init__(self, *, stain_method="none", stain_target=(), **kwargs):
        super().__init__(**kwargs)
        self.init_stain_input(stain_method, stain_target, self.input_format or "RGB")

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(stain_args_from_cfg(cfg))
        return ret

    def preprocess_image(self, batched_inputs):
        """``GeneralizedRCNN.preprocess_image`` of the stain-normalised images (eval mode)."""
        if self.training or int(self.stain_code) == 0:
            return super().preprocess_image(batched_inputs)
        images = self.stain_normalised([x["image"] for x in batched_inputs])
        return super().preprocess_image(
            [{**x, "image": image} for x, image in zip(batched_inputs, images)]
        )
