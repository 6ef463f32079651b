"""Where trials run: local processes, Ray Tune, shared Optuna storage. Filled in by the distributed-search
issue (#6); runners only run trials and know nothing of blocks."""
