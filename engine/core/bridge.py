"""The one place that asks "am I inside ComfyUI?": devices, memory, progress, interruption, folders.

Inside ComfyUI every answer comes from ComfyUI's own modules (already imported by the time a pack
loads, so nothing here imports them eagerly); standalone there are plain defaults: `PAE_MODELS_DIR`
(default `./models`), `PAE_INPUT_DIR` (`./input`), `PAE_OUTPUT_DIR` (`./output`) and a console bar.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .errors import PAEInputError

# Model kinds the pack stores, each a folder under models/ (ComfyUI already registers "diffusers").
# audio_encoders: AudioMAE's old place (ComfyUI's own Audio Encoder Loader lists it too); checkpoints and text_encoders:
# Stable Audio Open as ComfyUI keeps it (one stable-audio-tools checkpoint plus t5-base.safetensors).
MODEL_KINDS = ("diffusers", "tango", "musicgen", "clap", "ap_adapter", "audiomae", "audio_encoders", "checkpoints",
               "text_encoders")

_overrides: dict[str, str] = {}
_extra_model_roots: list[Path] = []
_interrupt = threading.Event()
_progress_listener: Callable[[int, int], None] | None = None


class Interrupted(RuntimeError):
    """Raised between steps when the user asked to stop (standalone; ComfyUI raises its own)."""


def in_comfyui() -> bool:
    """True when running inside a ComfyUI process (its modules are loaded before any pack)."""
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


def _mm():
    import comfy.model_management as mm  # only reached inside ComfyUI

    return mm


def _folder_paths():
    import folder_paths  # only reached inside ComfyUI

    return folder_paths


# ----------------------------------------------------------------------------------------- folders
def set_directories(*, models: str | None = None, input: str | None = None, output: str | None = None,
                    temp: str | None = None) -> None:
    """Override the standalone folders (the headless runner's --models/--input-dir/--out, and its own temp folder)."""
    for key, value in (("models", models), ("input", input), ("output", output), ("temp", temp)):
        if value is not None:
            _overrides[key] = str(value)


def reset_directories() -> None:
    """Forget every override and extra models folder (back to the environment's defaults)."""
    _overrides.clear()
    _extra_model_roots.clear()


def add_model_root(root: str | os.PathLike) -> None:
    """Search another models folder after the main one (standalone; the runner's demo models live there)."""
    path = Path(root).absolute()
    if path not in _extra_model_roots:
        _extra_model_roots.append(path)


def models_dir() -> Path:
    """Root of the models folder."""
    if in_comfyui():
        return Path(_folder_paths().models_dir)
    return Path(_overrides.get("models") or os.environ.get("PAE_MODELS_DIR") or "models").absolute()


def model_folders(kind: str) -> list[Path]:
    """Every folder that holds models of one kind (ComfyUI's registered paths, incl. extra_model_paths.yaml)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    if in_comfyui():
        fp = _folder_paths()
        if kind not in fp.folder_names_and_paths:
            fp.add_model_folder_path(kind, os.path.join(fp.models_dir, kind))
        return [Path(p) for p in fp.get_folder_paths(kind)]
    return [models_dir() / kind] + [root / kind for root in _extra_model_roots]


def comfy_text_encoder_dir() -> Path | None:
    """ComfyUI's comfy/text_encoders/ folder (the T5 configs and tokenizers it ships); None outside ComfyUI."""
    if not in_comfyui():
        return None
    try:
        import comfy.text_encoders.sa_t5 as sa_t5  # Stable Audio's T5 (comfy.sd has imported it already)
    except ImportError:
        return None
    return Path(sa_t5.__file__).resolve().parent


def input_directory() -> Path:
    """Folder LoadAudio reads from."""
    if in_comfyui():
        return Path(_folder_paths().get_input_directory())
    return Path(_overrides.get("input") or os.environ.get("PAE_INPUT_DIR") or "input").absolute()


def output_directory() -> Path:
    """Folder SaveAudio writes into."""
    if in_comfyui():
        return Path(_folder_paths().get_output_directory())
    return Path(_overrides.get("output") or os.environ.get("PAE_OUTPUT_DIR") or "output").absolute()


def temp_directory() -> Path:
    """Folder for previews the browser shows but nobody keeps (ComfyUI's temp folder, cleared at its start)."""
    if in_comfyui():
        return Path(_folder_paths().get_temp_directory())
    return Path(_overrides.get("temp") or os.environ.get("PAE_TEMP_DIR")
                or Path(tempfile.gettempdir()) / "prompt-audio-edit").absolute()


def resolve_input_file(name: str, input_name: str = "audio") -> Path:
    """Path of a file the user picked in a loader, refusing names that escape the input folder."""
    from .files import resolve_inside

    if in_comfyui() and isinstance(name, str) and name.rstrip().endswith("]"):
        fp = _folder_paths()
        # "clip.wav [output]" style annotations pick another of ComfyUI's folders.
        stripped, base = fp.annotated_filepath(name)
        base = base or fp.get_input_directory()
        return resolve_inside(base, stripped, input_name)
    return resolve_inside(input_directory(), name, input_name)


def list_input_files(extensions: Iterable[str]) -> list[str]:
    """Files in the input folder (and its subfolders) with one of the extensions, as relative names."""
    root = input_directory()
    if not root.is_dir():
        return []
    exts = tuple(e.lower() for e in extensions)
    found = []
    for folder, _dirs, files in os.walk(root):
        for file in files:
            # Regular files only: a FIFO or device named like audio would block the reader.
            if file.lower().endswith(exts) and not file.startswith(".") and os.path.isfile(os.path.join(folder, file)):
                found.append(os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/"))
    return sorted(found)


# ----------------------------------------------------------------------------------- devices, dtypes
def torch_device() -> torch.device:
    """Device models compute on: ComfyUI's choice, else CUDA/MPS when present, else CPU."""
    if in_comfyui():
        return _mm().get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Device idle models wait on."""
    if in_comfyui():
        return _mm().unet_offload_device()
    return torch.device("cpu")


DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def choose_dtype(name: str, device: torch.device) -> torch.dtype:
    """Resolve a dtype widget value. 'auto' inside ComfyUI is ComfyUI's choice for the device (fp16, else bf16, else
    fp32; CUDA and Apple MPS alike); standalone fp16 on CUDA and MPS; fp32 on the CPU everywhere."""
    if name in _DTYPES:
        return _DTYPES[name]
    if name != "auto":
        raise PAEInputError("dtype", f"unknown dtype '{name}'; choose one of {', '.join(DTYPE_CHOICES)}.")
    if device.type == "cpu":
        return torch.float32
    if in_comfyui():
        mm = _mm()
        if mm.should_use_fp16(device):
            return torch.float16
        if mm.should_use_bf16(device):
            return torch.bfloat16
        return torch.float32
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def free_memory() -> None:
    """Return cached accelerator memory (ComfyUI's soft_empty_cache when inside it)."""
    if in_comfyui():
        _mm().soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- the server: routes and events
def _prompt_server() -> Any | None:
    # ComfyUI's `server` module is imported before custom nodes load; never import it here.
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def server_routes() -> Any | None:
    """ComfyUI's aiohttp route table (PromptServer.instance.routes), or None outside ComfyUI's server."""
    return getattr(_prompt_server(), "routes", None)


def send_event(event: str, data: dict[str, Any]) -> None:
    """Push an event to every open page (ComfyUI's websocket); nothing outside ComfyUI's server."""
    prompt_server = _prompt_server()
    if prompt_server is not None:
        prompt_server.send_sync(event, data)


# ----------------------------------------------------------------------------- progress, interrupt
def request_interrupt() -> None:
    """Ask the running loop to stop at its next step (standalone runs; ComfyUI has its own button)."""
    _interrupt.set()


def check_interrupted() -> None:
    """Raise if the user asked to stop; called between steps of every long loop."""
    if in_comfyui():
        _mm().throw_exception_if_processing_interrupted()
    elif _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("stopped by the user")


def set_progress_listener(listener: Callable[[int, int], None] | None) -> None:
    """Standalone: also tell listener(value, total) of every step (a batch worker reports it to the driver)."""
    global _progress_listener
    _progress_listener = listener


PREVIEW_INTERVAL_S = 0.2  # a MusicGen token or a small model's step can take milliseconds; the page needs no more


def previews_enabled() -> bool:
    """Whether ComfyUI shows sampler previews (--preview-method other than none); never outside ComfyUI."""
    if not in_comfyui():
        return False
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def _preview_image(pixels: Any) -> tuple[str, Any, int]:
    from comfy.cli_args import args
    from PIL import Image  # ComfyUI's own dependency

    return "JPEG", Image.fromarray(pixels), int(args.preview_size)


class Progress:
    """Per-step progress: ComfyUI's node progress bar inside ComfyUI, a console bar otherwise."""

    def __init__(self, total: int, description: str = ""):
        self.total = int(total)
        self.value = 0
        self._comfy_bar: Any = None
        self._console: Any = None
        if in_comfyui():
            import comfy.utils

            self._comfy_bar = comfy.utils.ProgressBar(self.total)
            self._previews = previews_enabled()
            self._last_preview = -math.inf
        else:
            from tqdm.auto import tqdm

            self._console = tqdm(total=self.total, desc=description or None, leave=False, file=sys.stderr,
                                 disable=None)

    def step(self, n: int = 1, preview: Callable[[], Any] | None = None) -> None:
        """Advance by n steps, then honour an interruption request. preview() gives an 8-bit picture [H, W, 3] of the
        loop's state; it is called only when ComfyUI shows previews, at most every PREVIEW_INTERVAL_S."""
        self.value += n
        if self._comfy_bar is not None:
            picture = None
            now = time.monotonic()
            if preview is not None and self._previews and (now - self._last_preview >= PREVIEW_INTERVAL_S
                                                           or self.value >= self.total):
                self._last_preview = now
                try:
                    picture = _preview_image(preview())
                except Exception as exc:  # a picture must never stop the run (e.g. a latent gone non-finite)
                    self._previews = False
                    print(f"[prompt-audio-edit] live preview off for this loop: {exc}", file=sys.stderr)
            self._comfy_bar.update_absolute(self.value, self.total, picture)
        if self._console is not None:
            self._console.update(n)
        if _progress_listener is not None:
            _progress_listener(self.value, self.total)
        check_interrupted()

    def close(self) -> None:
        if self._console is not None:
            self._console.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------ model memory
class PromptAudioEditModel(torch.nn.ModuleDict):
    """A loaded model's parts in one plain container; ComfyUI's log names models by this class."""


class ManagedModel:
    """A loaded model's weight-bearing parts; inside ComfyUI one ModelPatcher per part (text encoders, denoiser, VAE
    and vocoder, ...) lets ComfyUI keep on the GPU only the part a step needs and offload the others."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device, label: str,
                 parts: dict[str, tuple[str, ...]] | None = None):
        self.device, self.label = device, label  # device: where activate() puts the weights (the compute device)
        groups = {part: names for part, names in (parts or {}).items() if any(name in modules for name in names)}
        rest = tuple(name for name in modules if not any(name in names for names in groups.values()))
        if rest:
            groups["rest" if groups else "all"] = rest
        # Plain containers: ComfyUI's patcher sets attributes (e.g. .device) that diffusers models forbid.
        self.containers = {part: PromptAudioEditModel({name: modules[name] for name in names if name in modules})
                           for part, names in groups.items()}
        self.patchers: dict[str, Any] = {}
        for part, container in self.containers.items():
            container.requires_grad_(False).eval()
            if in_comfyui():
                import comfy.model_patcher

                # Tied weights counted once (ComfyUI's default count would add them twice).
                unique = {id(t): t for t in [*container.parameters(), *container.buffers()]}
                size = sum(t.numel() * t.element_size() for t in unique.values())
                self.patchers[part] = comfy.model_patcher.ModelPatcher(container, load_device=device,
                                                                       offload_device=offload_device(), size=size)
            else:
                container.to(device)

    def activate(self, part: str | None = None) -> None:
        """Bring a part's weights (all parts: None, or a part this model does not split off) to the compute device;
        ComfyUI may have offloaded them to make room, and may offload other parts for this one."""
        if not self.patchers:
            return
        chosen = [self.patchers[part]] if part in self.patchers else list(self.patchers.values())
        # Full load: ComfyUI can only part-load its own layer types; ours would be left behind on the CPU.
        _mm().load_models_gpu(chosen, force_full_load=True)
