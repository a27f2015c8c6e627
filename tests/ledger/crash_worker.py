"""Subprocess for test_ledger_crash: concurrent submitters that print every acknowledged tx, until killed.

Usage: python crash_worker.py <data dir> <threads>
Prints ``READY`` once open, then ``ACK <tx_id> <seq>`` per receipt, flushed at once.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, ContractChaincode, TransactionContext

from ciphercare.ledger.api import Principal
from ciphercare.ledger.embedded.ledger import EmbeddedLedger

ORIGIN = "ciphercare.test/crash"


class CrashContract(Contract):
    Name = "kv"

    async def Put(self, ctx: TransactionContext, key: str, value: str) -> str:
        stub = ctx.get_stub()
        await stub.put_state(key, value.encode())
        stub.set_event("put", key.encode())
        return key


def main() -> None:
    data = Path(sys.argv[1])
    threads = int(sys.argv[2])
    led = EmbeddedLedger(
        data / "ledger.db",
        data / "checkpoint.key",
        ORIGIN,
        lambda: ContractChaincode.new_chaincode(CrashContract()),
        max_batch=32,
        max_wait_ms=1.0,
    )
    out_lock = threading.Lock()
    principal = Principal("crash", "hospital-a", frozenset({"hospital"}), "crash-test")

    def submitter(t: int) -> None:
        i = 0
        while True:
            r = led.submit(principal, "kv", "Put", [f"t{t}-{i}", "x" * 64])
            with out_lock:
                sys.stdout.write(f"ACK {r.tx_id} {r.seq}\n")
                sys.stdout.flush()
            i += 1

    with out_lock:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
    workers = [threading.Thread(target=submitter, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
