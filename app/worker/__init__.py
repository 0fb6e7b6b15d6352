"""The LiveKit worker side: the job entrypoint, session start, per-process services,
session records, the silence re-prompt, graceful drain and load reporting."""
