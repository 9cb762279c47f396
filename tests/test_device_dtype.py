"""Every method end to end on the tiny models, (1) with PyTorch's default device set to `meta`, so a tensor the pack
makes without saying where (noise, masks, schedules, Gumbel noise, previews) cannot reach the CPU model and fails
loudly, as it would next to a CUDA latent; (2) in fp16 and bf16 on CPU: finite, no dtype mismatch, and close to
fp32."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
from tests.conftest import (TINY_AP_ADAPTER, TINY_AUDIOMAE, TINY_CLAP, TINY_MODEL, TINY_MUSICGEN, TINY_SAO,
                            TINY_SAO_INSTRUCT_SAT, TINY_TANGO, TINY_V_MODEL)
from tests.helpers import tone, write_with_pyav

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "api"


def shipped(name: str, changes: dict[str, object]) -> Callable[[], dict]:
    """A shipped API workflow with 'NODE.INPUT' values changed (tiny models, short clips, few steps)."""
    def graph() -> dict:
        g = load_api_workflow(WORKFLOWS / f"{name}_api.json")
        for target, value in changes.items():
            node, input_name = target.split(".")
            g[node]["inputs"][input_name] = value
        return g
    return graph


def ppae(model: str) -> Callable[[], dict]:
    # the local blend makes its mask: the one place the Fuser materialises attention maps
    return shipped("ppae_replace", {"2.model_name": model, "8.model_name": TINY_CLAP, "1.duration": 1.0,
                                    "4.steps": 4, "6.guidance_scales": "3, 6", "6.local_blend": 0.3})


def stable_audio(name: str, model: str, seconds: float = 1.0) -> Callable[[], dict]:
    return shipped(name, {"2.model_name": model, "1.duration": seconds, "4.steps": 4})


# PyTorch has no fast half-precision convolution on most CPUs (a slow reference kernel, ~100x fp32), and Oobleck's
# encoder convolves at the full 44.1 kHz rate: a tenth of a second keeps its fp16 / bf16 runs short.
OOBLECK_SECONDS = 0.1


def editgen(name: str) -> Callable[[], dict]:
    changes = {"1.model_name": TINY_MUSICGEN, "3.duration": 0.3}
    return shipped(name, {**changes, "6.duration": 0.3} if name == "editgen_recording" else changes)


ap_adapter = shipped("ap_timbre_transfer", {"2.model_name": TINY_MODEL, "3.adapter_name": TINY_AP_ADAPTER,
                                            "3.audio_encoder": TINY_AUDIOMAE, "6.steps": 2, "6.seconds": 1.0})
roundtrip = shipped("audio_roundtrip", {"2.model_name": TINY_MODEL, "1.duration": 1.0})


def sample() -> dict:
    g = roundtrip()
    g["7"] = {"class_type": "PAE_Sample", "inputs": {"model": ["2", 0], "positive": "a piano", "negative": "noise",
                                                      "seed": 3, "steps": 3, "guidance": 3.0, "batch_size": 2,
                                                      "seconds": 1.0, "denoise": 1.0}}
    g["4"]["inputs"]["latent"] = ["7", 0]
    return g


# case -> (graph, the node whose first output is the AUDIO compared across dtypes)
CASES: dict[str, tuple[Callable[[], dict], str]] = {
    "ppae_audioldm2_eps": (ppae(TINY_MODEL), "9"),
    "ppae_audioldm2_v": (ppae(TINY_V_MODEL), "9"),
    "ppae_tango": (ppae(TINY_TANGO), "9"),
    "ppae_stable_audio": (stable_audio("sao_attention_replace", TINY_SAO, OOBLECK_SECONDS), "7"),
    "zeta_stable_audio": (stable_audio("sao_zeta_edit", TINY_SAO, OOBLECK_SECONDS), "6"),
    "zeta_audioldm2": (stable_audio("sao_zeta_edit", TINY_MODEL), "6"),
    "sao_instruct": (stable_audio("sao_instruct_edit", TINY_SAO_INSTRUCT_SAT, OOBLECK_SECONDS), "5"),
    "ap_adapter": (ap_adapter, "7"),
    "editgen_generated": (editgen("editgen_replace"), "3"),
    "editgen_recording": (editgen("editgen_recording"), "3"),
    "vae_roundtrip": (roundtrip, "4"),
    "sample": (sample, "4"),
}


@pytest.fixture
def method_dirs(clap_dirs):
    write_with_pyav(clap_dirs["input"] / "example.wav", tone(1.5, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    return clap_dirs


def with_dtype(graph: dict, dtype: str) -> dict:
    for node in graph.values():
        if "dtype" in node["inputs"]:
            node["inputs"]["dtype"] = dtype
    return graph


def one_candidate(graph: dict) -> dict:
    """One guidance scale: CLAP Select's pick between candidates is a discrete choice, which bf16 scores may flip
    (then the whole clip differs, ~80 %); the comparison is about the arithmetic, not the pick."""
    for node in graph.values():
        if node["class_type"] == "PAE_Fuser":
            node["inputs"]["guidance_scales"] = node["inputs"]["guidance_scales"].split(",")[0]
    return graph


def audio_of(results: dict, node: str) -> torch.Tensor:
    audio: Any = results[node].outputs[0]
    return audio["waveform"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_tensor_is_made_without_a_device(method_dirs, case):
    build, node = CASES[case]
    warm = execute_workflow(build(), NODE_CLASS_MAPPINGS)  # loads the models (on the CPU) and holds them
    with torch.device("meta"):
        # Anything made here without device= is a meta tensor: meeting a CPU weight or being read raises.
        results = execute_workflow(build(), NODE_CLASS_MAPPINGS)
    produced = audio_of(results, node)
    assert produced.device.type == "cpu"
    assert torch.equal(produced, audio_of(warm, node))  # the same run, bit for bit


def test_regions_and_windows_make_nothing_without_a_device():
    from prompt_audio_edit.engine.io.audio import make_audio
    from prompt_audio_edit.engine.methods.regions import cut_region, join_windows, paste_region, split_windows

    song = make_audio(torch.from_numpy(tone(6.0, 16000, 2))[None], 16000)
    expected = paste_region(song, *cut_region(song, 1.0, 2.5, context=0.5))
    joined = join_windows(*split_windows(song, window=2.0, overlap=0.5))
    with torch.device("meta"):
        pasted = paste_region(song, *cut_region(song, 1.0, 2.5, context=0.5))
        rejoined = join_windows(*split_windows(song, window=2.0, overlap=0.5))
    assert torch.equal(pasted["waveform"], expected["waveform"]) and pasted["waveform"].device.type == "cpu"
    assert torch.equal(rejoined["waveform"], joined["waveform"])


# fp16 / bf16 against fp32: relative L2 distance of the output audio (tiny random models, a few steps, the same
# noise). Measured: fp16 0.03-4 %, bf16 0.3-24 % (its 8-bit mantissa through the HiFi-GAN vocoder and AudioMAE).
TOLERANCE = {"fp16": 0.05, "bf16": 0.30}


FP32_RESULTS: dict[str, torch.Tensor] = {}  # case -> its fp32 output, run once for both half dtypes


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("case", sorted(CASES))
def test_half_precision_end_to_end(method_dirs, case, dtype):
    build, node = CASES[case]
    if case not in FP32_RESULTS:
        FP32_RESULTS[case] = audio_of(execute_workflow(one_candidate(with_dtype(build(), "fp32")),
                                                       NODE_CLASS_MAPPINGS), node)
    reference = FP32_RESULTS[case]
    produced = audio_of(execute_workflow(one_candidate(with_dtype(build(), dtype)), NODE_CLASS_MAPPINGS), node)
    assert produced.dtype == torch.float32 and produced.shape == reference.shape  # AUDIO stays float32
    assert torch.isfinite(produced).all()
    distance = ((produced - reference).norm() / reference.norm().clamp_min(1e-8)).item()
    print(f"{case} {dtype}: relative distance to fp32 {distance:.2e}")
    assert math.isfinite(distance) and distance < TOLERANCE[dtype], f"{case} {dtype}: {distance:.3g}"
    assert distance > 0  # it did run in half precision (the loaders honoured the dtype)
