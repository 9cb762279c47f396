"""PPAE on tiny AudioLDM2 (ε and v) and tiny Tango (v): inversion round trips, identity edits, batching,
interruption, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.attention.alignment import align_tokens, refine_mapping, replace_mapping, token_words
from prompt_audio_edit.engine.methods.ppae import run_branches
from prompt_audio_edit.engine.methods.zeta import redenoise
from prompt_audio_edit.engine.attention.schedule import FusionSchedule
from prompt_audio_edit.engine.diffusion.inversion import invert
from prompt_audio_edit.engine.diffusion.vae import vae_encode
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.conftest import TINY_MODEL, TINY_TANGO, TINY_V_MODEL
from tests.helpers import core_style_audio

Invert = NODE_CLASS_MAPPINGS["PAE_DDIMInvert"]
Controller = NODE_CLASS_MAPPINGS["PAE_AttentionController"]
Fuser = NODE_CLASS_MAPPINGS["PAE_Fuser"]

SOURCE = "a dog barking in the rain"
STEPS = 8  # edit_start 0.5: four edit steps, enough for every window and schedule to change value


@pytest.fixture(params=[TINY_MODEL, TINY_V_MODEL, TINY_TANGO], ids=["eps", "v", "tango"])
def backbone(request, tiny_dirs):
    return model_registry.load_backbone(request.param, "fp32")


@pytest.fixture
def clip_latent(backbone):
    return vae_encode(backbone, core_style_audio(1.0, 16000, 1))


@pytest.fixture(scope="module")
def shared_ddpm():
    """shared_ddpm(backbone, latent): one DDPM inversion and its plain re-denoise per model, made on first use and
    reused by this module's tests that only read them."""
    runs: dict = {}

    def shared(backbone, latent):
        if backbone.name not in runs:
            inversion = ddpm(backbone, latent)
            runs[backbone.name] = inversion, redenoise(backbone, inversion)["samples"]
        return runs[backbone.name]

    return shared


def ddpm(backbone, latent, guidance=3.0, seed=1):
    (inversion,) = Invert().run(model=backbone, latent=latent, source_prompt=SOURCE, method="ddpm", steps=STEPS,
                                guidance=guidance, edit_start=0.5, seed=seed)
    return inversion


def edit(target, mode="replace", **kwargs):
    (spec,) = Controller().run(source_prompt=kwargs.pop("source", SOURCE), target_prompt=target, mode=mode,
                               **kwargs)
    return spec


def fuse(backbone, inversion, spec, scales="3", **kwargs):
    latent, maps = Fuser().run(model=backbone, inversion=inversion, attention_edit=spec, guidance_scales=scales,
                               **kwargs)
    return latent, maps


# ---------------------------------------------------------------------------------------------- inversion
def test_ddpm_inversion_reproduces_the_latent(backbone, clip_latent, shared_ddpm):
    x0 = clip_latent["samples"]
    for guidance in (1.0, 3.0):
        inversion = ddpm(backbone, clip_latent, guidance) if guidance != 3.0 else shared_ddpm(backbone, clip_latent)[0]
        assert inversion.edit_steps == STEPS // 2 and inversion.noise.shape[0] == STEPS // 2
        back = redenoise(backbone, inversion)["samples"]
        assert torch.allclose(back, x0, atol=1e-4), (back - x0).abs().max()
        # With another prompt the same noise gives something else: the test above could fail.
        other = redenoise(backbone, inversion, prompt="a cat meowing in the rain")["samples"]
        assert (other - x0).abs().max() > 1e-2


def test_ddpm_inversion_is_seeded(backbone, clip_latent, shared_ddpm):
    first, again = ddpm(backbone, clip_latent, seed=5), ddpm(backbone, clip_latent, seed=5)
    other, _ = shared_ddpm(backbone, clip_latent)  # seed 1
    assert torch.equal(first.noise, again.noise) and torch.equal(first.start, again.start)
    assert not torch.equal(first.start, other.start)


