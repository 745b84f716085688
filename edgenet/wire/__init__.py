"""Device protocol over TCP: the frame codec and typed messages (sans-I/O)."""
