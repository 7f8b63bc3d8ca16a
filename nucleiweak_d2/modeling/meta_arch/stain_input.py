"""Inference-time stain normalisation carried by a model's weights.

The training mappers normalise each whole training image (``NUCLEIWEAK.DATA.STAIN_NORM``,
:func:`nucleiweak_d2.data.mapper.build_stain_steps`); a model trained on normalised colours must
see normalised colours at test time too, whoever calls it (the evaluator, ``tools/predict.py``,
the API on a slide tile). :class:`StainInputMixin` keeps the method and its fitted target as
persistent buffers (``stain_code``, ``stain_target``), so a checkpoint brings its own
normalisation, and normalises eval-mode input images with them.
"""

import numpy as np
import torch

from ...data.stain import StainNormalizer

__all__ = ["StainInputMixin", "stain_args_from_cfg", "model_normalises_stains"]


def stain_args_from_cfg(cfg):
    """``stain_method`` and ``stain_target`` (the fitted one) from ``cfg``, as keyword
    arguments of a model constructor that passes them to :meth:`StainInputMixin.init_stain_input`."""
    stain = cfg.NUCLEIWEAK.DATA.STAIN_NORM
    return {"stain_method": stain.METHOD, "stain_target": list(stain.TARGET)}


def model_normalises_stains(model):
    """Whether ``model`` or one of its submodules normalises stains at inference."""
    return any(isinstance(m, StainInputMixin) for m in model.modules())


class StainInputMixin:
    """Stain normalisation buffers and the eval-mode normalisation of input images.

    A model class lists it first among its bases (before the ``nn.Module``) and calls
    :meth:`init_stain_input` in its constructor, after ``nn.Module.__init__``.
    """

    # Stain normalisation methods by buffer code.
    STAIN_METHODS = StainNormalizer.METHODS
    # Length of the stain target buffer (Macenko's 8 values; Reinhard uses the first 6).
    STAIN_TARGET_SIZE = 8

    def init_stain_input(self, stain_method="none", stain_target=(), input_format="RGB"):
        """Register the buffers.

        Parameters
        ----------
        stain_method : str
            ``"none"``, ``"reinhard"`` or ``"macenko"``.
        stain_target : sequence of float
            Its flat target (empty while not fitted: the pipelines fit it before training, a
            checkpoint brings its own).
        input_format : str
            ``"RGB"`` or ``"BGR"``: channel order of the input images.
        """
        if stain_method not in self.STAIN_METHODS:
            raise ValueError(
                f"stain normalisation must be one of {self.STAIN_METHODS}, got {stain_method!r}"
            )
        if stain_method != "none" and input_format not in ("RGB", "BGR"):
            raise ValueError(
                f"stain normalisation needs INPUT.FORMAT RGB or BGR, got {input_format!r}"
            )
        target = torch.full((self.STAIN_TARGET_SIZE,), float("nan"))
        values = torch.as_tensor(list(stain_target), dtype=torch.float32).reshape(-1)
        if len(values) > self.STAIN_TARGET_SIZE:
            raise ValueError(f"stain target has {len(values)} values, at most 8 expected")
        target[: len(values)] = values
        self.register_buffer(
            "stain_code", torch.tensor(self.STAIN_METHODS.index(stain_method)), persistent=True
        )
        self.register_buffer("stain_target", target, persistent=True)
        self.input_format = str(input_format)
        self._stain_normalizer = None  # (code, target tuple, StainNormalizer), built lazily

    def stain_normalizer(self):
        """The :class:`StainNormalizer` of the buffers, or None (method "none").

        Raises
        ------
        ValueError
            A method without its fitted target (a model built for training, never trained).
        """
        code = int(self.stain_code)
        if code == 0:
            return None
        method = self.STAIN_METHODS[code]
        size = 6 if method == "reinhard" else 8
        values = self.stain_target.detach().cpu()[:size]
        if torch.isnan(values).any():
            raise ValueError(
                f"the model normalises stains ({method}) but has no fitted target: load trained "
                "weights, or set NUCLEIWEAK.DATA.STAIN_NORM.TARGET"
            )
        key = (code, tuple(values.tolist()))
        if self._stain_normalizer is None or self._stain_normalizer[:2] != key:
            self._stain_normalizer = (*key, StainNormalizer(method, list(key[1])))
        return self._stain_normalizer[2]

    def _normalise_stain(self, image, normalizer):
        """A ``(3, H, W)`` image in 0..255 (``input_format`` order) stain-normalised, as a float
        tensor on the image's device."""
        image = image.float()
        rgb = image[[2, 1, 0]] if self.input_format == "BGR" else image
        array = rgb.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        out = torch.from_numpy(normalizer(np.ascontiguousarray(array))).permute(2, 0, 1)
        out = out.to(device=image.device, dtype=image.dtype)
        return out[[2, 1, 0]] if self.input_format == "BGR" else out

    def stain_normalised(self, images):
        """``images`` (a list of ``(3, H, W)`` tensors) normalised in eval mode; unchanged in
        training (the mappers normalise the whole training image before cropping) and when the
        model has no stain method."""
        normalizer = None if self.training else self.stain_normalizer()
        if normalizer is None:
            return list(images)
        return [self._normalise_stain(x, normalizer) for x in images]
