"""rayft's version (the package's `__version__`, the OpenAPI document's and the image pins')."""

__version__ = "0.1.0"
