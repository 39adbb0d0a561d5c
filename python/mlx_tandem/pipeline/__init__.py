"""Two-rank pipeline: strict wire protocol, authenticated transport, and the stage logic on top."""
