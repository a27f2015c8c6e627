"""The hospital side of encrypted scoring: keys, encryption, decryption (never imports the server)."""
