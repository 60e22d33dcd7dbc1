"""Base-model resolution (builtin / local folder / hub id), loading, and adapters."""
