"""Where exports go: one module per kind of destination, each offering what `base.Destination` declares."""
