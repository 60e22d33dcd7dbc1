"""The Serve deployments: `ModelServer` (one model, its adapters multiplexed, batching) and
`OpenAIIngress` (FastAPI: auth, validation, limits, routing, SSE). `rayft.serve.app` wires them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ray import serve

from rayft.schema.sections import ModelConfig
from rayft.schema.serve import BatchingConfig, ServeConfig
from rayft.serve.engine import GenerationEngine
from rayft.serve.joint_batch import Meeting
from rayft.serve.protocol import ApiError, GenRequest, GenResult
from rayft.serve.store import open_store

BATCHING = BatchingConfig()  # the schema's defaults: each replica sets its config's own in __init__

log = logging.getLogger("ray.serve")


class AdapterLease:
    """What the `@serve.multiplexed` loader returns for an adapter. Serve calls `__del__` when it
    evicts the adapter (LRU); the engine then deletes its weights at its next locked call."""

    def __init__(self, server: "ModelServer", key: str):
        self.server, self.key, self.released = server, key, False

    def __del__(self):
        if not self.released:  # Serve calls it on eviction, Python again on garbage collection
            self.released = True
            self.server.engine.release_adapter(self.key)
            self.server.serve_evictions += 1


@serve.deployment
class ModelServer:
    """One model per replica: the base (adapters hot-swapped onto it) or a merged model."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, cfg: ServeConfig, store_uri: str | None):
        # The sections come validated from the loader (rayft.serve.app.build_app); Ray pickles them as they are.
        device = "cuda" if cfg.replicas.num_gpus > 0 else "cpu"
        threads = cfg.replicas.torch_threads or max(1, int(cfg.replicas.num_cpus))
        self.engine = GenerationEngine(model_path, model_cfg, device, threads)
        self.store = open_store(store_uri) if store_uri else None
        self.lock = asyncio.Lock()
        self.batching = cfg.batching.enabled
        # Admission gate for batching: set while no batched request is in flight. Serve forms a batch
        # as requests arrive and queues it behind the running one (ray-project/ray#53096), so without
        # the gate requests trickling in during a generation form batches of 1-2 that then run one
        # after another. With it, they wait here and enter together when the engine is free.
        self.idle = asyncio.Event()
        self.idle.set()
        self.in_flight = 0
        self.generate_batch.set_max_batch_size(cfg.batching.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(cfg.batching.batch_wait_timeout_s)
        self.serve_evictions = 0
        self.batch_sizes: list[int] = []  # rows per generation
        self.meeting = Meeting(self._run_parts)

        async def load_adapter(key: str) -> AdapterLease:
            return await self._load_adapter(key)

        # Wired at init because the LRU size comes from the config (Serve supports this form).
        self.lease = serve.multiplexed(max_num_models_per_replica=cfg.max_adapters_per_replica)(load_adapter)

    async def adapter_path(self, key: str) -> Path:
        """The local folder of adapter `key` (an object store fetches it to this node once)."""
        ref = await asyncio.to_thread(self.store.resolve_key, key) if self.store else None
        if ref is None:
            raise ApiError(404, f"adapter '{key.split('@')[0]}' is no longer in the store", code="model_not_found",
                           param="model")
        try:
            return await asyncio.to_thread(self.store.local_path, ref)
        except OSError as exc:  # an object store that cannot be read: the server's fault, not the request's
            raise ApiError(503, f"adapter '{ref.id}' could not be fetched from the adapter store: "
                           f"{type(exc).__name__}: {str(exc)[:300]}", code="adapter_store_unavailable",
                           param="model") from None

    async def _load_adapter(self, key: str) -> AdapterLease:
        path = await self.adapter_path(key)
        async with self.lock:
            try:
                seconds = await asyncio.to_thread(self.engine.load_adapter, key, path)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:  # e.g. made for another base model
                raise ApiError(422, f"adapter '{key.split('@')[0]}' cannot be loaded onto this base model: "
                               f"{type(exc).__name__}: {str(exc)[:300]}", code="adapter_load_failed",
                               param="model") from None
        log.info("adapter %s loaded in %.2f s", key, seconds)
        return AdapterLease(self, key)

    async def _run(self, key: str | None, requests: list[GenRequest]) -> list[GenResult]:
        outcome = (await self._run_parts([[(key, r) for r in requests]]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _run_parts(self, parts: list[list[tuple[str | None, GenRequest]]]) -> list[Any]:
        """One generation for every part whose adapters could be had (Serve's split gives a part per
        adapter); a part whose adapter could not be had gets that error, the others still run."""
        leases: dict[str, AdapterLease] = {}
        paths: dict[str, Path] = {}
        failed: dict[str, BaseException] = {}
        for key in dict.fromkeys(k for part in parts for k, _ in part if k):
            try:
                leases[key] = await self.lease(key)  # loads on a miss, marks it recently used
                paths[key] = await self.adapter_path(key)
            except Exception as exc:  # noqa: BLE001 - ApiError and the like: for this adapter's requests only
                failed[key] = exc
        outcomes: list[Any] = [next((failed[k] for k, _ in part if k in failed), None) for part in parts]
        ready = [i for i, outcome in enumerate(outcomes) if outcome is None]
        rows = [item for i in ready for item in parts[i]]
        if rows:
            self.batch_sizes.append(len(rows))
            async with self.lock:
                results = await asyncio.to_thread(self.engine.generate_mixed, [r for _, r in rows],
                                                  [k for k, _ in rows], paths)
                for key, lease in leases.items():
                    if lease.released:  # evicted while we waited: do not keep it
                        self.engine.release_adapter(key)
            produced = iter(results)
            for i in ready:
                outcomes[i] = [next(produced) for _ in parts[i]]
        return outcomes

    async def generate(self, request: GenRequest) -> GenResult:
        key = serve.get_multiplexed_model_id() or None
        if key:
            await self.lease(key)  # loads on a miss, marks it recently used, tells the router
        if not self.batching:
            return (await self._run(key, [request]))[0]
        await self.idle.wait()
        self.in_flight += 1
        self.idle.clear()
        try:
            return await self.generate_batch((key, request))
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    @serve.batch(max_batch_size=BATCHING.max_batch_size, batch_wait_timeout_s=BATCHING.batch_wait_timeout_s)
    async def generate_batch(self, items: list[tuple[str | None, GenRequest]]) -> list[GenResult]:
        # Serve calls this once per multiplexed model id of a batch, all at the same time; the calls
        # meet and run as one generation, each row with its own adapter (rayft.serve.joint_batch).
        return await self.meeting.submit(items)

    async def stream(self, request: GenRequest):
        """Yield (text delta, finish_reason) pairs; streaming requests are not batched."""
        key = serve.get_multiplexed_model_id() or None
        lease = await self.lease(key) if key else None
        path = await self.adapter_path(key) if key else None
        async with self.lock:
            pieces = self.engine.stream(request, key, path)
            try:
                while (item := await asyncio.to_thread(next, pieces, None)) is not None:
                    yield item
            finally:
                await asyncio.to_thread(pieces.close)
                if lease is not None and lease.released:
                    self.engine.release_adapter(key)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def stats(self) -> dict[str, Any]:
        sizes = self.batch_sizes
        return {"replica": serve.get_replica_context().replica_id.unique_id,
                "adapters_loaded": self.engine.held_adapters(), "adapter_loads": self.engine.loads,
                "adapter_evictions": self.serve_evictions, "adapter_deletions": self.engine.evictions,
                "adapter_load_seconds": self.engine.load_seconds[-50:],
                "batches": len(sizes), "mean_batch_size": sum(sizes) / len(sizes) if sizes else 0.0,
                "max_batch_size_seen": max(sizes, default=0),
                "max_models_in_a_batch": max(self.meeting.meetings, default=0)}
