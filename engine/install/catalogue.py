"""Every model the pack reads: where it comes from (hub repository at a pinned revision, or by hand), which files,
where they go under the models folder, how big, for which methods and under which licence."""

from __future__ import annotations

from dataclasses import dataclass

# What `--for` accepts, and what each method's shipped workflows load.
METHODS = ("ppae", "ap-adapter", "editgen", "sao")


@dataclass(frozen=True)
class HubFiles:
    """Files of one hub repository at one revision, and where each lands inside its part.

    revision: a commit id, which fixes every file's bytes; "" where the catalogue holds none yet, in which case the
    branch `main` is resolved to its commit once per download and that commit is recorded in the part's manifest.
    patterns: the repository paths to take (fnmatch globs); of several weight formats of one file only the
    safetensors copy is taken (see hub.select_files). rename: repository path -> path inside the part.
    """

    repo: str
    revision: str
    patterns: tuple[str, ...]
    rename: tuple[tuple[str, str], ...] = ()
    gated: bool = False

    def local_path(self, repo_path: str) -> str:
        """Where a repository file goes inside its part."""
        return dict(self.rename).get(repo_path, repo_path)


@dataclass(frozen=True)
class ByHand:
    """A file no hub the tool can reach has (e.g. a Google-Drive link): its exact source and, where the release
    publishes one, its SHA-256."""

    source: str
    file: str             # the name it must have inside its part
    sha256: str = ""      # "" where no hash is published; `pae models check` then checks that it loads
    size_mb: float = 0.0


@dataclass(frozen=True)
class Part:
    """One folder or file under the models folder, claimed whole when its download completes."""

    path: str                       # relative to the models folder, e.g. 'diffusers/audioldm2-large'
    hub: tuple[HubFiles, ...] = ()
    by_hand: tuple[ByHand, ...] = ()
    is_file: bool = False           # a single file (ComfyUI's checkpoints/, text_encoders/) rather than a folder
    required: tuple[str, ...] = ()  # files that make the part complete (inside the folder; '' for a file part)


@dataclass(frozen=True)
class ModelEntry:
    """One model a user asks for by name."""

    name: str
    purpose: str
    methods: tuple[str, ...]
    workflows: tuple[str, ...]      # shipped workflow stems that load it
    size_mb: float                  # approximate download size (MiB); the hub's own listing is checked on download
    parts: tuple[Part, ...]
    licence: str
    loader_values: tuple[str, ...]  # what a loader's dropdown (and a saved workflow) calls it
    needs: tuple[str, ...] = ()     # other entries it is used with (fetched along with --for / --workflow)
    note: str = ""
    ungated: str = ""               # the entry of an ungated copy, where this one is gated

    @property
    def gated(self) -> bool:
        """True where a hub repository asks the user to accept a licence first."""
        return any(h.gated for p in self.parts for h in p.hub)


_DIFFUSERS_FILES = ("model_index.json", "*/*.json", "*/*.safetensors", "*/*.bin", "*/*.txt", "*/*.model")
_TRANSFORMERS_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "spiece.model", "*.model")
_T5_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json")
# Public commit ids recorded from published uses of these repositories.
_FLAN_T5_LARGE = HubFiles("google/flan-t5-large", "0613663d0d48ea86ba8cb3d7a44f0f65dc596a2a", _T5_TOKENIZER)
_T5_BASE = "a9723ea7f1b39c1eae772870f3b547bf6ef7e6c1"
_CC_BY_NC_SA = "CC BY-NC-SA 4.0 (non-commercial)"
_STABILITY = ("Stability AI Community License (free below USD 1 M annual revenue; credit 'Powered by Stability AI'); "
              "gated: accept it on the model page")


