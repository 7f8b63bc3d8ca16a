"""Fast mean-shift against scikit-learn's MeanShift, and the instance map built from it."""

import numpy as np
import pytest
import torch

from nucleiweak_d2.methods.liu2022.grouping import MemoClusterer, mean_shift
from nucleiweak_d2.methods.liu2022.instances import group_foreground, tile_edges


def blobs(seed, n_clusters=12, dim=16, std=0.15, spread=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * spread
    sizes = rng.integers(5, 80, n_clusters)
    x = np.concatenate([c + rng.normal(size=(s, dim)) * std for c, s in zip(centres, sizes)])
    truth = np.repeat(np.arange(n_clusters), sizes)
    return x.astype(np.float32), truth


@pytest.mark.parametrize("seed", [0, 1])
def test_same_grouping_as_sklearn_on_separated_blobs(seed):
    from sklearn.cluster import MeanShift
    from sklearn.metrics import adjusted_rand_score

    x, truth = blobs(seed)
    ref = MeanShift(bandwidth=1.5).fit(x)
    labels, centres = mean_shift(x, 1.5, sample_size=128)  # a subsample smaller than the data
    assert adjusted_rand_score(ref.labels_, labels) == 1.0
    assert adjusted_rand_score(truth, labels) == 1.0
    # the same modes (up to order), at the same places
    order = np.argsort(centres[:, 0])
    ref_c = ref.cluster_centers_[np.argsort(ref.cluster_centers_[:, 0])]
    np.testing.assert_allclose(centres[order], ref_c, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_tensors_group_as_on_the_cpu(seed):
    """Regression: the climb's merge of seeds used a bool scatter_reduce, which CUDA lacks."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from sklearn.metrics import adjusted_rand_score

    x, truth = blobs(seed)
    cpu_labels, cpu_centres = mean_shift(torch.from_numpy(x), 1.5, sample_size=128)
    labels, centres = mean_shift(torch.from_numpy(x).cuda(), 1.5, sample_size=128)
    assert adjusted_rand_score(np.asarray(cpu_labels), np.asarray(labels)) == 1.0
    assert adjusted_rand_score(truth, np.asarray(labels)) == 1.0
    order, cpu_order = np.argsort(centres[:, 0]), np.argsort(cpu_centres[:, 0])
    np.testing.assert_allclose(centres[order], cpu_centres[cpu_order], atol=1e-4)


def bridges(seed, n_clusters=8, dim=16):
    """Compact clusters, a background cluster, and points spread along the segments between
    each cluster and the background (pixels between a nucleus and the background): there
    scikit-learn's modes sit on plateaux and depend on every point."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters + 1, dim)) * 2.0
    parts = [c + rng.normal(size=(30, dim)) * 0.1 for c in centres]
    for c in centres[1:]:
        t = rng.uniform(0, 1, size=(25, 1))
        parts.append(t * c + (1 - t) * centres[0] + rng.normal(size=(25, dim)) * 0.1)
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_same_grouping_as_sklearn_between_clusters(seed):
    from sklearn.cluster import MeanShift
    from sklearn.metrics import adjusted_rand_score

    x = bridges(seed)
    ref = MeanShift(bandwidth=1.5).fit(x)
    labels, centres = mean_shift(x, 1.5, sample_size=64)
    assert len(ref.cluster_centers_) > 9  # the bridges hold modes of their own
    assert adjusted_rand_score(ref.labels_, labels) >= 0.98


def test_small_cluster_missed_by_the_subsample_is_recovered():
    x, _ = blobs(3, n_clusters=4)
    lonely = np.full((2, 16), 20.0, dtype=np.float32)  # two points, far from everything
    x = np.concatenate([x, lonely])
    labels, centres = mean_shift(x, 1.5, sample_size=8, random_state=0)
    assert len(centres) == 5
    assert labels[-1] == labels[-2] and (labels[:-2] != labels[-1]).all()


def test_degenerate_inputs():
    labels, centres = mean_shift(np.zeros((0, 4)), 1.5)
    assert labels.shape == (0,) and centres.shape == (0, 4)
    labels, centres = mean_shift(np.ones((7, 3)), 1.5)
    assert (labels == 0).all() and len(centres) == 1
    with pytest.raises(ValueError, match="bandwidth"):
        mean_shift(np.ones((3, 2)), 0)
    with pytest.raises(ValueError, match="NaN"):
        mean_shift(np.array([[0.0, np.nan]]), 1.5)


def test_instances_from_embeddings_across_tiles_and_background_removal():
    """Two nuclei with distinct embeddings, one of them cut by the tile seam at x = 20; a
    background-like cluster scattered in 6 specks is removed (>= 5 fragments)."""
    h, w = 40, 40
    emb = torch.zeros(2, h, w)
    fg = np.zeros((h, w), dtype=bool)
    fg[5:15, 14:27] = True  # nucleus A, across the seam between tiles
    emb[:, 5:15, 14:27] = torch.tensor([3.0, 0.0])[:, None, None]
    fg[25:35, 5:12] = True  # nucleus B
    emb[:, 25:35, 5:12] = torch.tensor([0.0, 3.0])[:, None, None]
    fg[25:35, 12:16] = True  # nucleus C touches B, other embedding
    emb[:, 25:35, 12:16] = torch.tensor([6.0, 6.0])[:, None, None]
    for k in range(6):  # 6 background specks in the bottom-left tile
        fg[22 + 3 * k, 0:2] = True
        emb[:, 22 + 3 * k, 0:2] = torch.tensor([-5.0, -5.0])[:, None]
    label = group_foreground(emb, fg, bandwidth=1.5, tile=20, bg_min_fragments=5, min_area=1)
    assert label.max() == 3
    assert len(np.unique(label[5:15, 14:27])) == 1 and label[5, 14] > 0  # stitched across the seam
    assert label[30, 8] != label[30, 13] and label[30, 8] > 0 and label[30, 13] > 0
    assert (label[22:40, 0:2] == 0).all()  # background cluster removed
    kept = group_foreground(emb, fg, bandwidth=1.5, tile=20, bg_min_fragments=0, min_area=1)
    assert kept.max() == 3 + 6
    assert list(tile_edges(1000, 224)) == [0, 200, 400, 600, 800, 1000]
    assert list(tile_edges(50, 0)) == [0, 50]


def test_group_foreground_takes_another_clusterer():
    """A clusterer that puts every point in one cluster gives the foreground's connected
    components (no background removal); scikit-learn's MeanShift gives the default's map."""
    emb = torch.zeros(2, 30, 30)
    fg = np.zeros((30, 30), dtype=bool)
    fg[2:8, 2:8] = fg[2:8, 8:14] = True  # two touching squares: one component
    emb[0, 2:8, 8:14] = 4.0  # ... with two embeddings
    fg[20:26, 20:26] = True
    calls = []

    def one_cluster(points, bandwidth, **kwargs):
        calls.append((tuple(points.shape), bandwidth, kwargs))
        return np.zeros(len(points), dtype=np.int64), np.zeros((1, points.shape[1]))

    label = group_foreground(
        emb,
        fg,
        bandwidth=1.5,
        tile=0,
        bg_min_fragments=0,
        min_area=1,
        clusterer=one_cluster,
        sample_size=7,
    )
    assert calls == [((int(fg.sum()), 2), 1.5, {"sample_size": 7})]
    assert label.max() == 2 and label[4, 4] == label[4, 10] != label[22, 22]
    default = group_foreground(emb, fg, bandwidth=1.5, tile=0, bg_min_fragments=0, min_area=1)
    assert default.max() == 3 and default[4, 4] != default[4, 10]

    cluster = pytest.importorskip("sklearn.cluster")

    def sklearn_ms(points, bandwidth):
        ms = cluster.MeanShift(bandwidth=bandwidth).fit(np.asarray(points))
        return ms.labels_, ms.cluster_centers_

    ref = group_foreground(
        emb, fg, bandwidth=1.5, tile=0, bg_min_fragments=0, min_area=1, clusterer=sklearn_ms
    )
    assert (ref == default).all()


def test_embedding_rule_removes_the_cluster_of_the_background_embedding():
    """Four nuclei of one tile share an embedding (an under-trained IEN): the paper's rule
    removes them as the cluster with the most fragments; the embedding rule keeps them and
    removes the specks whose embedding is that of the SPN's background pixels."""
    h, w = 40, 40
    emb = torch.zeros(2, h, w)
    emb[:] = torch.tensor([-5.0, -5.0])[:, None, None]  # the IEN's background embedding
    fg = np.zeros((h, w), dtype=bool)
    for y, x in [(3, 3), (3, 20), (20, 3), (20, 20)]:  # four nuclei, one shared embedding
        fg[y : y + 8, x : x + 8] = True
        emb[:, y : y + 8, x : x + 8] = torch.tensor([3.0, 0.0])[:, None, None]
    fg[32:34, 32:34] = fg[36:38, 30:32] = True  # two background specks in the foreground
    background = ~fg
    background[30:40, 28:40] = False  # no reference pixels right around the specks
    args = {"bandwidth": 1.5, "tile": 0, "min_area": 1}
    paper = group_foreground(emb, fg, bg_rule="fragments", bg_min_fragments=4, **args)
    assert paper[5, 5] == 0 and paper.max() == 2  # the nuclei were taken for background
    ours = group_foreground(emb, fg, bg_rule="embedding", background=background, **args)
    assert ours.max() == 4 and (ours[32:38, 30:34] == 0).all()
    assert len({ours[5, 5], ours[5, 22], ours[22, 5], ours[22, 22]}) == 4
    # no background pixel in the tile, or no reference given: nothing is removed
    assert group_foreground(emb, fg, bg_rule="embedding", **args).max() == 6
    none = np.zeros((h, w), dtype=bool)
    assert group_foreground(emb, fg, bg_rule="embedding", background=none, **args).max() == 6
    with pytest.raises(ValueError, match="bg_rule"):
        group_foreground(emb, fg, bg_rule="largest", **args)
    with pytest.raises(ValueError, match="background"):
        group_foreground(emb, fg, bg_rule="embedding", background=none[:5], **args)


def test_memo_clusterer_groups_each_point_set_once():
    """select_t0's clusterer: the same points give the wrapped mean-shift's result, computed
    once; other points or another bandwidth are clustered anew; results are copies."""
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(0, 0.2, (80, 4)), rng.normal(3, 0.2, (60, 4))])
    a = a.astype(np.float32)
    memo = MemoClusterer()
    first = memo(torch.from_numpy(a), 1.5, sample_size=64)
    ref = mean_shift(a, 1.5, sample_size=64)
    for got, want in zip(first, ref):
        np.testing.assert_array_equal(got, want)
    first[0][:] = 7  # the caller's copy; the memory is untouched
    again = memo(torch.from_numpy(a.copy()), 1.5, sample_size=64)
    np.testing.assert_array_equal(again[0], ref[0])
    assert (memo.calls, memo.hits) == (1, 1)
    memo(a, 1.0, sample_size=64)  # another bandwidth
    memo(a[:-1], 1.5, sample_size=64)  # other points
    memo(a, 1.5, sample_size=32)  # other arguments
    assert (memo.calls, memo.hits) == (4, 1)
    # group_foreground through the memo: the same map, and a second pass clusters nothing
    emb = torch.zeros(4, 20, 30)
    emb[0, :, 15:] = 3.0
    fg = np.ones((20, 30), bool)
    fg[:, 14:16] = False
    memo = MemoClusterer()
    want = group_foreground(emb, fg, tile=16, bg_rule="fragments", bg_min_fragments=0)
    for _ in range(2):
        got = group_foreground(
            emb, fg, tile=16, bg_rule="fragments", bg_min_fragments=0, clusterer=memo
        )
        np.testing.assert_array_equal(got, want)
    # 2 x 2 tiles a pass; the upper and lower tiles of a column hold the same points
    assert (memo.calls, memo.hits) == (2, 6)
