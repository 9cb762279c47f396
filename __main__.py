"""`python -m prompt_audio_edit` is the `pae` command."""

import sys

from .runner.cli import main

sys.exit(main())