class SmoothBackbone:
    """A stand-in denoiser with a smooth ε(x) (DDIM inversion converges on it), answering in ε or v."""

    family, name, latent_channels, word_stream = "audioldm2", "smooth", 8, "t5"
    device = torch.device("cpu")

    def check_latent_length(self, samples, input_name="latent"):
        pass

    def __init__(self, prediction_type, scheduler):
        self.prediction_type = prediction_type
        self.scheduler = scheduler
        self.alphas = scheduler.alphas_cumprod

    def make_scheduler(self):
        return type(self.scheduler).from_config(self.scheduler.config)

    def step_schedule(self, steps):
        from prompt_audio_edit.engine.diffusion.steps import make_step_schedule

        return make_step_schedule(self.make_scheduler(), steps, self.prediction_type)

    def activate(self, part=None):
        pass

    def encode_text(self, prompts):
        from prompt_audio_edit.engine.backbones.base import TextConditioning

        return TextConditioning(list(prompts), {"t5": torch.zeros(len(prompts), 1, 4)}, {"t5": None},
                                {"t5": [["</s>"]] * len(prompts)})

    def predict(self, latents, timestep, conditioning):
        eps = 0.5 * torch.tanh(0.3 * latents + 0.1)
        if self.prediction_type == "epsilon":
            return eps
        alpha = float(self.alphas[int(timestep)])
        x0 = (latents - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5
        return alpha ** 0.5 * eps - (1 - alpha) ** 0.5 * x0


def test_ddim_inversion_reconstructs_within_tolerance(tiny_backbone):
    # Stated tolerance: from the middle of a 50-step schedule the relative error is below 1 %; DDIM inversion is
    # first order, so 5x the steps cuts it at least 2x; ε and v models invert identically.
    latent = {"samples": torch.randn(1, 8, 6, 4, generator=torch.Generator().manual_seed(0))}
    errors = {}
    for prediction in ("epsilon", "v_prediction"):
        smooth = SmoothBackbone(prediction, tiny_backbone.make_scheduler())
        for steps in (10, 50):
            inversion = invert(smooth, latent, "a dog", method="ddim", steps=steps, guidance=1.0, edit_start=0.5)
            back = redenoise(smooth, inversion)["samples"]
            errors[prediction, steps] = float((back - latent["samples"]).norm() / latent["samples"].norm())
    for prediction in ("epsilon", "v_prediction"):
        assert errors[prediction, 50] < 0.01
        assert errors[prediction, 50] * 2 < errors[prediction, 10]
    assert math.isclose(errors["epsilon", 50], errors["v_prediction", 50], rel_tol=1e-3)


def test_ddim_inversion_runs_on_the_real_model(backbone, clip_latent):
    (inversion,) = Invert().run(model=backbone, latent=clip_latent, source_prompt=SOURCE, method="ddim",
                                steps=STEPS, guidance=1.0, edit_start=0.5, seed=0)
    assert inversion.noise is None and not inversion.exact
    back = redenoise(backbone, inversion)["samples"]
    assert back.shape == clip_latent["samples"].shape and torch.isfinite(back).all()
    # Its source branch is denoised alongside the targets: an identity edit still equals the plain re-denoise.
    latent, _ = fuse(backbone, inversion, edit(SOURCE), scales="1")
    assert torch.allclose(latent["samples"], back, atol=1e-4)


# ------------------------------------------------------------------------------------------ identity edits
@pytest.mark.parametrize("mode", ["replace", "refine", "reweight"])
def test_identity_edit_equals_plain_redenoise(backbone, clip_latent, mode, shared_ddpm):
    inversion, plain = shared_ddpm(backbone, clip_latent)
    extra = {"reweight_words": "rain", "reweight_weights": "1"} if mode == "reweight" else {}
    spec = edit(SOURCE, mode, self_window=0.5, self_min_downsampling=1, **extra)
    # Every schedule on the ε model; the v model with the paper's cosine.
    schedules = ("cosine", "linear", "exponential", "binary") if backbone.prediction_type == "epsilon" else ("cosine",)
    # The branches with the controller and the source row (the Fuser itself runs this edit as the plain re-denoise):
    # the attention machinery with nothing to change changes nothing.
    for schedule in schedules:
        fused, _ = run_branches(backbone, inversion, 0, SOURCE, [3.0], spec.bind(SOURCE),
                                FusionSchedule(schedule, eta_min=0.3))
        assert torch.allclose(fused, plain, atol=1e-4), (schedule, (fused - plain).abs().max())


def test_real_edits_change_the_result(backbone, clip_latent, shared_ddpm):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    plain = redenoise(backbone, inversion, prompt="a cat meowing in the rain")["samples"]
    replaced, _ = fuse(backbone, inversion, edit("a cat meowing in the rain"))
    # The fused attention pulls the target towards the source: neither the source nor the unedited target.
    assert (replaced["samples"] - plain).abs().max() > 1e-3
    assert (replaced["samples"] - clip_latent["samples"]).abs().max() > 1e-3
    weighted, _ = fuse(backbone, inversion, edit(SOURCE, "reweight", reweight_words="rain", reweight_weights="2"))
    assert (weighted["samples"] - clip_latent["samples"]).abs().max() > 1e-3


def test_words_only_leaves_the_gpt2_stream_alone(backbone, clip_latent, shared_ddpm):
    if len(backbone.text_streams) == 1:
        pytest.skip("Tango has only the word stream")
    inversion, _ = shared_ddpm(backbone, clip_latent)
    target = "a cat meowing in the rain"
    every, _ = fuse(backbone, inversion, edit(target, streams="all"))
    words, _ = fuse(backbone, inversion, edit(target, streams="words only"))
    assert (every["samples"] - words["samples"]).abs().max() > 1e-4


def test_fusion_zero_is_the_unedited_target(backbone, clip_latent, shared_ddpm):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    target = "a cat meowing in the rain"
    plain = redenoise(backbone, inversion, prompt=target, guidance=3.0)["samples"]
    latent, _ = fuse(backbone, inversion, edit(target), eta_max=0.0, eta_min=0.0)
    assert torch.allclose(latent["samples"], plain, atol=1e-4)


# ---------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("kind", ["cosine", "linear", "exponential", "binary"])
def test_schedule_values_follow_the_formula(kind):
    s = FusionSchedule(kind, start=0.2, end=0.6, eta_min=0.4, eta_max=0.9, decay_rate=3.0)
    middle = 0.4
    expected = {
        "cosine": 0.4 + 0.5 * 0.5 * (1 + math.cos(math.pi * 0.5)),
        "linear": 0.9 - 0.5 * 0.5,
        "exponential": 0.4 + 0.5 * (math.exp(-1.5) - math.exp(-3.0)) / (1 - math.exp(-3.0)),
        "binary": 0.9,
    }[kind]
    assert s(0.0) == pytest.approx(0.9) and s(0.2) == pytest.approx(0.9)
    assert s(middle) == pytest.approx(expected)
    assert s(0.6) == pytest.approx(0.4) and s(1.0) == pytest.approx(0.4)
    if kind == "cosine":  # the paper's form at a quarter of the window
        assert s(0.3) == pytest.approx(0.4 + 0.25 * (1 + math.cos(math.pi * 0.25)))


# ------------------------------------------------------------------------------------------ token mapping
def test_t5_words_have_no_bos():
    assert token_words(["▁a", "▁dog", ",", "▁bark", "ing", "</s>"]) == [0, 1, 1, 2, 2, None]


def test_replace_mapping_equal_token_counts():
    source, target = ["▁a", "▁dog", "▁in", "</s>"], ["▁a", "▁cat", "▁in", "</s>"]
    m = replace_mapping(source, target, "a dog in", "a cat in", 6)
    expected = torch.zeros(6, 6)
    expected[[0, 1, 2, 3], [0, 1, 2, 3]] = 1.0
    assert torch.equal(m, expected)


def test_replace_mapping_unequal_token_counts():
    # 'dog' (1 token) -> 'loudly' (2 tokens): both new tokens take half of the old word's column; later ones shift.
    source, target = ["▁a", "▁dog", "▁in", "</s>"], ["▁a", "▁loud", "ly", "▁in", "</s>"]
    m = replace_mapping(source, target, "a dog in", "a loudly in", 6)
    expected = torch.zeros(6, 6)
    expected[0, 0] = 1.0
    expected[1, 1] = expected[1, 2] = 0.5
    expected[2, 3] = 1.0
    expected[3, 4] = 1.0
    assert torch.equal(m, expected)
    # Two source tokens -> one target token: the target column sums both.
    back = replace_mapping(target, source, "a loudly in", "a dog in", 6)
    assert back[1, 1] == 1.0 and back[2, 1] == 1.0 and back[3, 2] == 1.0


def test_refine_alignment_with_inserted_words():
    source = ["▁a", "▁dog", "▁in", "▁rain", "</s>"]
    target = ["▁a", "▁big", "▁dog", "▁in", "▁heavy", "▁rain", "</s>"]
    assert align_tokens(source, target) == [0, -1, 1, 2, -1, 3, 4]
    mapping, own = refine_mapping(source, target, 8)
    assert own.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    assert mapping[1, 2] == 1.0 and mapping[3, 5] == 1.0 and mapping.sum() == 5


# ------------------------------------------------------------------------------------------------ batching
def test_guidance_scales_in_one_batch_equal_separate_runs(backbone, clip_latent, shared_ddpm):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    spec = edit("a cat meowing in the rain")
    batched, _ = fuse(backbone, inversion, spec, scales="2, 5, 9")
    assert batched["samples"].shape[0] == 3
    assert [c["guidance"] for c in batched["pae"]["candidates"]] == [2.0, 5.0, 9.0]
    separate = torch.cat([fuse(backbone, inversion, spec, scales=s)[0]["samples"] for s in ("2", "5", "9")])
    scale = separate.abs().max()
    assert torch.allclose(batched["samples"], separate, atol=1e-5 * float(scale) + 1e-5)


def test_fuser_is_deterministic_and_restores_the_model(backbone, clip_latent, shared_ddpm):
    before = {k: type(v) for k, v in backbone.denoiser.attn_processors.items()}
    inversion, _ = shared_ddpm(backbone, clip_latent)
    spec = edit("a cat meowing in the rain", self_window=0.5, self_min_downsampling=1)
    first, maps = fuse(backbone, inversion, spec, scales="4, 8", local_blend=0.3)
    second, _ = fuse(backbone, inversion, spec, scales="4, 8", local_blend=0.3)
    assert torch.equal(first["samples"], second["samples"])
    assert {k: type(v) for k, v in backbone.denoiser.attn_processors.items()} == before
    # One map per target word, time across and frequency up.
    assert maps.shape[0] == len("a cat meowing in the rain".split()) and maps.shape[-1] == 3
    assert maps.shape[2] == clip_latent["samples"].shape[2] * 4


@pytest.mark.parametrize("blend_maps, threshold", [("all steps, 1/4 resolution", 0.985),
                                                   ("this step, every layer", 0.93)])
def test_local_blend_keeps_the_source_outside_the_mask(backbone, clip_latent, shared_ddpm, blend_maps, threshold):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    latent, _ = fuse(backbone, inversion, edit("a cat meowing in the rain"), local_blend=threshold, blend_start=0.0,
                     blend_maps=blend_maps)
    # Random weights attend almost uniformly (normalised maps 0.8-1.0), hence the high threshold.
    kept = (latent["samples"] == clip_latent["samples"]).all(dim=1)  # [1, T', F']: all channels from the source
    assert 0.0 < kept.float().mean() < 1.0


def test_latent_batch_edits_every_clip(backbone):
    a = core_style_audio(1.0, 16000, 1)
    batch = {"waveform": torch.cat([a["waveform"], a["waveform"].flip(-1)]), "sample_rate": 16000}
    latent = vae_encode(backbone, batch)
    inversion = ddpm(backbone, latent)
    out, _ = fuse(backbone, inversion, edit("a cat meowing in the rain"), scales="3, 6")
    assert out["samples"].shape[0] == 4
    assert [c["clip"] for c in out["pae"]["candidates"]] == [0, 0, 1, 1]
    assert out["pae"]["gain"].shape == (4,)


# ------------------------------------------------------------------------------------------- interruption
def test_interruption_stops_within_one_step(backbone, clip_latent, monkeypatch, shared_ddpm):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    calls = []
    original = type(backbone).predict

    def counting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            bridge.request_interrupt()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(backbone), "predict", counting)
    before = {k: type(v) for k, v in backbone.denoiser.attn_processors.items()}
    with pytest.raises(bridge.Interrupted):
        fuse(backbone, inversion, edit("a cat meowing in the rain"))
    assert len(calls) == 2  # the step that saw the request finished, no further step ran
    assert {k: type(v) for k, v in backbone.denoiser.attn_processors.items()} == before


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,node,name,words", [
    (dict(target_prompt="a cat meowing loudly in the rain", mode="replace"), "PAE_AttentionController",
     "target_prompt", "use Refine"),
    (dict(target_prompt="a cat meowing in the rain", mode="replace", reweight_words="thunder",
          reweight_weights="2"), "PAE_AttentionController", "reweight_words", "not a word of the target"),
    (dict(target_prompt="   ", mode="refine"), "PAE_AttentionController", "target_prompt", "empty"),
    (dict(target_prompt=SOURCE, mode="reweight"), "PAE_AttentionController", "reweight_words", "needs the words"),
    (dict(target_prompt="a cat", mode="reweight", reweight_words="cat", reweight_weights="2"),
     "PAE_AttentionController", "target_prompt", "Replace or Refine"),
    (dict(target_prompt="a cat in the rain", mode="refine", reweight_words="cat", reweight_weights="2, 3"),
     "PAE_AttentionController", "reweight_weights", "one weight for all"),
])
def test_controller_refuses_bad_edits(kwargs, node, name, words):
    with pytest.raises(ValueError) as info:
        Controller().run(source_prompt=SOURCE, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{node}: input '{name}':") and words in message


def test_fuser_and_invert_refuse_bad_input(backbone, clip_latent, shared_ddpm):
    with pytest.raises(ValueError, match=r"^PAE_DDIMInvert: input 'source_prompt': describe the clip"):
        Invert().run(model=backbone, latent=clip_latent, source_prompt=" ", steps=STEPS)
    too_long = " ".join(["rain"] * 600)  # past every encoder's limit (CLAP 64 .. Tango's T5 512)
    with pytest.raises(ValueError, match=r"^PAE_DDIMInvert: input 'source_prompt': .*tokens long but the .* text "
                       r"encoder takes at most"):
        Invert().run(model=backbone, latent=clip_latent, source_prompt=too_long, steps=STEPS)
    inversion, _ = shared_ddpm(backbone, clip_latent)
    with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'attention_edit': .*tokens long but the .* text "
                       r"encoder takes at most"):
        fuse(backbone, inversion, edit(SOURCE + " " + too_long, "refine"))
    with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'attention_edit': the edit's source prompt"):
        fuse(backbone, inversion, edit("a cat barking in the rain", source="a dog barking in the snow"))
    with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'guidance_scales': "):
        fuse(backbone, inversion, edit("a cat barking in the rain"), scales="3, lots")
    with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'schedule_start': "):
        fuse(backbone, inversion, edit("a cat barking in the rain"), schedule_start=0.9, schedule_end=0.5)
    other = model_registry.load_backbone(TINY_V_MODEL if backbone.name == "tiny-audioldm2" else TINY_MODEL, "fp32")
    if backbone.family != other.family:  # a Tango inversion offered to AudioLDM2: refused before anything runs
        with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'inversion': this inversion was made with tango"):
            fuse(other, inversion, edit("a cat barking in the rain"))
        return
    with pytest.raises(ValueError, match=r"^PAE_Fuser: input 'inversion': this inversion was made with"):
        fuse(other, inversion, edit("a cat barking in the rain"))


