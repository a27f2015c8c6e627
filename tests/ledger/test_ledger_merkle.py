"""RFC 9162 conformance of ledger/transparency/merkle.py, checked against a reference written here from the RFC text.

Nothing below the "reference" banner imports ledger/transparency/merkle.py: MTH, PATH and
PROOF follow RFC 9162 section 2.1.1, 2.1.3.1 and 2.1.4.1 literally (recursion
over the leaf list) and the two verifiers follow sections 2.1.3.2 and 2.1.4.2
step by step.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import pytest

from ciphercare.ledger.transparency.merkle import (
    MerkleTree,
    ProofError,
    check_consistency,
    verify_consistency,
    verify_inclusion,
)

# ----------------------------------------------------------------------------- reference (RFC 9162)


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_pow2_lt(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Reference:
    """MTH / PATH / PROOF over an explicit leaf list D[n], as defined in RFC 9162 section 2.1."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.D = leaves
        self.mth = lru_cache(maxsize=None)(self._mth)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return H(b"")
        if n == 1:
            return H(b"\x00" + self.D[lo])
        k = largest_pow2_lt(n)
        return H(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = largest_pow2_lt(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = largest_pow2_lt(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True)


def ref_verify_inclusion(leaf_index: int, tree_size: int, leaf_hash: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if leaf_index >= tree_size:  # 1.
        return False
    fn, sn = leaf_index, tree_size - 1  # 2.
    r = leaf_hash  # 3.
    for p in path:  # 4.
        if sn == 0:  # a.
            return False
        if fn % 2 == 1 or fn == sn:  # b.
            r = H(b"\x01" + p + r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = H(b"\x01" + r + p)
        fn >>= 1  # c.
        sn >>= 1
    return sn == 0 and r == root  # 5.


def ref_verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2 (defined for 0 < first < second)."""
    if not path:  # 1.
        return False
    path = list(path)
    if first & (first - 1) == 0:  # 2. first is an exact power of 2
        path = [first_hash] + path
    fn, sn = first - 1, second - 1  # 3.
    while fn % 2 == 1:  # 4.
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 5.
    for c in path[1:]:  # 6.
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = H(b"\x01" + c + fr)
            sr = H(b"\x01" + c + sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = H(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # 7.


# ----------------------------------------------------------------------------- fixtures


def leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [salt + b"leaf-%d" % i for i in range(n)]


@pytest.fixture(scope="module")
def small() -> tuple[Reference, MerkleTree]:
    data = leaves(70)
    return Reference(data), MerkleTree.from_leaves(data)


# ----------------------------------------------------------------------------- known answers


def test_empty_tree_root_is_sha256_of_empty_string() -> None:
    assert MerkleTree().root() == hashlib.sha256(b"").digest()
    assert MerkleTree().root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_single_and_two_leaf_roots_follow_the_hash_prefixes() -> None:
    one = MerkleTree.from_leaves([b""])
    # RFC 6962/9162 test vector: MTH of one empty leaf.
    assert one.root().hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    two = MerkleTree.from_leaves([b"a", b"b"])
    assert two.root() == H(b"\x01" + H(b"\x00a") + H(b"\x00b"))


def test_roots_match_reference_for_every_historical_size(small: tuple[Reference, MerkleTree]) -> None:
    ref, tree = small
    for n in range(0, 71):
        assert tree.root(n) == ref.mth(0, n), n


# ----------------------------------------------------------------------------- proofs on small trees


def test_inclusion_proofs_all_pairs_small(small: tuple[Reference, MerkleTree]) -> None:
    ref, tree = small
    for n in range(1, 71):
        root = ref.mth(0, n)
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == ref.path(m, 0, n), (m, n)
            lh = ref.mth(m, m + 1)
            assert ref_verify_inclusion(m, n, lh, proof, root), (m, n)
            assert verify_inclusion(lh, m, n, proof, root), (m, n)


def test_consistency_proofs_all_pairs_small(small: tuple[Reference, MerkleTree]) -> None:
    ref, tree = small
    for n in range(1, 71):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            assert proof == ref.proof(m, n), (m, n)
            assert ref_verify_consistency(m, n, ref.mth(0, m), ref.mth(0, n), proof), (m, n)
            assert verify_consistency(m, n, proof, ref.mth(0, m), ref.mth(0, n)), (m, n)
        assert tree.consistency_proof(n, n) == []
        assert verify_consistency(n, n, [], ref.mth(0, n), ref.mth(0, n))


def test_random_proofs_on_a_few_thousand_leaves() -> None:
    n_leaves = 3001
    data = leaves(n_leaves, b"big")
    ref = Reference(data)
    tree = MerkleTree()
    for d in data:
        tree.append_leaf(d)
    assert tree.root() == MerkleTree.from_leaves(data).root() == ref.mth(0, n_leaves)
    rng = random.Random(9162)
    for _ in range(300):
        n = rng.randint(1, n_leaves)
        m = rng.randrange(n)
        proof = tree.inclusion_proof(m, n)
        assert ref_verify_inclusion(m, n, ref.mth(m, m + 1), proof, ref.mth(0, n))
        assert proof == ref.path(m, 0, n)
        if n > 1:
            first = rng.randint(1, n - 1)
            cproof = tree.consistency_proof(first, n)
            assert ref_verify_consistency(first, n, ref.mth(0, first), ref.mth(0, n), cproof)
            assert cproof == ref.proof(first, n)
    assert len(tree.inclusion_proof(0, n_leaves)) <= (n_leaves - 1).bit_length()


# ----------------------------------------------------------------------------- the ledger's verifiers reject bad proofs


def test_verify_inclusion_rejects_tampering(small: tuple[Reference, MerkleTree]) -> None:
    ref, tree = small
    n, m = 70, 37
    root = ref.mth(0, n)
    lh = ref.mth(m, m + 1)
    proof = tree.inclusion_proof(m, n)
    bad = list(proof)
    bad[2] = bytes(32)
    assert not verify_inclusion(lh, m, n, bad, root)
    assert not verify_inclusion(lh, m + 1, n, proof, root)
    # (n + 1 can share n's path shape: the size is bound by the signed checkpoint, not the path.)
    assert not verify_inclusion(lh, m, 2 * n, proof, root)
    assert not verify_inclusion(lh, m, n, proof[:-1], root)
    assert not verify_inclusion(lh, m, n, proof + [bytes(32)], root)
    assert not verify_inclusion(lh, n, n, proof, root)
    assert not ref_verify_inclusion(m, n, lh, bad, root)


def test_verify_consistency_rejects_tampering(small: tuple[Reference, MerkleTree]) -> None:
    ref, tree = small
    m, n = 13, 70
    proof = tree.consistency_proof(m, n)
    r1, r2 = ref.mth(0, m), ref.mth(0, n)
    assert verify_consistency(m, n, proof, r1, r2)
    assert not verify_consistency(m, n, proof, ref.mth(0, m + 1), r2)
    assert not verify_consistency(m, n, proof, r1, ref.mth(0, n - 1))
    assert not verify_consistency(m, n, proof[:-1], r1, r2)
    assert not verify_consistency(m, n, [], r1, r2)
    assert not verify_consistency(m, n, [bytes(32)] + proof[1:], r1, r2)
    assert not verify_consistency(n, n, [], r1, r2)
    with pytest.raises(ProofError, match="second root"):
        check_consistency(m, n, proof, r1, ref.mth(0, n - 1))


# ----------------------------------------------------------------------------- tree mechanics


def test_truncate_restores_an_earlier_tree() -> None:
    data = leaves(100)
    tree = MerkleTree.from_leaves(data[:57])
    before = tree.root()
    for d in data[57:]:
        tree.append_leaf(d)
    tree.truncate(57)
    assert tree.size == 57 and tree.root() == before
    for d in data[57:]:
        tree.append_leaf(d)
    assert tree.root() == MerkleTree.from_leaves(data).root()


def test_bulk_load_accepts_bytes_and_lists_and_validates() -> None:
    hashes = [H(b"\x00" + d) for d in leaves(33)]
    assert MerkleTree.from_leaf_hashes(b"".join(hashes)).root() == MerkleTree.from_leaf_hashes(hashes).root()
    with pytest.raises(ValueError):
        MerkleTree.from_leaf_hashes(b"\x00" * 33)
    with pytest.raises(ValueError):
        MerkleTree.from_leaf_hashes([b"short"])


def test_out_of_range_arguments_raise() -> None:
    tree = MerkleTree.from_leaves(leaves(5))
    with pytest.raises(ValueError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 6)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)
