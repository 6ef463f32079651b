"""Evaluators that score a candidate network: short training (``train``) and training-free proxies (``proxy``)."""
