"""Config keys of the liu2022 method, under ``cfg.NUCLEIWEAK.LIU2022``.

Defaults are Liu et al.'s MoNuSeg (MultiOrgan) settings (ISBI 2022, section 3.2): adaptive
k-means lambda 0.2, L 60, d* 20; T_fg 0.5, T_bg 0.3; D 16; delta_v 0.5, delta_d 1.5 (margin 3,
see :mod:`.losses`), gamma 0.001, alpha 1; T_0 0.3, bandwidth 1.5; SPN Adam lr 1e-4,
IEN Adam lr 1e-3 without weight decay. TNBC: lambda 0.12, L 80, d* 18, T_bg 0.2, alpha 0.5.
Iteration counts are per stage; the YAML leaves set them. The networks' shared keys (encoder,
decoder, tiling, ``MIN_AREA``/``FILL_HOLES`` of the foreground, ``OUTPUT_INSTANCES``) are
``MODEL.*`` and ``NUCLEIWEAK.UNET``.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_liu2022_config"]


def add_liu2022_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.LIU2022`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.LIU2022 = CN()
    _L = _C.NUCLEIWEAK.LIU2022

    _L.CLUSTER = CN()
    # Global colour weight lambda of the adaptive k-means features (MoNuSeg 0.2, TNBC 0.12).
    _L.CLUSTER.LAMBDA = 0.2
    # Side L (pixels) of the patches around the points that estimate sigma_k (MoNuSeg 60).
    _L.CLUSTER.PATCH_SIZE = 60
    # Distance clip d* (pixels) of the k-means distance feature (MoNuSeg 20, TNBC 18).
    _L.CLUSTER.D_MAX = 20.0

    _L.SPN = CN()
    # Iterations of the SPN stage.
    _L.SPN.MAX_ITER = 2000
    # Learning rate of the SPN stage (paper: Adam 1e-4).
    _L.SPN.BASE_LR = 1e-4
    # Metric (key of the evaluator's results) that selects the SPN checkpoint on val.
    _L.SPN.SELECT_METRIC = "nuclei/AJI"

    _L.IEN = CN()
    # Dimension D of the instance embedding (paper: 16).
    _L.IEN.EMBED_DIM = 16
    # Append the CoordConv x, y channels (full-image coordinates) to the IEN input (paper: yes).
    _L.IEN.COORD_CONV = True
    # T_fg: SPN probability above which a training pixel is foreground (paper: 0.5).
    _L.IEN.T_FG = 0.5
    # T_bg: SPN probability at or below which a training pixel is background (MO 0.3, TNBC 0.2).
    _L.IEN.T_BG = 0.3
    # Foreground objects smaller than this (pixels) are dropped from the pseudo-labels (authors: 20).
    _L.IEN.LABEL_MIN_AREA = 20
    # Variance margin delta_v of the discriminative loss (paper: 0.5).
    _L.IEN.DELTA_V = 0.5
    # Distance margin delta_d (means are pushed 2 * delta_d apart; authors 1.5 = paper's margin 3).
    _L.IEN.DELTA_D = 1.5
    # Weight gamma of the regulariser (mean norm of the cluster means; paper: 0.001).
    _L.IEN.GAMMA = 0.001
    # Weight alpha of the background cluster and its pairs (MO 1, TNBC 0.5).
    _L.IEN.BG_WEIGHT = 1.0
    # Clusters with fewer pixels in a training crop are left out of the loss (authors: 10).
    _L.IEN.MIN_PIXELS = 10
    # Iterations of the IEN stage.
    _L.IEN.MAX_ITER = 2000
    # Learning rate of the IEN stage (paper: Adam 1e-3).
    _L.IEN.BASE_LR = 1e-3
    # Weight decay of the IEN stage (authors: 0).
    _L.IEN.WEIGHT_DECAY = 0.0
    # Start the IEN's encoder and decoder from the selected SPN (ours; paper: ImageNet encoder).
    _L.IEN.INIT_FROM_SPN = False
    # Val evaluation period of the IEN stage (it runs the grouping, slower than the SPN's); 0 = TEST.EVAL_PERIOD.
    _L.IEN.EVAL_PERIOD = 0
    # Metric that selects the IEN checkpoint (scored with the SPN, i.e. the final model) on val.
    _L.IEN.SELECT_METRIC = "nuclei/AJI"

    _L.INFERENCE = CN()
    # T_0: SPN probability above which a pixel is grouped (paper: 0.3).
    _L.INFERENCE.T0 = 0.3
    # Candidate T_0 values scored on the val split after training (the best replaces T0); [] = keep T0.
    _L.INFERENCE.T0_CANDIDATES = []
    # Mean-shift bandwidth of the grouping and distance that joins fragments across tiles (paper: 1.5).
    _L.INFERENCE.BANDWIDTH = 1.5
    # Largest side (pixels) of the tiles grouped separately (authors: 224, the crop); 0 = whole image.
    _L.INFERENCE.GROUP_TILE = 224
    # How a tile's background cluster is found: "fragments" (paper: the cluster with the most fragments) or "embedding" (ours: modes near the embedding of the SPN's background).
    _L.INFERENCE.BG_RULE = "fragments"
    # Candidate BG_RULE values scored on val with the T0 candidates after training (the best pair wins); [] = keep BG_RULE.
    _L.INFERENCE.BG_RULE_CANDIDATES = []
    # "fragments": a tile's cluster with the most fragments (at least this many) is background (authors: 5).
    _L.INFERENCE.BG_MIN_FRAGMENTS = 5
    # Points of the mean-shift subsample that seeds the modes (see grouping.mean_shift).
    _L.INFERENCE.SAMPLE_SIZE = 2048
