"""The fast paths of the PerSAM building blocks give exactly what the plain computations give:
top-k point selection without a full sort, per-set / channels-last post-processing, batched
similarity maps, the vectorised cascade bookkeeping and the tracker's label merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fast_sam_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from persam.personalize.cascade import CascadeResult, Stage, finish_cascade, mask_areas
from persam.personalize.prior import location_prior, similarity_map, similarity_maps, unit_embedding
from persam.registry import build_model
from persam.tracking import merge_object_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_model(fast_sam_config(), checkpoint="none")


# ------------------------------------------------------------------------------- location prior
def reference_location_prior(sim: torch.Tensor, topk: int, negative: bool) -> tuple[np.ndarray, np.ndarray]:
    """The plain selection: a stable descending sort of the whole map."""
    w = sim.shape[1]
    flat = sim.reshape(-1)
    idx = torch.sort(flat, descending=True, stable=True)[1][:topk]
    labels = [1] * int(idx.numel())
    if negative:
        idx = torch.cat([idx, flat.argmin().reshape(1)])
        labels.append(0)
    idx = idx.numpy().astype(np.int64)
    return np.stack([idx % w, idx // w], axis=1), np.asarray(labels, dtype=np.int64)


def _assert_same_prior(sim: torch.Tensor, topk: int, negative: bool) -> None:
    points, labels = location_prior(sim, topk=topk, negative=negative)
    want_points, want_labels = reference_location_prior(sim, topk, negative)
    assert points.tolist() == want_points.tolist()
    assert labels.tolist() == want_labels.tolist()
    assert points.dtype == np.int64 and labels.dtype == np.int64


# Few distinct values, so that most maps have ties at and across the k-th place.
TIED_VALUES = st.sampled_from([-2.0, -0.0, 0.0, 0.25, 0.5, 1.0, float("inf"), float("-inf")])


@settings(max_examples=300, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=TIED_VALUES),
    st.integers(0, 12),
    st.booleans(),
)
def test_location_prior_equals_the_full_stable_sort(sim, topk, negative):
    _assert_same_prior(torch.from_numpy(sim), topk, negative)


@settings(max_examples=80, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        elements=st.sampled_from([0.0, 1.0, 2.0, float("nan")]),
    ),
    st.integers(1, 8),
    st.booleans(),
)
def test_location_prior_with_nan_equals_the_full_stable_sort(sim, topk, negative):
    _assert_same_prior(torch.from_numpy(sim), topk, negative)


@pytest.mark.parametrize("topk", [1, 2, 3, 5, 8])
def test_location_prior_on_a_large_map_with_a_plateau(topk):
    g = torch.Generator().manual_seed(topk)
    sim = torch.rand(480, 854, generator=g)
    top = float(sim.max())
    sim[300:310, 20:30] = top  # many copies of the maximum, below its first occurrence
    sim[5, 800] = sim[400, 3] = top + 1  # two strictly larger values
    sim[479, 853] = sim[0, 0] = -1.0  # tied minimum
    for negative in (True, False):
        _assert_same_prior(sim, topk, negative)
    distinct = torch.randperm(480 * 854, generator=g).float().reshape(480, 854)
    _assert_same_prior(distinct, topk, True)


# ---------------------------------------------------------------------------- post-processing
def _official_postprocess(low: torch.Tensor, input_size, original_size) -> torch.Tensor:
    """The reference post-processing, written out: full up-sampling, crop, resize (NCHW, batched)."""
    x = F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (120, 200), (90, 60), (480, 854), (1100, 120), (64, 64)])
def test_postprocess_and_mask_areas_equal_the_reference_computation(model, h, w):
    # SamBackbone.postprocess up-samples only the rows/columns that survive the crop, one prompt
    # set at a time in channels-last layout: the result must be bit-identical all the same.
    rng = np.random.default_rng(h)
    model.set_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    low = torch.from_numpy(rng.normal(0, 4, (2, 3, 256, 256)).astype(np.float32))
    reference = _official_postprocess(low, model.input_size, model.original_size)
    fast = model.postprocess(low)
    assert fast.is_contiguous() and torch.equal(fast, reference)
    single = _official_postprocess(low[:1, :1], model.input_size, model.original_size)
    assert torch.equal(model.postprocess(low[:1, :1]), single)
    areas = mask_areas(model, low)
    assert areas.dtype == torch.int64
    assert torch.equal(areas, model.binarize(reference).sum(dim=(-2, -1)))


def test_similarity_maps_equal_one_map_per_object(model):
    rng = np.random.default_rng(1)
    model.set_image(rng.integers(0, 256, (70, 110, 3), dtype=np.uint8))
    feats = torch.nn.functional.normalize(
        torch.from_numpy(rng.normal(size=(3, 32)).astype(np.float32)), dim=1
    )
    grids, sims = similarity_maps(model, feats, unit=unit_embedding(model.features))
    assert grids.shape == (3, 1, 64, 64) and sims.shape == (3, 70, 110)
    for k in range(3):
        grid, sim = similarity_map(model, feats[k : k + 1])
        torch.testing.assert_close(grids[k : k + 1], grid, rtol=0, atol=1e-6)
        torch.testing.assert_close(sims[k], sim, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- cascade bookkeeping
def reference_finish_cascade(stages: list[Stage]) -> CascadeResult:
    """The plain per-prompt-set loop."""
    first = stages[0]
    b = first.active.numel()
    masks = first.mask.clone()
    scores = first.best_score.clone()
    boxes = torch.full((b, 4), -1, dtype=torch.int64)
    names = [first.name] * b
    for st_ in stages:
        ok = (st_.active & st_.mask.flatten(1).any(dim=1)).tolist()
        ran = st_.active.tolist()
        for i in range(b):
            if ok[i] or (ran[i] and not bool(masks[i].any())):
                masks[i] = st_.mask[i]
                scores[i] = st_.best_score[i]
                names[i] = st_.name
                boxes[i] = -1 if st_.box_prompt is None else st_.box_prompt[i].round().to(torch.int64)
    return CascadeResult(masks, scores, masks.flatten(1).any(dim=1), boxes, names, stages)


def _stage(name: str, active: list[bool], nonempty: list[bool], with_box: bool, seed: int) -> Stage:
    g = torch.Generator().manual_seed(seed)
    b = len(active)
    mask = torch.rand(b, 6, 7, generator=g) > 0.5
    mask[:, 0, 0] = True
    for i, keep in enumerate(nonempty):
        if not (keep and active[i]):
            mask[i] = False
    scores = torch.rand(b, 3, generator=g)
    box = (torch.rand(b, 4, generator=g) * 6).round() if with_box else None
    return Stage(
        name=name,
        active=torch.tensor(active),
        low_res_logits=torch.zeros(b, 3, 2, 2),
        scores=scores,
        best_idx=torch.randint(0, 3, (b,), generator=g),
        logits=torch.zeros(b, 6, 7),
        mask=mask,
        box_prompt=box,
    )


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda b: st.lists(st.lists(st.booleans(), min_size=2 * b, max_size=2 * b), min_size=3, max_size=3)
    )
)
def test_finish_cascade_equals_the_per_set_loop(patterns):
    b = len(patterns[0]) // 2
    stages = [
        _stage(name, p[:b], p[b:], with_box=k > 0, seed=k)
        for k, (name, p) in enumerate(zip(("step1", "refine1", "refine2"), patterns, strict=True))
    ]
    got = finish_cascade(stages)
    want = reference_finish_cascade(stages)
    assert torch.equal(got.masks, want.masks)
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.found, want.found)
    assert torch.equal(got.boxes, want.boxes)
    assert got.final_stage == want.final_stage


# ------------------------------------------------------------------------------------ merge
def test_tracker_merge_is_an_argmax_over_a_zero_background():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 40, 50, generator=g) * 2).round()  # many exact ties, zeros included
    object_ids = (7, 2, 9)
    for slots in ([0, 1, 2], [2], [0, 2]):
        got = merge_object_logits([logits[s] for s in slots], [object_ids[s] for s in slots], (40, 50))
        stacked = torch.cat([torch.zeros(1, 40, 50), logits[slots]])
        ids = torch.tensor([0] + [object_ids[s] for s in slots], dtype=torch.uint8)
        want = ids[stacked.argmax(dim=0)]  # ties go to the first (lower) index
        assert got.dtype == np.uint8 and np.array_equal(got, want.numpy())
    assert np.array_equal(merge_object_logits([], [], (40, 50)), np.zeros((40, 50), np.uint8))
