"""Models that are not diffusion backbones: CLAP (scoring), AudioMAE (AP-Adapter's audio prompt), MusicGen (EditGen)."""
