"""rayft: fine-tune, align, sweep and serve LLMs on Ray from one YAML file."""

import logging as _logging

from rayft.core.version import __version__

__all__ = ["__version__"]

# bitsandbytes (imported by PEFT on every adapter load) warns, on CPUs with AVX512-BF16, that it could
# not fetch an optional 4-bit CPU kernel from the Hugging Face hub; rayft never downloads at run time,
# so the warning is noise in every train / eval / serve log. Its errors still show.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
