"""The unCLIP chain: InfoNCE, the temperature's bounds, the prior against a closed-form
conditional, and the three runs end to end through the CLI with their refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unblur.analytic import GaussianMixture
from unblur.config import Config, apply_overrides
from unblur.kinds import MODEL_KINDS
from unblur.nets.clip import ClipModel, ClipNetConfig
from unblur.objectives import LossModule, info_nce
from unblur.pipelines.unclip import slerp, text_diff
from unblur.runs import Run, SampleBatch
from unblur.runs.build import build_denoiser, build_net, build_process
from unblur.sampling import generate
from unblur.types import ClipRecord, DataInfo, LatentRecord
from unblur.utils import seeded_generators

# -- InfoNCE and the temperature -----------------------------------------------------------------


def test_info_nce_equals_the_hand_computed_value_of_a_two_pair_batch():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # logits s * I T^T = [[2, 1.2], [0, 1.6]]; each pair's loss averages its row and column cross-entropy.
    row = [math.log(1 + math.exp(1.2 - 2)), math.log(1 + math.exp(0 - 1.6))]
    col = [math.log(1 + math.exp(0 - 2)), math.log(1 + math.exp(1.2 - 1.6))]
    want = torch.tensor([(row[0] + col[0]) / 2, (row[1] + col[1]) / 2])
    got = info_nce(image, text, s)
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    # The mean is CLIP's loss: the two cross-entropies over the logits and their transpose, averaged.
    logits = s * image @ text.T
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(2))
                 + torch.nn.functional.cross_entropy(logits.T, torch.arange(2)))
    assert torch.allclose(got.mean(), ref, atol=1e-6)
    # A perfect, sharp match costs nearly nothing; swapping the captions costs a lot.
    assert info_nce(image, image, 50.0).max() < 1e-6 and info_nce(image, image.flip(0), 50.0).min() > 40


def test_the_logit_scale_stays_in_its_bounds_through_large_steps():
    cfg = ClipNetConfig(channels=3, widths=(8,), embed_dim=4, text_dim=6, text_hidden=8,
                        temperature=0.07, max_logit_scale=100.0)
    model = ClipModel(cfg)
    assert math.isclose(float(model.scale().detach()), 1 / 0.07, rel_tol=1e-5)  # starts at 1 / temperature
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    x, t, m = torch.randn(4, 3, 8, 8), torch.randn(4, 2, 6), torch.ones(4, 2, dtype=torch.bool)
    seen = []
    for sign in (-1.0, 1.0):  # push the scale down hard, then up hard
        for _ in range(5):
            opt.zero_grad()
            (sign * model.logit_scale).backward()
            opt.step()
            model.clamp_()
            seen.append(float(model.scale().detach()))
            img, txt, scale = model(x, t, m)
            assert 1.0 <= float(scale.detach()) <= 100.0 + 1e-4
    assert min(seen) == pytest.approx(1.0) and max(seen) == pytest.approx(100.0, rel=1e-5)


def test_slerp_and_text_diff_stay_on_the_sphere_with_the_right_endpoints():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1) for _ in range(2))
    t = torch.linspace(0, 1, 5)
    path = slerp(a[0].expand(5, -1), b[0].expand(5, -1), t)
    assert torch.allclose(path.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(path[0], a[0], atol=1e-6) and torch.allclose(path[-1], b[0], atol=1e-6)
    angles = torch.arccos((path[:-1] * path[1:]).sum(1).clamp(-1, 1))  # equal steps along the great circle
    assert torch.allclose(angles, angles.mean().expand(4), atol=1e-5)
    moved = text_diff(a, b, a, 0.0)
    assert torch.allclose(moved, a, atol=1e-6)  # amount 0 is the image itself


# -- the prior against a closed-form conditional -------------------------------------------------


def test_prior_transformer_reads_its_tokens_and_starts_at_zero():
    from unblur.nets.prior import PriorTransformerConfig, PriorTransformerNet

    net = PriorTransformerNet(PriorTransformerConfig(dim=6, cond_dim=4, width=32, layers=2, heads=2)).eval()
    x, c, e = torch.randn(5, 6), torch.rand(5), torch.randn(5, 4)
    assert torch.equal(net(x, c, {"embedding": e}), torch.zeros(5, 6))  # the output layer starts at zero
    torch.nn.init.normal_(net.output.weight)
    with torch.no_grad():
        out = net(x, c, {"embedding": e})
        assert out.shape == (5, 6) and torch.isfinite(out).all()
        assert not torch.allclose(out, net(x, c, {"embedding": e.flip(0)}))  # it reads the text embedding
        assert not torch.allclose(out, net(x, c.flip(0), {"embedding": e}))  # and the noise level
        assert torch.equal(net(x, c, None), net(x, c, {"embedding": torch.zeros(5, 4)}))  # zeros are the null
    with pytest.raises(ValueError, match=r"expects x_in of shape \(B, 6\)"):
        net(torch.randn(5, 7), c)


@pytest.mark.parametrize("prior_net", ["mlp", "transformer"])
def test_the_prior_learns_a_linear_gaussian_conditional(prior_net):
    """Synthetic (text, image) embeddings with image = A text + 0.3 n: given a text embedding t,
    the image embedding is N(A t, 0.09 I) exactly. The prior's network (the residual MLP with its
    embedding input, or the prior transformer; x0-prediction on the cosine VP process, condition
    dropout 0.1) trained on
    6000 pairs and sampled with dpmpp-2m at guidance 1 is compared with that law, and with the
    exact denoiser of that Gaussian (``analytic.GaussianMixture``) through the same sampler.

    Tolerances (measured after these 500 steps: mean error at most 0.075 (MLP) and 0.064
    (transformer), standard deviation within 17% and 18%; 1500 steps gave 0.05 and 10%):
    for each of three new text embeddings, the sample mean within 0.12 of A t (0.4 sigma) and every
    coordinate's standard deviation within 25% of 0.3.
    """
    D, T, s = 4, 3, 0.3
    g = torch.Generator().manual_seed(0)
    A = torch.tensor([[1.0, -0.5, 0.0], [0.3, 0.8, -0.6], [-0.7, 0.2, 0.9], [0.5, 0.5, 0.5]])
    txt = torch.nn.functional.normalize(torch.randn(6000, T, generator=g), dim=1)
    img = txt @ A.T + s * torch.randn(6000, D, generator=g)
    cfg = apply_overrides(Config(), {"model.kind": "prior", "cond.clip": "encoder", **MODEL_KINDS["prior"].defaults,
                                     "model.prior_net": prior_net, "model.hidden": 128,
                                     "model.depth": 3 if prior_net == "transformer" else 4,
                                     "process.sigma_data": round(float(img.std()), 4)})
    info = DataInfo(kind="vector", shape=(D,), source="test:linear", num_items=len(img),
                    clip=ClipRecord(path="", sha256="", dim=T, for_prior=True))
    torch.manual_seed(0)
    net = build_net(cfg, info)
    process = build_process(cfg, info)
    loss_module = LossModule(build_denoiser(cfg, net, process))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    steps = 500
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(img), (256,), generator=g)
        e = txt[idx] * (torch.rand(256, 1, generator=g) > 0.1)  # condition dropout: zeros are the null
        level, x_t = process.training_pair(img[idx], g)
        loss = loss_module(img[idx], level, x_t, {"embedding": e}).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    run = Run(cfg, info, net.eval(), process, device="cpu")
    tests = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.2, -0.9, 0.4], [-0.5, 0.5, -0.7]]), dim=1)
    N = 1500
    x = torch.cat([b.x for b in run.sample(N, embeddings=tests, guidance=1.0, sampler="dpmpp-2m", steps=30,
                                           batch=N)]).reshape(3, N, D)
    for k, t in enumerate(tests):
        mean = A @ t
        exact = GaussianMixture(torch.ones(1, dtype=torch.float64), mean[None].double(),
                                (s * s * torch.eye(D, dtype=torch.float64))[None])
        ref = generate(exact.denoiser(), (N, D), process=process, sampler="dpmpp-2m", steps=30,
                       generator=seeded_generators(range(N)), dtype=torch.float64).float()
        for name, y in (("prior", x[k]), ("exact denoiser", ref)):
            err = float((y.mean(0) - mean).norm())
            std = y.std(0)
            assert err < 0.12, (prior_net, name, k, err)
            assert ((std / s - 1).abs() < 0.25).all(), (prior_net, name, k, std)


# -- run folders of earlier versions and the chain's one door -------------------------------------

OLD = Path(__file__).parent / "fixtures" / "old_runs"


def metadata_data_info(run_dir: Path) -> dict:
    """The ``data_info`` JSON a run's model.safetensors holds, as written."""
    raw = (run_dir / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["data_info"])