def test_source_prompt_may_come_from_the_inversion(backbone, clip_latent, shared_ddpm):
    inversion, _ = shared_ddpm(backbone, clip_latent)
    named, _ = fuse(backbone, inversion, edit("a cat meowing in the rain"))
    implied, _ = fuse(backbone, inversion, edit("a cat meowing in the rain", source=""))
    assert torch.equal(named["samples"], implied["samples"])
    with pytest.raises(ValueError, match="use Refine"):
        fuse(backbone, inversion, edit("a cat", source=""))


def test_no_autograd_graph_even_with_trainable_weights(backbone, clip_latent, shared_ddpm):
    # A UNet swapped in with requires_grad (a LoRA, a benchmark) must not make the samplers keep every step's graph.
    inversion, _ = shared_ddpm(backbone, clip_latent)
    weight = next(backbone.denoiser.parameters())
    weight.requires_grad_(True)
    try:
        latent, _ = fuse(backbone, inversion, edit("a cat meowing in the rain"))
        again = ddpm(backbone, clip_latent)
    finally:
        weight.requires_grad_(False)
    assert not latent["samples"].requires_grad and not again.noise.requires_grad


@pytest.mark.parametrize("name", [TINY_MODEL, TINY_V_MODEL, TINY_TANGO, "diffusers/tiny-stable-audio"],
                         ids=["eps", "v", "tango", "stable-audio"])
