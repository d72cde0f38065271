"""Frozen-prefix caching: while layer groups 0..k are frozen (eval mode, no dropout), their output for an input
never changes, so it is computed once per stage and the trainable suffix trains on the stored states."""
