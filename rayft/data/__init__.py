"""Data pipeline: read -> normalize -> template -> tokenize (answer-only loss) -> split."""
