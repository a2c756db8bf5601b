"""Card and terminal history: what the fraud scorer remembers of past payments, and the
window features it computes from them (the benchmark's definitions, online)."""
