"""ciphercare consent domain and chaincode.

* :mod:`.codes` -- code systems (v3 ActReason purposes, FHIR resource-type data classes, roles, BALP codes)
* :mod:`.model` -- strictly validated consent records, access events and decisions
* :mod:`.decision` -- the pure FHIR-Consent decision rule (deny wins, default deny)
* :mod:`.caller` -- the transaction actor, parsed from the creator's X.509 certificate
* :mod:`.contracts` -- the ``consent`` and ``accesslog`` Fabric contracts (``new_chaincode()``)
* :mod:`.canonical` -- canonical JSON for everything written to state, events and returns
"""