def _tango(name: str, repo: str) -> ModelEntry:
    files = ("main_config.json", "vae_config.json", "stft_config.json", "pytorch_model_main.bin",
             "pytorch_model_vae.bin", "pytorch_model_stft.bin")
    overrides = ("unet_config.json", "t5_config.json")  # not in the releases; a folder may carry its own geometry
    return ModelEntry(
        name=name, purpose=f"{name.capitalize()} text-to-audio diffusion (PPAE backbone)", methods=("ppae",),
        workflows=(), size_mb=3300,
        parts=(Part(f"tango/{name}", hub=(HubFiles(repo, "", files + overrides), _FLAN_T5_LARGE),
                    required=files + ("tokenizer.json",)),),
        licence=_CC_BY_NC_SA, loader_values=(f"tango/{name}",),
        note="the release has no tokenizer (the reference fetches FLAN-T5-large's at run time): the getter adds "
             "google/flan-t5-large's tokenizer files to the folder")


def _musicgen(size: str, mb: float, workflows: tuple[str, ...] = ()) -> ModelEntry:
    return ModelEntry(
        name=f"musicgen-{size}", purpose=f"MusicGen {size}: token-by-token music generation (EditGen)",
        methods=("editgen",), workflows=workflows, size_mb=mb,
        parts=(Part(f"musicgen/musicgen-{size}", hub=(HubFiles(f"facebook/musicgen-{size}", "", _TRANSFORMERS_FILES),),
                    required=("config.json", "generation_config.json")),),
        licence="CC BY-NC 4.0 (non-commercial)", loader_values=(f"musicgen-{size}",))


def _audioldm2(name: str, revision: str, mb: float, methods: tuple[str, ...], workflows: tuple[str, ...],
               needs: tuple[str, ...] = ()) -> ModelEntry:
    return ModelEntry(
        name=name, purpose=f"{name} text-to-audio latent diffusion (PPAE backbone"
        + ("; AP-Adapter's base model" if "ap-adapter" in methods else "") + ")",
        methods=methods, workflows=workflows, size_mb=mb,
        parts=(Part(f"diffusers/{name}", hub=(HubFiles(f"cvssp/{name}", revision, _DIFFUSERS_FILES),),
                    required=("model_index.json", "unet/config.json")),),
        licence=_CC_BY_NC_SA, loader_values=(f"diffusers/{name}",), needs=needs)


_PPAE_WORKFLOWS = ("ppae_replace", "ppae_refine", "ppae_reweight", "ppae_song_region", "audio_roundtrip")
_AP_WORKFLOWS = ("ap_accompaniment", "ap_genre_transfer", "ap_timbre_song", "ap_timbre_transfer")
_T5_FOLDER = Part("text_encoders/t5-base", hub=(HubFiles("google-t5/t5-base", _T5_BASE,
                                                         ("config.json",) + _T5_TOKENIZER),),
                  required=("config.json", "tokenizer.json"))

