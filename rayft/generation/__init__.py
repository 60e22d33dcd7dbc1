"""Text generation with a model: batched HF generate in this process, or spread over Ray workers."""
