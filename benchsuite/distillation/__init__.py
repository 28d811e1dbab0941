"""Distillation machinery shared by every compressor that trains: the teacher's cached outputs,
the distillation losses, and the recovery fine-tuning loop that combines them."""
