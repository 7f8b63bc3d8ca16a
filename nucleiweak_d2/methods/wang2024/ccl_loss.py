"""CAM-guided contrastive loss of DoNuSeg (Sec. 2.3, Eq. 6 and 7). Pure torch.

Per image: anchors ``a+``/``a-`` are the means of the projected features ``Z`` over the nucleus
/ background pixels of the initial label M; positives and negatives are the nucleus /
background pixels of the selected pseudo-label P; the similarity is the cosine.

Choices the paper leaves open:

- the anchors are *not* detached: they are features of the same network, and gradient through
  them pulls the nucleus (background) pixels of M and of P together, which is what Sec. 2.3
  asks of the module;
- a term whose anchor or positive set is empty is 0; the batch loss is the mean over images;
- ``key_fraction < 1`` uses a random subset of the positive and negative pixels (memory),
  1.0 (the default) uses them all, as Eq. 7 is written.
"""

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "cam_contrastive_loss"]


def _nce(sim_pos, sim_neg, tau):
    """Eq. 7 from the cosines of the positives and negatives to the query."""
    if len(sim_pos) == 0:
        return sim_pos.sum() * 0.0
    sim_pos = sim_pos / tau
    if len(sim_neg):
        log_denominator = torch.logaddexp(sim_pos, torch.logsumexp(sim_neg / tau, dim=0))
    else:
        log_denominator = sim_pos
    return -(sim_pos - log_denominator).mean()


def info_nce(query, positives, negatives, tau=1.0):
    """Eq. 7: ``-1/|U| sum_u [phi(q,u)/tau - log(e^{phi(q,u)/tau} + sum_v e^{phi(q,v)/tau})]``.

    Parameters
    ----------
    query : torch.Tensor
        ``(D,)`` anchor ``q``.
    positives : torch.Tensor
        ``(P, D)`` the set ``U``.
    negatives : torch.Tensor
        ``(Q, D)`` the set ``V`` (may be empty: each term is then 0).
    tau : float
        Temperature.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (in the graph) when ``U`` is empty.
    """
    q = F.normalize(query, dim=0)
    return _nce(F.normalize(positives, dim=1) @ q, F.normalize(negatives, dim=1) @ q, tau)


def _keys(mask, fraction):
    """Indices where ``mask``; a random ``fraction`` of them."""
    idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
    if fraction < 1.0 and len(idx):
        keep = max(1, int(round(fraction * len(idx))))
        idx = idx[torch.randperm(len(idx), device=idx.device)[:keep]]
    return idx


def cam_contrastive_loss(features, initial_label, pseudo_label, alpha_p, tau=1.0, key_fraction=1.0):
    """Eq. 6: ``alpha_P (L_con(a+, S+, S-) + L_con(a-, S-, S+))``, averaged over images.

    Parameters
    ----------
    features : torch.Tensor
        ``(N, D, H, W)`` projected features Z at the resolution of the labels.
    initial_label, pseudo_label : torch.Tensor
        ``(N, H, W)`` M and P (0 background, 1 nucleus, 2 ignored).
    alpha_p : torch.Tensor
        ``(N,)`` similarity rate of P (a constant factor, detached).
    tau : float
        Temperature (paper: 1).
    key_fraction : float
        Fraction of the pixels of S+ and S- used, in (0, 1].

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    if not 0.0 < key_fraction <= 1.0:
        raise ValueError(f"key_fraction must lie in (0, 1], got {key_fraction}")
    losses = []
    for z, m, p, a in zip(features, initial_label, pseudo_label, alpha_p.detach()):
        z = z.flatten(1).t()  # (HW, D)
        unit = F.normalize(z, dim=1)  # cosines are dot products of unit vectors
        m, p = m.flatten(), p.flatten()
        pos, neg = _keys(p == 1, key_fraction), _keys(p == 0, key_fraction)
        loss = z.sum() * 0.0
        for value, same, other in ((1, pos, neg), (0, neg, pos)):
            if (m == value).any():
                sim = unit @ F.normalize(z[m == value].mean(dim=0), dim=0)
                loss = loss + _nce(sim[same], sim[other], tau)
        losses.append(a.to(loss.dtype) * loss)
    return torch.stack(losses).mean() if losses else features.sum() * 0.0