def test_edit_by_prompt_with_the_source_prompt_reproduces_the_clip_exactly_at_200_steps(tiny_dirs, name):
    # ZETA's numerical fix: the inversion stores x_{t-1} as mean + residual, so every reverse step meets the very
    # input the inversion saw. Without it the error grows with the steps (1e-2 .. 1e-1 here at 200 steps).
    backbone = model_registry.load_backbone(name, "fp32")
    clip = core_style_audio(0.25, backbone.sample_rate, backbone.channels)
    latent = vae_encode(backbone, clip)
    if latent["samples"].dim() == 4:  # a latent in channels-last layout (as a VAE may return) must not matter
        latent["samples"] = latent["samples"].to(memory_format=torch.channels_last)
    (inversion,) = Invert().run(model=backbone, latent=latent, source_prompt=SOURCE, method="ddpm", steps=200,
                                guidance=3.0, edit_start=0.0, seed=4)
    (back,) = NODE_CLASS_MAPPINGS["PAE_PromptEdit"]().run(model=backbone, inversion=inversion, target_prompt=SOURCE,
                                                         guidance_scales="3")
    assert (back["samples"] - latent["samples"]).abs().max() <= 1e-5
    # The Fuser with an edit that changes nothing at the inversion's guidance: the re-denoise, in the inversion's
    # row layout, so exact on the UNets too (beside a source row they drift by ~1e-2 at 200 steps).
    fuser = NODE_CLASS_MAPPINGS["PAE_Fuser"]()
    (fused, _) = fuser.run(model=backbone, inversion=inversion, attention_edit=edit(SOURCE), guidance_scales="3",
                           attention_maps=False)
    assert (fused["samples"] - latent["samples"]).abs().max() <= 1e-5


