"""Serving: an OpenAI-compatible Ray Serve app for a base model, its LoRA adapters (hot-swapped,
multiplexed per replica) and merged models.

The pure parts import without Ray Serve: `adapter_ref`, `store` and `object_store` (the adapter
store), `protocol` (OpenAI request/response shapes and errors), `engine` (batched generation with
adapters on one base model), `merge` (`rayft merge`). `deployments`, `ingress` and `app` need Ray Serve. The `serve:` section
is rayft.schema.serve.
"""
