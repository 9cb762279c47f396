"""The bridge's two faces: plain defaults standalone, ComfyUI's own services when ComfyUI's modules are loaded."""

from __future__ import annotations

import enum
import sys
import types

import pytest
import torch

from prompt_audio_edit.engine.core import bridge


@pytest.fixture
def fake_comfyui(monkeypatch, tmp_path):
    """Stand-ins for the ComfyUI modules the bridge talks to, recording what it asks of them."""
    calls: list[tuple] = []
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path / "models")
    folder_paths.folder_names_and_paths = {"diffusers": ([str(tmp_path / "models" / "diffusers")], set())}
    folder_paths.add_model_folder_path = lambda name, path, is_default=False: (
        calls.append(("add_model_folder_path", name, path)),
        folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path))
    folder_paths.get_folder_paths = lambda name: list(folder_paths.folder_names_and_paths[name][0])
    folder_paths.get_input_directory = lambda: str(tmp_path / "comfy_input")
    folder_paths.get_output_directory = lambda: str(tmp_path / "comfy_output")
    folder_paths.annotated_filepath = lambda name: (name[:-9], str(tmp_path / "comfy_output")) \
        if name.endswith(" [output]") else (name, None)

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.load_models_gpu = lambda models, **kw: (
        calls.append(("load_models_gpu", len(models), kw)),
        calls.append(("loaded", tuple(sorted(name for m in models for name in m.model.keys())))))
    mm.soft_empty_cache = lambda: calls.append(("soft_empty_cache",))
    mm.throw_exception_if_processing_interrupted = lambda: calls.append(("interrupt_check",))
    mm.should_use_fp16 = lambda device: True
    mm.should_use_bf16 = lambda device: False

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            calls.append(("ModelPatcher", size))
            self.model = model

    class ProgressBar:
        def __init__(self, total):
            calls.append(("ProgressBar", total))

        def update_absolute(self, value, total=None, preview=None):
            calls.append(("progress", value, total) if preview is None else ("preview", value, preview))

    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.LatentPreviewMethod = enum.Enum("LatentPreviewMethod", {"NoPreviews": "none", "Auto": "auto"})
    cli_args.args = types.SimpleNamespace(preview_method=cli_args.LatentPreviewMethod.NoPreviews, preview_size=512)
    comfy = types.ModuleType("comfy")
    patcher_module = types.ModuleType("comfy.model_patcher")
    patcher_module.ModelPatcher = ModelPatcher
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy.model_management, comfy.model_patcher, comfy.utils, comfy.cli_args = mm, patcher_module, utils, cli_args
    for name, module in {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": mm,
                         "comfy.cli_args": cli_args,
                         "comfy.model_patcher": patcher_module, "comfy.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert bridge.in_comfyui()
    return calls, tmp_path


def test_standalone_defaults(monkeypatch, tmp_path):
    bridge.reset_directories()
    monkeypatch.setenv("PAE_MODELS_DIR", str(tmp_path / "m"))
    assert not bridge.in_comfyui()
    assert bridge.model_folders("musicgen") == [tmp_path / "m" / "musicgen"]
    assert bridge.choose_dtype("auto", torch.device("cpu")) == torch.float32
    assert bridge.choose_dtype("auto", torch.device("mps")) == torch.float16  # as ComfyUI gives Apple GPUs
    assert bridge.choose_dtype("auto", torch.device("cuda")) == torch.float16
    bridge.request_interrupt()
    with pytest.raises(bridge.Interrupted):
        bridge.check_interrupted()
    bridge.check_interrupted()  # the request is consumed


def test_inside_comfyui_folders_come_from_folder_paths(fake_comfyui):
    calls, tmp_path = fake_comfyui
    assert bridge.model_folders("diffusers") == [tmp_path / "models" / "diffusers"]
    assert bridge.model_folders("tango") == [tmp_path / "models" / "tango"]
    assert ("add_model_folder_path", "tango", str(tmp_path / "models" / "tango")) in calls
    assert bridge.input_directory() == tmp_path / "comfy_input"
    assert bridge.resolve_input_file("take.wav [output]") == tmp_path / "comfy_output" / "take.wav"
    assert bridge.choose_dtype("auto", torch.device("cuda")) == torch.float16
    assert bridge.choose_dtype("auto", torch.device("mps")) == torch.float16  # ComfyUI's answer, not fp32
    assert bridge.choose_dtype("auto", torch.device("cpu")) == torch.float32


def test_inside_comfyui_models_are_managed_and_loaded_whole(fake_comfyui):
    calls, _ = fake_comfyui
    shared = torch.nn.Linear(4, 4)
    tied = torch.nn.Linear(4, 4)
    tied.weight = shared.weight  # counted once in the size ComfyUI is told
    managed = bridge.ManagedModel({"a": shared, "b": tied}, torch.device("cpu"), "test")
    expected = (16 + 4 + 4) * 4
    assert ("ModelPatcher", expected) in calls
    managed.activate()
    assert ("load_models_gpu", 1, {"force_full_load": True}) in calls


def test_inside_comfyui_progress_and_interruption(fake_comfyui):
    calls, _ = fake_comfyui
    with bridge.Progress(3) as progress:
        for _ in range(3):
            progress.step()
    assert [c for c in calls if c[0] == "progress"] == [("progress", n, 3) for n in (1, 2, 3)]
    assert calls.count(("interrupt_check",)) == 3 and ("ProgressBar", 3) in calls


def test_inside_comfyui_previews_follow_the_preview_method(fake_comfyui, monkeypatch):
    """With ComfyUI's previews off (its default) the preview is never computed; with them on, every step sends a
    JPEG picture at most every PREVIEW_INTERVAL_S, and the last step always does."""
    from prompt_audio_edit.engine.io.previews import latent_preview

    calls, _ = fake_comfyui
    latent = torch.randn(8, 40, 16, generator=torch.Generator().manual_seed(1))
    asked = []

    def picture():
        asked.append(1)
        return latent_preview(latent)

    with bridge.Progress(3) as progress:
        for _ in range(3):
            progress.step(preview=picture)
    assert not asked and not [c for c in calls if c[0] == "preview"]

    cli_args = sys.modules["comfy.cli_args"]
    cli_args.args.preview_method = cli_args.LatentPreviewMethod.Auto
    monkeypatch.setattr(bridge, "PREVIEW_INTERVAL_S", 3600.0)
    with bridge.Progress(4) as progress:
        for _ in range(4):
            progress.step(preview=picture)
    sent = [c for c in calls if c[0] == "preview"]
    assert [value for _, value, _ in sent] == [1, 4] and len(asked) == 2  # the first step, then the last
    kind, image, size = sent[0][2]
    assert kind == "JPEG" and size == 512 and image.size == (128, 128) and image.mode == "RGB"
    assert [c[1] for c in calls if c[0] == "progress"][-2:] == [2, 3]  # the steps between went without a picture


def test_inside_comfyui_each_part_has_its_patcher_and_text_is_encoded_before_the_denoiser_loads(
        fake_comfyui, tiny_models_root):
    """Text encoders, denoiser and VAE + vocoder are separate patchers: ComfyUI can offload the text encoders once the
    prompts are encoded and keep only the denoiser for the steps."""
    from prompt_audio_edit.engine.backbones import registry
    from prompt_audio_edit.engine.core import loading
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from tests.conftest import TINY_MODEL

    calls, _ = fake_comfyui
    sys.modules["folder_paths"].folder_names_and_paths["diffusers"] = ([str(tiny_models_root / "diffusers")], set())
    loading.clear_cache()
    backbone = registry.load_backbone(TINY_MODEL, "fp32")
    sizes = [size for kind, size in (c for c in calls if c[0] == "ModelPatcher")]
    total = sum(t.numel() * t.element_size() for t in {id(t): t for m in backbone.modules.values()
                                                        for t in [*m.parameters(), *m.buffers()]}.values())
    assert len(sizes) == 3 and sum(sizes) == total  # text, denoiser, vae + vocoder: every weight in one of them
    latent = backbone.encode_audio(torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0)), 16000)
    del calls[:]
    invert(backbone, latent, "a dog barking", steps=4, edit_start=0.5)
    loads = [c[1] for c in calls if c[0] == "loaded"]
    text = ("language_model", "projection_model", "text_encoder", "text_encoder_2")
    assert loads[0] == ("unet",) and text in loads  # the method claims the denoiser, the prompt brings in the text
    assert loads[-1] == ("unet",) and loads.index(text) < len(loads) - 1  # ... and the denoiser is back for the steps
    assert ("vae", "vocoder") not in loads  # nothing asked for the VAE while inverting
    loading.clear_cache()


def test_a_failing_preview_never_stops_the_loop(fake_comfyui, capsys):
    calls, _ = fake_comfyui
    cli_args = sys.modules["comfy.cli_args"]
    cli_args.args.preview_method = cli_args.LatentPreviewMethod.Auto

    def broken():
        raise RuntimeError("linalg.eigh: failed to converge")

    with bridge.Progress(3) as progress:
        for _ in range(3):
            progress.step(preview=broken)
    assert [c[1] for c in calls if c[0] == "progress"] == [1, 2, 3]  # every step reported, no picture
    assert "live preview off" in capsys.readouterr().err

