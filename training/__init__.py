"""Training: the engine, the pretrain and finetune-pq phases and their objectives, schedules,
distributed launch, data loaders and the checkpoint files of a run."""
