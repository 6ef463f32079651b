"""Where trials run. ``local``: this process, plus ``--workers`` processes on one shared Optuna storage;
``ray``: Ray Tune trials, sampled by ``OptunaSearch`` on the same study. Runners only run trials: they see the
search through ``runners.base.Work`` and know nothing of blocks or genomes."""
