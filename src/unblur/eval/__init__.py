"""Evaluation: distances between sample sets, image metrics and likelihoods."""
