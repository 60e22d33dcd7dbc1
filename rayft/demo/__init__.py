"""Bundled demo assets for ``rayft demo`` (synthetic order-extraction dataset)."""
