"""The server side of encrypted scoring: evaluation under a public context (never imports the client)."""