CATALOGUE: tuple[ModelEntry, ...] = (
    _audioldm2("audioldm2-large", "4b0b875a9e0c5305dfc917da808584e50e1c7ed4", 5683, ("ppae", "ap-adapter"),
               _PPAE_WORKFLOWS + _AP_WORKFLOWS),
    _audioldm2("audioldm2", "c8e7e189d324425c05c4c2f81214041ef4107983", 4267, ("ppae",), ()),
    _audioldm2("audioldm2-music", "", 4267, ("ppae",), ()),
    _tango("tango2", "declare-lab/tango2"),
    _tango("tango", "declare-lab/tango"),
    ModelEntry(
        name="clap-htsat-unfused", purpose="CLAP text-audio model: CLAP Select picks the guidance that fits the "
        "target prompt (PPAE)", methods=("ppae",), workflows=("ppae_replace", "ppae_refine", "ppae_reweight"),
        size_mb=590,
        parts=(Part("clap/clap-htsat-unfused", hub=(HubFiles("laion/clap-htsat-unfused",
                                                             "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a",
                                                             _TRANSFORMERS_FILES),),
                    required=("config.json",)),),
        licence="Apache 2.0", loader_values=("clap-htsat-unfused",)),
    ModelEntry(
        name="larger-clap-music", purpose="CLAP trained on music: an alternative for CLAP Select on music",
        methods=(), workflows=(), size_mb=740,
        parts=(Part("clap/larger_clap_music", hub=(HubFiles("laion/larger_clap_music", "", _TRANSFORMERS_FILES),),
                    required=("config.json",)),),
        licence="Apache 2.0", loader_values=("larger_clap_music",)),
    ModelEntry(
        name="ap-adapter", purpose="AP-Adapter's audio-prompt projections for AudioLDM2-large", methods=("ap-adapter",),
        workflows=_AP_WORKFLOWS, size_mb=90,
        parts=(Part("ap_adapter", by_hand=(ByHand("the AP-Adapter checkpoint linked from the README of "
                                                  "github.com/fundwotsai2001/AP-adapter (Google Drive)",
                                                  "pytorch_model.bin", size_mb=90),),
                    required=("pytorch_model.bin",)),),
        licence="see the AP-Adapter repository", loader_values=("pytorch_model.bin",),
        needs=("audioldm2-large", "audiomae"),
        note="not on a hub: download it by hand; `pae models convert` then writes a safetensors copy"),
    ModelEntry(
        name="audiomae", purpose="AudioMAE ViT-B/16 encoder: turns AP-Adapter's audio prompt into tokens",
        methods=("ap-adapter",), workflows=_AP_WORKFLOWS, size_mb=1300,
        parts=(Part("audiomae", by_hand=(ByHand("AudioMAE's ViT-B/16 AudioSet-2M pretrained checkpoint, linked "
                                                "from github.com/facebookresearch/AudioMAE (Google Drive)",
                                                "pretrained.pth", size_mb=1300),),
                    required=("pretrained.pth",)),),
        licence="CC BY-NC 4.0 (non-commercial)", loader_values=("pretrained.pth",),
        note="not on a hub: download it by hand; `pae models convert` then writes a safetensors copy"),
    _musicgen("small", 2250, ("editgen_replace", "editgen_refine", "editgen_reweight", "editgen_recording")),
    _musicgen("medium", 7800),
    _musicgen("large", 12800),
    ModelEntry(
        name="stable-audio-open-1.0", purpose="Stable Audio Open 1.0, diffusers folder (attention edits and ZETA "
        "on Stable Audio; T5 for SAO-Instruct)", methods=("sao",), workflows=("sao_attention_replace", "sao_zeta_edit"),
        size_mb=5050,
        parts=(Part("diffusers/stable-audio-open-1.0", hub=(HubFiles(
            "stabilityai/stable-audio-open-1.0", "",
            ("model_index.json", "scheduler/*.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*",
             "projection_model/*"), gated=True),), required=("model_index.json", "transformer/config.json")),),
        licence=_STABILITY, loader_values=("diffusers/stable-audio-open-1.0",),
        ungated="stable-audio-open-1.0-comfy"),
    ModelEntry(
        name="stable-audio-open-1.0-comfy", purpose="Stable Audio Open 1.0 as ComfyUI keeps it: one checkpoint in "
        "checkpoints/ (ungated repackage; T5 from t5-base)", methods=("sao",), workflows=(), size_mb=4630,
        parts=(Part("checkpoints/stable-audio-open-1.0.safetensors", is_file=True, hub=(HubFiles(
            "Comfy-Org/stable-audio-open-1.0_repackaged", "", ("stable-audio-open-1.0.safetensors",)),)),),
        licence=_STABILITY.split("; gated")[0], loader_values=("checkpoints/stable-audio-open-1.0.safetensors",),
        needs=("t5-base",)),
    ModelEntry(
        name="t5-base", purpose="T5-base text encoder for single-file Stable Audio checkpoints (ComfyUI's "
        "text_encoders/t5-base.safetensors, plus its config and tokenizer for use outside ComfyUI)",
        methods=("sao",), workflows=(), size_mb=852,
        parts=(Part("text_encoders/t5-base.safetensors", is_file=True, hub=(HubFiles(
            "google-t5/t5-base", _T5_BASE, ("model.safetensors",),
            rename=(("model.safetensors", "t5-base.safetensors"),)),)), _T5_FOLDER),
        licence="Apache 2.0", loader_values=("t5-base.safetensors",)),
    ModelEntry(
        name="sao-instruct", purpose="SAO-Instruct: Stable Audio Open fine-tuned to follow edit instructions",
        methods=("sao",), workflows=("sao_instruct_edit", "sao_instruct_song"), size_mb=5600,
        parts=(
            Part("diffusers/sao-instruct", by_hand=(
                ByHand("SAO-Instruct's model_config.json, from the checkpoint linked in the README of "
                       "github.com/eth-disco/sao-instruct", "model_config.json"),
                ByHand("SAO-Instruct's checkpoint (model.ckpt or model.safetensors), linked in the same README",
                       "model.ckpt", size_mb=4800)), required=("model_config.json",)),
            Part("diffusers/sao-instruct/text_encoder", hub=(HubFiles("google-t5/t5-base", _T5_BASE,
                                                                      ("config.json", "model.safetensors")),),
                 required=("config.json", "model.safetensors")),
            Part("diffusers/sao-instruct/tokenizer", hub=(HubFiles("google-t5/t5-base", _T5_BASE, _T5_TOKENIZER),),
                 required=("tokenizer.json",))),
        licence=_STABILITY.split("; gated")[0] + " (a Stable Audio Open derivative)",
        loader_values=("diffusers/sao-instruct",),
        note="the checkpoint is not on a hub: place it by hand; the getter adds the T5-base text encoder and "
             "tokenizer (stable-audio-tools fetches them by name, so the release has none)"),
)

