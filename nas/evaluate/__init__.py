"""Evaluators that score a candidate network: short training (``train``), training-free scores (``proxy``: the
structural score and the objective; ``zero_cost``: the scores from one batch) and the default batch they see
(``batch``)."""
