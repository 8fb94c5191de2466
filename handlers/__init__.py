"""Request handlers, one module per resource: decode, run named SQL, encode."""
