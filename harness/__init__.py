"""The training harness every trainer stands on (reward model and policy stages alike).

``config``   one small dataclass per stage, JSON in and out, command-line options on top
``run``      ``TrainingRun``: accelerate, AdamW and its schedule, batches, checkpoints with RNG
             state and resume, metrics through ``annotate.runlog.RunLog``, memory hygiene
``lora``     ``LoraSettings`` (one for every stage)
``chat``     rendering a chat the way the model's template does
``packing``  several responses behind one copy of their prompt, in one row
``hub``      where weights come from (default names, the GGUF cache, folders, hub ids)
``heap``     freed activation memory back to the OS during CPU training
``fused_lora``  peft's LoRA layers in two matrix products
``precision``   mixed precision: bf16 products where the hardware makes them fast

It sits below ``rewardmodel`` and ``policy`` and imports nothing of ours but ``annotate``.
"""
