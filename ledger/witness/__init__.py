"""Witnesses for the ledger's checkpoints (C2SP tlog-witness and tlog-cosignature).

* :mod:`.cosignature` -- Ed25519 ``cosignature/v1`` signing and verification, witness vkeys;
* :mod:`.policy` -- the policy file: log keys, witness keys and URLs, quorum;
* :mod:`.server` -- ``ciphercare witness serve``: the HTTP witness with durable state;
* :mod:`.client` -- ``add-checkpoint`` requests, and the node's background submitter.
"""