def test_windows_count_steps_as_prompt_to_prompt():
    from prompt_audio_edit.engine.attention.control import FusionController, window_steps
    from prompt_audio_edit.engine.attention.edit import make_attention_edit

    # Cross: int(w (N + 1)); self: int(w N). 0.8 of 50 is 40 either way; 0.15 of 10 is 1 step, not 2.
    assert [window_steps(w, 50, True) for w in (0.8, 0.4, 1.0, 0.3)] == [40, 20, 51, 15]
    assert window_steps(0.15, 10, True) == 1 and window_steps(0.25, 10, False) == 2
    spec = make_attention_edit("replace", SOURCE, "a cat barking in the rain", cross_window=0.15, self_window=0.25)
    controller = FusionController(spec, FusionSchedule("binary", 0.0, 1.0), {}, None, (4, 4), "t5")
    active = []
    for n in range(10):
        controller.begin_step(n, 10)
        active.append((controller.fusion > 0, controller.self_active))
    assert active[:3] == [(True, True), (False, True), (False, False)] and not any(a or b for a, b in active[3:])


def test_word_windows_are_parsed_checked_and_keep_expired_words_on_the_targets_own_attention():
    from prompt_audio_edit.engine.attention.alignment import TokenMapping
    from prompt_audio_edit.engine.attention.control import BranchLayout, FusionController
    from prompt_audio_edit.engine.attention.edit import make_attention_edit, parse_word_windows
    from prompt_audio_edit.engine.core.errors import PAEInputError

    assert parse_word_windows("cat: 0.4, rain: 1\nin the: 0") == (("cat", 0.4), ("rain", 1.0), ("in the", 0.0))
    for bad in ("cat 0.4", "cat: 2", ": 0.3"):
        with pytest.raises(PAEInputError, match="word_windows"):
            parse_word_windows(bad)
    with pytest.raises(PAEInputError, match="'lion' is not a word of the target"):
        make_attention_edit("replace", SOURCE, "a cat barking in the rain", word_windows="lion: 0.4")

    # Keys 0..5; the word at key 2 keeps a window of 0.5, every other key 0.2 (of 10 steps: 5 and 2 steps).
    spec = make_attention_edit("replace", SOURCE, "a cat barking in the rain", cross_window=0.2,
                               word_windows="cat: 0.5")
    length, dim = 6, 4
    mapping = TokenMapping(torch.eye(length).roll(1, dims=1), torch.zeros(length), torch.ones(length))
    controller = FusionController(spec, FusionSchedule("binary", 0.0, 1.0, eta_min=0.0, eta_max=0.7), {"t5": mapping},
                                  BranchLayout(0, [1]), (2, 2), "t5", word_columns=[([2], 0.5)])
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 4, dim, generator=generator), torch.randn(2, 1, length, dim, generator=generator)
    value = torch.randn(2, 1, length, dim, generator=generator)

    def expected(active):
        source = (query[0] @ key[0].transpose(-1, -2) / dim ** 0.5).softmax(-1) @ mapping.from_source  # [1, 4, L]
        own = (query[1] @ key[1].transpose(-1, -2) / dim ** 0.5).softmax(-1)
        mixed = active * source + (1 - active) * own
        return controller.fusion * (mixed @ value[1]) + (1 - controller.fusion) * (own @ value[1])

    site = type("Site", (), {"stream": "t5"})()
    for step, active in ((1, torch.ones(length)), (3, torch.tensor([0.0, 0, 1, 0, 0, 0])), (6, None)):
        controller.begin_step(step, 10)
        out = controller.attend(site, query, key, value, None)
        if active is None:
            assert controller.fusion == 0.0
            torch.testing.assert_close(out[1], torch.nn.functional.scaled_dot_product_attention(
                query[1:], key[1:], value[1:])[0])
        else:
            torch.testing.assert_close(out[1], expected(active), rtol=1e-5, atol=1e-6)


def test_each_prompt_is_encoded_once_per_model_across_nodes(tiny_backbone, monkeypatch):
    latent = vae_encode(tiny_backbone, core_style_audio(1.0, 16000, 1))
    calls: list[str] = []
    original = tiny_backbone.encode_text
    monkeypatch.setattr(tiny_backbone, "encode_text", lambda prompts, *a, **k: (calls.extend(prompts),
                                                                               original(prompts, *a, **k))[1])
    target = SOURCE.replace("dog", "cat")
    inversion = ddpm(tiny_backbone, latent)
    fuse(tiny_backbone, inversion, edit(target), scales="3, 6")
    fuse(tiny_backbone, inversion, edit(target), scales="9")
    redenoise(tiny_backbone, inversion, prompt=target, guidance=4.0)
    assert sorted(calls) == sorted({"", SOURCE, target})  # Invert, two Fusers, ZETA: each prompt once
