"""In-process inference on one host: model code, caches, scheduler, sampler, text layer."""
