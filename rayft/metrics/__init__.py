"""Scores of generated and teacher-forced answers: text metrics and tags, answer extraction, loss
and perplexity."""
