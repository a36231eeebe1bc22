"""The ECAD node pack: schedules, the caching engine, family adapters and the ComfyUI nodes."""
