"""Text generation with a model: HF generate in this process or Ray tasks, or vLLM engines in Ray actors."""