def test_records_read_and_write_the_dict_form_of_earlier_versions():
    clip = {"path": "/tmp/enc", "sha256": "ab" * 32, "dim": 8, "role": "decoder", "image_shape": [3, 16, 16]}
    latent = {"autoencoder": "/tmp/ae", "sha256": "cd" * 32, "kind": "unblur-run", "shift": 0.25, "scale": 1.5,
              "image_shape": [1, 16, 16], "latent_shape": [4, 4, 4], "embedded": False}
    d = {"kind": "image", "source": "s", "num_items": 3, "shape": [4, 4, 4], "class_names": None, "latent": latent,
         "clip": clip}
    info = DataInfo.from_dict(d)
    assert info.clip == ClipRecord(path="/tmp/enc", sha256="ab" * 32, dim=8, for_prior=False, image_shape=(3, 16, 16))
    assert info.latent == LatentRecord(path="/tmp/ae", sha256="cd" * 32, kind="unblur-run", shift=0.25, scale=1.5,
                                       image_shape=(1, 16, 16), latent_shape=(4, 4, 4), embedded=False)
    assert info.to_dict() == d and info.image_shape == (1, 16, 16)  # the same JSON keys as before
    assert info.get("clip") == clip and info["latent"] == latent  # mapping reads give the JSON's form
    assert ClipRecord.from_dict({**clip, "role": "prior"}).for_prior
    assert ClipRecord.of(clip) == info.clip and ClipRecord.of(info.clip) is info.clip and ClipRecord.of(None) is None
    with pytest.raises(ValueError, match="role is 'encoder'"):
        ClipRecord.from_dict({**clip, "role": "encoder"})
    with pytest.raises(ValueError, match="lacks 'shift'"):
        LatentRecord.from_dict({k: v for k, v in latent.items() if k != "shift"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.clip.dim = 9


def test_old_prior_and_decoder_load_with_typed_records_and_take_the_given_encoder():
    from unblur.pipelines.unclip import load_clip
    from unblur.runs.unclip import Unclip, is_decoder, is_prior

    dec, pri = Run.load(OLD / "decoder", device="cpu"), Run.load(OLD / "prior", device="cpu")
    sha = hashlib.sha256((OLD / "encoder" / "model.safetensors").read_bytes()).hexdigest()
    assert dec.data.clip == ClipRecord(path="/tmp/oldruns/encoder", sha256=sha, dim=8, for_prior=False,
                                       image_shape=(3, 16, 16))
    assert pri.data.clip == dataclasses.replace(dec.data.clip, for_prior=True)
    assert is_decoder(dec) and is_prior(pri) and not is_decoder(pri) and not is_prior(dec)
    for name, run in (("decoder", dec), ("prior", pri)):  # written back as the same JSON
        assert run.data.to_dict() == metadata_data_info(OLD / name)
    enc = load_clip(OLD / "encoder")
    if not Path(dec.data.clip.path).exists():  # the recorded path: gone, as for any moved run
        with pytest.raises(ValueError, match="not there any more"):
            Unclip(dec, pri)
    chain = Unclip(dec, pri, clip=enc)  # the same weights elsewhere: accepted
    assert chain.clip is enc
    with pytest.raises(ValueError, match="has changed since"):
        Unclip(dec, pri, clip=dataclasses.replace(enc, sha256="0" * 64))
    with pytest.raises(ValueError, match="is a prior"):
        Unclip(pri, clip=enc)
    with pytest.raises(ValueError, match="is not a prior"):
        Unclip(dec, dec, clip=enc)


@pytest.fixture(scope="module")
def old_chain():
    """The chain of the decoder and prior written by an earlier version, with the encoder of this folder."""
    from unblur.pipelines.unclip import load_clip
    from unblur.runs.unclip import Unclip

    dec, pri = Run.load(OLD / "decoder", device="cpu"), Run.load(OLD / "prior", device="cpu")
    return Unclip(dec, pri, clip=load_clip(OLD / "encoder"))


def test_unclip_sample_draws_prompts_through_the_prior_in_batches_with_records(old_chain):
    chain, seen = old_chain, []
    prompts = ["a red circle", "a blue square"]
    stream = chain.sample(2, prompts=prompts, steps=2, prior_steps=3, prior_guidance=1.5, seed=5, batch=3,
                          callback=lambda info: seen.append(("decoder", info.step)),
                          prior_callback=lambda info: seen.append(("prior", info.step)))
    assert stream.total == 4 and stream.plan.steps == 2 and stream.prior_plan.steps == 3 and not seen
    batches = list(stream)
    assert all(isinstance(b, SampleBatch) for b in batches) and [b.start for b in batches] == [0, 3]
    x = torch.cat([b.x for b in batches])
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()
    assert seen == [("prior", k) for k in range(3)] + [("decoder", k) for k in range(2)] * 2
    recs = [r for b in batches for r in b.records]
    assert [r["unclip"] for r in recs] == ["prompt"] * 4 and [r["index"] for r in recs] == [0, 1, 2, 3]
    assert [(r["prompt"], r["prior_sample"]) for r in recs] == [(p, k) for p in prompts for k in range(2)]
    assert [r["seed"] for r in recs] == [r["prior_seed"] for r in recs] == [5, 6, 7, 8]
    assert {(r["prior"], r["prior_steps"], r["prior_guidance"], r["steps"]) for r in recs} == {
        (chain.prior.ref, 3, 1.5, 2)}
    assert recs[1]["embedding_of"] == "prompt 'a red circle' (prior sample 1)"
    # the chain's steps by hand give the same images
    z, labels = chain.from_prompts(prompts, 2, steps=3, guidance=1.5, seed=5)
    want = torch.cat([b.x for b in chain.decoder.sample(1, embeddings=z, embedding_labels=labels, steps=2, seed=5,
                                                          batch=3)])
    assert torch.equal(x, want)
    again = chain.sample(2, prompts=prompts, steps=2, prior_steps=3, prior_guidance=1.5, seed=5, batch=3)
    assert torch.equal(torch.cat([b.x for b in again.starting_at(3)]), x[3:])  # continued: the same images


def test_unclip_sample_makes_variations_strips_and_text_diffs_with_records(old_chain):
    chain = old_chain
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    stream = chain.sample(3, variations_of=images, names=["a.png", "b.png"], steps=2, seed=10, batch=4)
    batches = list(stream)
    x, recs = torch.cat([b.x for b in batches]), [r for b in batches for r in b.records]
    assert stream.total == 6 and x.shape == (6, 3, 16, 16) and [b.start for b in batches] == [0, 4]
    assert [(r["unclip"], r["image_name"]) for r in recs] == [("variation", "a.png")] * 3 + \
        [("variation", "b.png")] * 3
    assert [r["seed"] for r in recs] == list(range(10, 16)) and not torch.allclose(x[0], x[1])  # new noise each
    assert recs[3]["embedding_of"] == "variation of b.png"

    batches = list(chain.sample(interpolate=images, names=["a", "b"], frames=3, steps=2, seed=4))
    x, recs = torch.cat([b.x for b in batches]), [r for b in batches for r in b.records]
    assert x.shape == (3, 3, 16, 16) and [r["unclip"] for r in recs] == ["interpolation"] * 3
    assert [r["position"] for r in recs] == [0.0, 0.5, 1.0] and recs[0]["images"] == ["a", "b"]
    assert {r["seed"] for r in recs} == {4}  # one noise for the whole strip
    assert recs[-1]["embedding_of"] == "slerp(a, b, 1.000)"

    batches = list(chain.sample(variations_of=images[:1], names=["a"], text_diff=("a red circle", "a blue square"),
                                frames=3, amount=0.6, steps=2, seed=4))
    recs = [r for b in batches for r in b.records]
    assert [r["unclip"] for r in recs] == ["text_diff"] * 3 and {r["seed"] for r in recs} == {4}
    assert [round(r["amount"], 6) for r in recs] == [0.0, 0.3, 0.6]
    assert (recs[0]["image_name"], recs[0]["text_from"], recs[0]["text_to"]) == ("a", "a red circle", "a blue square")
    assert recs[-1]["embedding_of"].endswith("towards 'a blue square' by 0.600")


@pytest.mark.parametrize("kwargs,words", [
    ({}, "give one of prompts="),
    ({"prompts": ["a"], "variations_of": "images"}, "given: prompts, variations_of"),
    ({"variations_of": "images", "text_diff": ("a", "b")}, "exactly one image"),
    ({"n": 2, "interpolate": "images"}, "n=2"),
    ({"interpolate": "images", "frames": 1}, "at least 2 frames"),
    ({"variations_of": "images", "names": ["a"]}, "1 names for 2 images"),
    ({"variations_of": "small"}, "embeds 3x16x16 images"),
    ({"variations_of": "images", "sampler": "cold"}, "does not apply"),
    ({"variations_of": "images", "steps": 0}, "steps must be a positive integer"),
    ({"variations_of": "images", "guidance": -1.0}, "--guidance must be >= 0"),
    ({"prompts": [" "]}, "prompt 0 is empty"),
    ({"prompts": ["a"], "prior_sampler": "magic"}, "magic"),
    ({"variations_of": "images", "start": 9}, "start must lie in 0..2"),
])
def test_unclip_sample_checks_the_request_before_anything_is_made(old_chain, kwargs, words):
    values = {"images": torch.zeros(2, 3, 16, 16), "small": torch.zeros(1, 3, 8, 8)}
    kwargs = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=re.escape(words)):
        old_chain.sample(**kwargs)


def test_a_chain_without_a_prior_refuses_prompts_and_accepts_a_dict_record_from_a_resume_state(old_chain):
    from unblur.data import Data
    from unblur.pipelines.unclip import attach_image_embeddings
    from unblur.runs.unclip import Unclip

    with pytest.raises(ValueError, match=r"--prior RUN"):
        Unclip(old_chain.decoder, clip=old_chain.clip).sample(prompts=["a red circle"])
    data = Data(x=torch.zeros(2, 3, 16, 16), kind="image", source="test")
    rec = old_chain.decoder.data.clip
    for recorded in (rec, rec.to_dict()):  # the record, or its dict form in an older train_state
        enc, out = attach_image_embeddings(data, OLD / "encoder", recorded=recorded, say=lambda s: None)
        assert out.embeddings.shape == (2, 8) and enc.record(for_prior=False) == dataclasses.replace(
            rec, path=str(enc.path))
        assert enc.record("decoder") == enc.record(for_prior=False)
    for recorded in (dataclasses.replace(rec, sha256="0" * 64), {**rec.to_dict(), "sha256": "0" * 64}):
        with pytest.raises(ValueError, match="has changed since this run was trained"):
            attach_image_embeddings(data, OLD / "encoder", recorded=recorded, say=lambda s: None)


# -- the three runs end to end through the CLI ----------------------------------------------------

TINY = ["--data", "builtin:shapes", "--device", "cpu", "--set", "data.num_images=96", "--set", "data.size=16",
        "--set", "train.checkpoint_every=0"]
CLIP = ["--model", "clip", "--set", "clip.text_encoder=learned", "--set", "clip.learned_dim=16",
        "--set", "clip.learned_layers=1", "--set", "clip.widths=8,16", "--set", "clip.embed_dim=8",
        "--set", "clip.text_hidden=16", "--set", "train.batch_size=32", "--set", "clip.holdout=0.25"]


def write_shape_png(path, item_index: int):
    from PIL import Image

    from unblur.data.shapes import make_items, render

    Image.fromarray(render(make_items(item_index + 1, seed=5)[item_index], (16, 16))).save(path)
    return path


def records(folder):
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def unblur_cli_once(*args):
    """``python -m unblur ARGS`` (the module's runs are made once, so not through the fixture)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "unblur", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    unblur_cli = unblur_cli_once
    root = tmp_path_factory.mktemp("unclip")
    runs = {}
    for name, extra in (("clip", [*CLIP, "--steps", 12]), ("clip2", [*CLIP, "--steps", 4, "--set", "train.seed=1"])):
        r = unblur_cli("train", "--out", root / name, *TINY, *extra)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = root / name
    for name, enc in (("prior", "clip"), ("prior2", "clip2")):
        r = unblur_cli("train", "--model", "prior", "--clip", runs[enc], "--out", root / name, *TINY, "--steps", 10,
                       "--set", "model.hidden=32", "--set", "train.batch_size=32", "--set", "sample.grid_n=4")
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = root / name
    r = unblur_cli("train", "--clip", runs["clip"], "--out", root / "decoder", *TINY, "--steps", 3,
                   "--set", "model.base_channels=16", "--set", "train.batch_size=16", "--set", "sample.grid_n=4",
                   "--set", "sample.steps=2")
    assert r.returncode == 0, r.stderr[-2000:]
    runs["decoder"] = root / "decoder"
    runs["a"], runs["b"] = write_shape_png(root / "a.png", 0), write_shape_png(root / "b.png", 1)
    runs["root"] = root
    return runs


def test_the_encoder_run_reports_held_out_retrieval_and_a_bounded_temperature(chain):
    rows = [json.loads(line) for line in (chain["clip"] / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "heldout_t2i_top1" in r][-1]
    assert 0 <= last["heldout_t2i_top1"] <= 1 and 0 <= last["heldout_i2t_top1"] <= 1
    assert 0 <= last["heldout_zero_shot"] <= 1 and -1 <= last["heldout_pair_cosine"] <= 1
    assert 1 <= last["logit_scale"] <= 100
    info = json.loads((chain["prior"] / "config.json").read_text()) if (chain["prior"] / "config.json").exists() \
        else None
    assert info is None or info["model"]["kind"] == "prior"


def test_sample_a_prompt_through_prior_and_decoder(chain, unblur_cli):
    out = chain["root"] / "s-prompt"
    r = unblur_cli("sample", chain["decoder"], "--prior", chain["prior"], "--prompt", "a red circle",
                   "--prompt", "a small blue square", "--n", 2, "--steps", 2, "--prior-steps", 3,
                   "--prior-guidance", 2, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = records(out)
    assert len(recs) == 4 and np.load(out / "samples.npy").shape == (4, 3, 16, 16)
    assert [q["embedding_of"].split("'")[1] for q in recs] == ["a red circle"] * 2 + ["a small blue square"] * 2
    assert len(list(out.glob("*.png"))) >= 4


def test_variations_interpolation_and_text_diff(chain, unblur_cli):
    out = chain["root"] / "s-var"
    r = unblur_cli("sample", chain["decoder"], "--variations-of", chain["a"], chain["b"], "--n", 3, "--steps", 2,
                   "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    x = np.load(out / "samples.npy")
    assert x.shape == (6, 3, 16, 16) and not np.allclose(x[0], x[1])  # new noise per variation
    assert [q["embedding_of"] for q in records(out)] == [f"variation of {chain['a']}"] * 3 + \
        [f"variation of {chain['b']}"] * 3
    out = chain["root"] / "s-interp"
    r = unblur_cli("sample", chain["decoder"], "--interpolate", chain["a"], chain["b"], "--frames", 4, "--steps", 2,
                   "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.load(out / "samples.npy").shape == (4, 3, 16, 16)
    labels = [q["embedding_of"] for q in records(out)]
    assert labels[0].endswith("0.000)") and labels[-1].endswith("1.000)")
    assert len({q["seed"] for q in records(out)}) == 1  # one noise for the whole strip
    out = chain["root"] / "s-diff"
    r = unblur_cli("sample", chain["decoder"], "--variations-of", chain["a"], "--text-diff", "a red circle",
                   "a blue square", "--frames", 3, "--amount", 0.6, "--steps", 2, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(records(out)) == 3 and "towards 'a blue square' by 0.600" in records(out)[-1]["embedding_of"]


def test_the_chain_refuses_mismatched_and_missing_pieces(chain, unblur_cli):
    out = chain["root"] / "bad"
    cases = [
        (("sample", chain["decoder"], "--prior", chain["prior2"], "--prompt", "a red circle"),
         "trained with the encoder"),  # a prior of another encoder
        (("sample", chain["decoder"], "--prompt", "a red circle"), "add --prior RUN"),
        (("sample", chain["prior"], "--prior", chain["prior"], "--prompt", "a red circle"), "is a prior"),
        (("sample", chain["clip"]), "contrastive encoder"),
        (("sample", chain["decoder"], "--variations-of", chain["root"] / "missing.png"), "missing.png"),
        (("train", "--model", "prior", "--out", chain["root"] / "p3", *TINY, "--steps", 1), "--clip"),
    ]
    for args, message in cases:
        r = unblur_cli(*args, "--out", out) if args[0] == "sample" else unblur_cli(*args)
        assert r.returncode == 2, (args, r.stderr[-1500:])
        assert message in r.stderr, (args, r.stderr[-1500:])
        assert "Traceback" not in r.stderr
    assert not (out / "samples.npy").exists() and not (chain["root"] / "p3" / "model.safetensors").exists()


def test_a_decoder_without_image_embeddings_is_refused(tmp_path, chain, capsys):
    from unblur.cli import main

    plain = Path(__file__).parent / "fixtures" / "old_runs" / "edm-classes"  # a run of no encoder
    assert main(["sample", str(plain), "--prior", str(chain["prior"]), "--prompt", "a red circle", "--out",
                 str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "not conditioned on a contrastive encoder" in err and not (tmp_path / "s").exists(), err[-1500:]


def test_clip_score_in_the_library_is_the_cosine_of_each_image_to_its_prompt(chain):
    from unblur.runs.unclip import Unclip

    un = Unclip.open(chain["decoder"], prior=chain["prior"], device="cpu")
    from unblur.images import read_image

    x = torch.stack([read_image(chain[k], channels=3, size=(16, 16)) for k in ("a", "b")])
    score = un.clip_score(x, ["a red circle", "a blue square"])
    zi, zt = un.image_embeddings(x), un.text_embeddings(["a red circle", "a blue square"])
    assert torch.allclose(score, (zi * zt).sum(1), atol=1e-6) and (score.abs() <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        un.clip_score(x, ["a red circle"])


# -- prompt fidelity in unblur eval ------------------------------------------------------------------


def test_shape_words_reads_one_colour_and_one_shape():
    from unblur.eval.prompts import shape_words

    assert shape_words("a small red circle on a white background") == ("red", "circle")
    assert shape_words("two blue crosses") == ("blue", "cross")
    assert shape_words("a red circle above a blue square") is None  # two of each: no single check
    assert shape_words("a picture") is None


def test_eval_reports_the_clip_score_of_prompts_through_the_chain(chain, unblur_cli, tmp_path):
    out = tmp_path / "r.json"
    r = unblur_cli("eval", chain["decoder"], "--prior", chain["prior"], "--prompt", "a red circle",
                   "--prompt", "a blue square", "--n", 3, "--steps", 2, "--json", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["clip_items"] == 6 and -1 <= rep["clip_score"] <= 1 and -1 <= rep["clip_score_shuffled"] <= 1
    assert rep["shapes"]["items"] == 6 and 0 <= rep["shapes"]["colour"] <= 1
    assert "clip score:" in r.stdout and "shapes checker: colour" in r.stdout
    r = unblur_cli("eval", chain["decoder"], "--prompt", "a red circle", "--n", 1)
    assert r.returncode == 2 and "--prior RUN" in r.stderr


# -- unblur serve with a decoder and its prior ---------------------------------------------------


def test_serve_generates_through_the_prior_and_makes_variations(chain):
    pytest.importorskip("fastapi")
    import base64

    from fastapi.testclient import TestClient

    from unblur.cli.serve import match_priors
    from unblur.runs.pnginfo import read_settings
    from unblur.serve import create_app

    dec, pri = Run.load(chain["decoder"], device="cpu"), Run.load(chain["prior"], device="cpu")
    priors = match_priors({"dec": dec}, [pri])
    assert list(priors) == ["dec"]
    with pytest.raises(ValueError, match="no served decoder was"):
        match_priors({"dec": dec}, [Run.load(chain["prior2"], device="cpu")])
    with pytest.raises(ValueError, match="not a prior"):
        match_priors({"dec": dec}, [dec])

    def finish(c, r):
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        with c.stream("GET", f"/api/jobs/{job}/events") as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
        done = json.loads(lines[-1][6:])
        assert "results" in done, done
        return [c.get(x["url"]).content for x in done["results"]]

    upload = "data:image/png;base64," + base64.b64encode(chain["a"].read_bytes()).decode()
    with TestClient(create_app({"dec": dec}, priors=priors)) as c:
        d = c.get("/api/runs").json()["runs"][0]
        assert d["can"] == ["generate", "variations"] and d["text"] and d["unclip"]["prior"] == pri.ref
        pngs = finish(c, c.post("/api/generate", json={"run": "dec", "prompt": "a red circle", "n": 2, "steps": 2,
                                                       "prior_steps": 3, "prior_guidance": 1.5}))
        s = read_settings(pngs[1])
        assert len(pngs) == 2 and s["kind"] == "unclip" and s["prompt"] == "a red circle"
        assert s["prior_guidance"] == 1.5 and "prior sample 1" in s["embedding_of"]
        pngs = finish(c, c.post("/api/variations", json={"run": "dec", "image": upload, "n": 2, "steps": 2}))
        assert len(pngs) == 2 and pngs[0] != pngs[1]
        assert read_settings(pngs[0])["embedding_of"] == "variation of the upload"
        r = c.post("/api/generate", json={"run": "dec", "prompt": "a red circle", "negative_prompt": "blue"})
        assert r.status_code == 422 and "negative_prompt" in r.json()["detail"]
        r = c.post("/api/generate", json={"run": "dec", "prompt": "x", "prior_guidance": 99})
        assert r.status_code == 422 and "prior_guidance" in r.json()["detail"]
    with TestClient(create_app({"dec": dec})) as c:  # no prior: variations only
        assert c.get("/api/runs").json()["runs"][0]["can"] == ["variations"]
        r = c.post("/api/generate", json={"run": "dec", "prompt": "a red circle"})
        assert r.status_code == 422 and "--prior RUN" in r.json()["detail"]


def test_the_page_draws_a_prompt_through_the_prior_and_variations_of_an_upload(chain, tmp_path):
    """In Debian's chromium (the page test's setup): the decoder's Generate tab shows the prompt and
    the prior's settings; the Variations tab takes an upload. Screenshots in the test's folder."""
    import shutil
    import socket
    import threading
    import time

    pytest.importorskip("fastapi")
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium: `make test` installs it (scripts/need_chromium.sh)")
    import uvicorn

    from unblur.serve import create_app

    dec, pri = Run.load(chain["decoder"], device="cpu"), Run.load(chain["prior"], device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app({"decoder": dec}, priors={"decoder": pri}), host="127.0.0.1",
                                        port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    done = "() => /^(done|error|cancelled)/.test(document.getElementById('status').textContent)"
    try:
        with sync_api.sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => document.querySelectorAll('#run option').length === 1")
            assert "unCLIP" in page.text_content("#runinfo")
            assert page.is_visible("#prompt") and page.is_visible("#prior-steps") and not page.is_visible("#negative")
            assert page.is_disabled(".tab[data-tab=edit]") and not page.is_disabled(".tab[data-tab=variations]")
            page.fill("#prompt", "a red circle")
            page.fill("#steps", "3")
            page.fill("#prior-steps", "3")
            page.fill("#n", "2")
            page.click("#go")
            page.wait_for_function(done, timeout=60_000)
            assert page.text_content("#status").startswith("done: 2 images"), page.text_content("#status")
            page.screenshot(path=str(tmp_path / "unclip_generate.png"))
            page.click(".tab[data-tab=variations]")
            assert not page.is_visible("#prompt") and page.is_visible("#var-file")
            page.set_input_files("#var-file", str(chain["a"]))
            page.fill("#n", "3")
            page.click("#go")
            page.wait_for_function(done, timeout=60_000)
            assert page.text_content("#status").startswith("done: 3 images"), page.text_content("#status")
            assert page.locator("#gallery img").count() == 5
            page.screenshot(path=str(tmp_path / "unclip_variations.png"))
            assert not errors, errors
            b.close()
    finally:
        srv.should_exit = True
        t.join(10)


def test_token_dropout_drops_at_its_rate_and_never_empties_a_caption():
    from unblur.kinds.clip import drop_tokens

    mask = torch.zeros(4000, 12, dtype=torch.bool)
    mask[:, :6] = True
    mask[0, 1:] = False  # a one-token caption
    out = drop_tokens(mask, 0.3, torch.Generator().manual_seed(0))
    assert not (out & ~mask).any() and out.any(1).all()
    assert out[0, 0] and abs(out[1:].sum() / mask[1:].sum() - 0.7) < 0.01
    assert drop_tokens(mask, 0.0) is mask


def test_info_describes_the_encoder_and_the_prior(chain, unblur_cli):
    r = unblur_cli("info", chain["clip"])
    assert r.returncode == 0, r.stderr[-1500:]
    assert "contrastive encoder: 3x16x16 images and captions -> 8-wide unit embeddings" in r.stdout
    assert "held out:" in r.stdout and "text->image top-1" in r.stdout
    r = unblur_cli("info", chain["prior"])
    assert r.returncode == 0 and "PriorTransformerNet" in r.stdout, r.stderr[-1500:]
