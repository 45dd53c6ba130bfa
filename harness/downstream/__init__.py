"""What is built on finished runs, outside the training pipeline: the lmms-eval model adapter
(a finished run scored by lmms-eval) and MoVA's per-sample routing labels from solo runs."""
