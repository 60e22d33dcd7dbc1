"""rayft: fine-tune, align, sweep and serve LLMs on Ray from one YAML file."""

__version__ = "0.1.0"
