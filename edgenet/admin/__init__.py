"""``edgenet admin``: operate a running server from a terminal or a script, through
its admin HTTP API (``options`` defines the command line; ``cli`` runs it)."""
