"""Looking inside the model without changing it: scoped hooks and activation capture
(`capture`), and the call-chain tracer (`tracer` records, `records` is what it records into)."""
