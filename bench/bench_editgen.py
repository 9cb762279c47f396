"""EditGen: an edit (2 prompts, attention control) against a plain generation of the same 2 prompts.

Run: .venv/bin/python bench/bench_editgen.py [--seconds 5] [--repeats 3] [--device cpu|cuda]
MusicGen-small's architecture (24 decoder layers, width 1024, 16 heads, 4 codebooks of 2048; T5-base-size text
encoder) with random weights; the EnCodec is the tiny test one (it only decodes once at the end and is left out of
the timing). Each configuration runs in its own process; times are medians of --repeats runs after a warm-up.
- plain: both prompts generated in one batch with the pack's loop (SDPA attention, no control);
- edit: the same two prompts as source and target of a Replace edit (self-attention injection, depth blending).
Nothing here is asserted by the tests.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, measure, print_results, run_each_in_process  # noqa: E402

CONFIGS = ("plain", "edit")
SOURCE, TARGET = "a jazz song with piano and drums", "a jazz song with guitar and drums"


def _small_size(model, medium: bool = False) -> None:
    """Swap the tiny decoder and text encoder for MusicGen-small-size (or -medium-size) ones with random weights."""
    from transformers import MusicgenDecoderConfig, T5Config
    from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM
    from transformers.models.t5.modeling_t5 import T5EncoderModel

    old = model.decoder.config
    width, layers, heads = (1536, 48, 24) if medium else (1024, 24, 16)
    config = MusicgenDecoderConfig(vocab_size=2048, hidden_size=width, num_hidden_layers=layers,
                                   num_attention_heads=heads, ffn_dim=4 * width, num_codebooks=old.num_codebooks,
                                   max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048,
                                   decoder_start_token_id=2048)
    model.decoder = MusicgenForCausalLM(config).eval()
    text = T5Config(vocab_size=model.text_encoder.config.vocab_size, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                    num_heads=12)
    model.text_encoder = T5EncoderModel(text).eval()
    model.enc_to_dec_proj = torch.nn.Linear(768, width)
    model.config.decoder = config
    model.config.text_encoder = text


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.methods.editgen import EditGenSettings, edit_music
    from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen

    torch.manual_seed(0)
    bridge.set_directories(models=args["root"])
    musicgen = load_musicgen("bench", "fp32" if args["device"] == "cpu" else "fp16")
    _small_size(musicgen.model)
    musicgen.model.to(musicgen.device, musicgen.model.dtype).requires_grad_(False)
    device = musicgen.device
    sampling = SamplingSettings(guidance=3.0, top_k=250)
    edit = make_attention_edit("replace", SOURCE, TARGET, self_window=1.0, cross_window=1.0)

    def once() -> None:
        if config == "plain":
            musicgen.generate_codes([SOURCE, TARGET], args["seconds"], sampling, seed=0)
        else:
            edit_music(musicgen, edit, EditGenSettings(), seconds=args["seconds"], sampling=sampling, seed=0)

    measure(queue, config, once, args["repeats"], device)


def main() -> None:
    args = bench_parser(seconds=5.0).parse_args()

    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_musicgen(Path(tmp) / "musicgen" / "bench")
        results = run_each_in_process(_run, CONFIGS, {**vars(args), "root": tmp})
    frames = int(round(args.seconds * 50))
    print_results(f"MusicGen-small-size decoder, 2 prompts, {args.seconds:g} s ({frames} frames + 3 delay steps), "
                  f"guidance 3, device {args.device}, median of {args.repeats} after a warm-up", results, args.device,
                  [f"edit / plain: time {results['edit'][0] / results['plain'][0]:.2f}, "
                   f"peak {results['edit'][1] / results['plain'][1]:.2f}"])

if __name__ == "__main__":
    main()
