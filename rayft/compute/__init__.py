"""How a stage uses its hardware: the strategy (DDP / ZeRO / FSDP), training arguments, memory and
FLOPs."""
