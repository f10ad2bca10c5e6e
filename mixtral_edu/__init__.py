"""mixtral_edu: Mixtral generation, rebuilt readable."""
