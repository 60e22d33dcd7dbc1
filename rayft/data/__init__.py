"""Data pipeline: read -> normalise -> template -> tokenise (answer-only loss) -> split."""