_BY_NAME = {entry.name: entry for entry in CATALOGUE}


def entry(name: str) -> ModelEntry | None:
    """The catalogue entry of that name (case-insensitive), or None."""
    return _BY_NAME.get(name.strip().lower())


def names() -> list[str]:
    """Every entry's name, in catalogue order."""
    return [e.name for e in CATALOGUE]


def for_method(method: str) -> list[ModelEntry]:
    """What the method's shipped workflows load, with what those models are used with."""
    return with_needs([e for e in CATALOGUE if method in e.methods and e.workflows])


def with_needs(entries: list[ModelEntry]) -> list[ModelEntry]:
    """entries plus every entry they need, each once, in catalogue order."""
    wanted = {e.name for e in entries}
    pending = list(entries)
    while pending:
        for need in pending.pop().needs:
            if need not in wanted:
                wanted.add(need)
                pending.append(_BY_NAME[need])
    return [e for e in CATALOGUE if e.name in wanted]


def for_loader_value(value: str) -> ModelEntry | None:
    """The entry a loader's dropdown value (as a saved workflow stores it) denotes, or None."""
    return next((e for e in CATALOGUE if value in e.loader_values), None)


# What an empty loader dropdown shows (ComfyUI's frontend shows "undefined" for an empty list).
NO_MODEL = "(none installed: Get models…)"


def missing_model_message(value: str | None, what: str, folder: str, suggestion: str) -> str:
    """Why a loader's value cannot load and how to get it: the button, the command, or the folder it goes in."""
    entry_ = for_loader_value(value) if value else None
    if not value or value == NO_MODEL:
        return (f"no {what} is installed; press 'Get models…' on this node (or run `pae models get {suggestion}`), "
                "then pick it here.")
    if entry_ is not None:
        by_hand = any(p.by_hand for p in entry_.parts)
        how = (f"run `pae models get {entry_.name}`: it prints where to download it by hand and where it goes"
               if by_hand else f"press 'Get models…' on this node or run `pae models get {entry_.name}`")
        return f"'{value}' is not installed; {how}, then refresh the page."
    return f"'{value}' is not in {folder}; put it there (or pick an installed one) and refresh the page."
