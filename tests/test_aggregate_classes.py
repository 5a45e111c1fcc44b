"""Semantic ids from the annotators' numberings (kpengine.aggregate.classes), on hand-made cases."""

import numpy as np

from kpengine.aggregate.classes import (
    ModelClickGeometry,
    annotator_spread,
    class_links,
    consensus_point,
    group_classes,
)
from kpengine.aggregate.saliency import gaussian


def _line_model(clicks: list[tuple[int, int, int]], step: float = 0.005) -> ModelClickGeometry:
    """Clicks (cloud index on a straight line of points ``step`` apart, annotator, class); distances |i - j| step."""
    idx = np.array([c[0] for c in clicks])
    return ModelClickGeometry(
        idx, np.array([c[1] for c in clicks]), np.array([c[2] for c in clicks]), np.abs(idx[:, None] - idx) * step
    )


def test_links_pair_mutual_nearest_clicks_of_two_annotators_and_count_co_occurrence():
    # annotator 0 numbers x=0.10 as class 0, x=0.20 as class 1; annotator 1 uses classes 2 and 3
    both = _line_model([(20, 0, 0), (40, 0, 1), (21, 1, 2), (41, 1, 3)])
    links, co = class_links([both, both], 4, radius=0.15)
    assert links[0, 2] == links[2, 0] == 2 and links[1, 3] == 2
    assert links[0, 3] == links[1, 2] == 0 and links[0, 1] == 0  # never inside one annotator
    assert co[0, 2] == co[0, 3] == co[1, 2] == 2 and co[0, 1] == 0
    # annotator 1 skipped x=0.10: a0's click there has 41 as nearest, but 41's nearest is a0's 40 -> no link
    skipped = _line_model([(20, 0, 0), (40, 0, 1), (41, 1, 3)])
    links, co = class_links([skipped], 4, radius=0.15)
    assert links[1, 3] == 1 and links[0, 3] == 0 and co[0, 3] == 1
    # beyond the radius nothing links even when mutual
    far = _line_model([(0, 0, 0), (100, 1, 2)])
    assert class_links([far], 4, radius=0.15)[0].sum() == 0


def test_grouping_merges_agreeing_classes_and_never_two_of_one_annotator():
    ann = np.array([0, 0, 1, 1, 2, 2])  # classes 0-5: two per annotator
    co = np.full((6, 6), 10)
    links = np.zeros((6, 6), np.int64)
    for p, q in [(0, 2), (0, 4), (2, 4), (1, 3), (1, 5), (3, 5)]:
        links[p, q] = links[q, p] = 9
    links[0, 3] = links[3, 0] = 2  # some confusion between the two ids
    g = group_classes(links, co, ann, merge_score=0.4, attach_score=0.15, prior=2.0)
    assert g[0] == g[2] == g[4] and g[1] == g[3] == g[5] and g[0] != g[1]
    # annotator 0's two classes both agree with class 2 (a left/right mix-up): they still stay apart
    links2 = np.zeros((6, 6), np.int64)
    links2[0, 2] = links2[2, 0] = links2[1, 2] = links2[2, 1] = 9
    g2 = group_classes(links2, co, ann, merge_score=0.4, attach_score=0.15, prior=2.0)
    assert g2[0] != g2[1] and g2[2] in (g2[0], g2[1])
    # one co-occurrence with a link scores 1 / (1 + 2) = 0.33: below merge_score, above attach_score
    one = np.zeros((2, 2), np.int64)
    one[0, 1] = one[1, 0] = 1
    assert group_classes(one, one, np.array([0, 1]), 0.4, 0.5, 2.0).tolist() == [0, 1]
    assert group_classes(one, one, np.array([0, 1]), 0.4, 0.3, 2.0).tolist() == [0, 0]


def test_consensus_outvotes_a_lone_click_unless_its_annotator_is_far_more_reliable():
    x = np.arange(100) * 0.005
    clicks = np.array([20, 22, 60])  # two agree near x=0.105, one far off at x=0.30
    sal = gaussian(np.abs(x[clicks][:, None] - x[None, :]), 0.03)
    thr = float(gaussian(0.06, 0.03))
    p, support = consensus_point(sal, np.array([0, 1, 2]), thr)
    assert p == 21 and support == 2  # the saliency peak halfway between 20 and 22
    p, support = consensus_point(sal, np.array([0, 1, 2]), thr, weight=np.array([0.1, 0.1, 4.0]))
    assert p == 60 and support == 1


def test_annotator_spread_is_the_median_distance_capped():
    d = [np.array([0.01, 0.03]), np.array([np.inf]), np.array([0.02])]
    a = [np.array([0, 0]), np.array([1]), np.array([0])]
    r = annotator_spread(d, a, 3, cap=0.15)
    assert r[0] == 0.02 and r[1] == 0.15 and np.isnan(r[2])
