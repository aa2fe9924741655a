import math

import pytest
import torch

from unblur.data import load_data
from unblur.data.shapes import SHAPES
from unblur.eval.extractors import load_extractor
from unblur.eval.features import digits_classifier, feature_net_info, load_feature_net, recognizability


def test_digits_classifier_recognizes_real_digits_at_any_size():
    info = feature_net_info("digits")
    assert info["stats"]["held_out_accuracy"] >= 0.97
    clf = digits_classifier("cpu")
    for size in (8, 32):
        d = load_data("builtin:digits", size=size)
        feats, probs = clf.embed(d.x[:300])
        assert feats.shape == (300, 64) and probs.shape == (300, 10)
        assert float((probs.argmax(-1) == d.labels[:300]).double().mean()) > 0.97
        r = recognizability((d.x + 1) / 2, labels=d.labels)
        assert r["accuracy"] > 0.97 and r["mean_top_prob"] > 0.85
        assert r["class_entropy"] == pytest.approx(math.log(10), abs=0.01)  # the ten digits are balanced


def test_recognizability_of_noise_is_low_and_of_one_class_has_zero_entropy():
    noise = recognizability(torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    d = load_data("builtin:digits")
    threes = recognizability((d.x[d.labels == 3] + 1) / 2)
    assert threes["class_entropy"] < 0.1 and threes["counts"][3] > 0.95 * sum(threes["counts"])
    assert noise["mean_top_prob"] < threes["mean_top_prob"]
    with pytest.raises(ValueError, match="non-empty"):
        recognizability(torch.zeros(0, 1, 8, 8))


def test_shapes_classifier_recognizes_fresh_shapes_and_is_auto_for_builtin_shapes():
    info = feature_net_info("shapes")
    assert info["stats"]["held_out_accuracy"] >= 0.95
    net = load_feature_net("shapes", "cpu")
    assert net.spec.num_classes == len(SHAPES) and list(net.spec.class_names) == list(SHAPES)
    d = load_data("builtin:shapes", n=400, seed=info["stats"]["seed"] + 12345)  # images the net never saw
    feats, probs = net.embed(d.x)
    assert feats.shape == (400, 64) and probs.shape == (400, len(SHAPES))
    r = recognizability((d.x + 1) / 2, net="shapes", labels=d.labels)
    assert r["accuracy"] > 0.95 and r["mean_top_prob"] > 0.8
    assert r["class_entropy"] == pytest.approx(math.log(len(SHAPES)), abs=0.05)  # kinds are drawn uniformly
    ext = load_extractor("auto", device=torch.device("cpu"), data_source="builtin:shapes")
    assert ext.id.startswith("builtin:shapes@") and ext.semantic and ext.has_probs
