"""RFC 9162 Merkle tree: tree heads, inclusion and consistency proofs, and their verification.

Hashes follow RFC 9162 section 2.1.1 with SHA-256::

    leaf hash = SHA-256(0x00 || leaf)
    node hash = SHA-256(0x01 || left || right)
    MTH({})   = SHA-256("")

:class:`MerkleTree` keeps every *complete* subtree hash, level by level, in one
contiguous ``bytearray`` per level (32 bytes per slot): level ``k`` slot ``i``
is ``MTH(D[i*2^k : (i+1)*2^k])``.  That is ``2n`` hashes for ``n`` leaves
(about 64 MB for a million), appends cost O(log n), and every node an RFC
proof needs is either a stored slot or one of at most ``log2 n`` hashes along
the right edge, so proofs are generated without rehashing leaves.

The tree is not thread-safe; callers that share one serialize access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"
_LEAF_PREFIX = b"\x00"


class ProofError(ValueError):
    """A proof failed verification or its arguments are out of range."""


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || leaf)``."""
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``), the RFC's split point ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 Merkle tree that can answer for any historical size."""

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    # ------------------------------------------------------------------ building

    @classmethod
    def from_leaf_hashes(cls, hashes: bytes | bytearray | memoryview | Iterable[bytes]) -> MerkleTree:
        """Bulk-load a tree from leaf hashes (a concatenation of 32-byte hashes, or an iterable of them)."""
        tree = cls()
        if isinstance(hashes, (bytes, bytearray, memoryview)):
            level0 = bytearray(hashes)
        else:
            level0 = bytearray()
            for h in hashes:
                if len(h) != HASH_SIZE:
                    raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(h)}")
                level0 += h
        if len(level0) % HASH_SIZE:
            raise ValueError(f"leaf hash data length {len(level0)} is not a multiple of {HASH_SIZE}")
        tree._levels = [level0]
        tree._size = len(level0) // HASH_SIZE
        lower = level0
        while len(lower) >= 2 * HASH_SIZE:
            pairs = len(lower) // (2 * HASH_SIZE)
            mv = memoryview(lower)
            upper = bytearray(pairs * HASH_SIZE)
            for i in range(pairs):
                o = 64 * i
                upper[32 * i : 32 * i + 32] = _sha256(_NODE_PREFIX + mv[o : o + 64]).digest()
            mv.release()
            tree._levels.append(upper)
            lower = upper
        return tree

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """Build a tree from raw leaf data (each leaf is hashed with the 0x00 prefix)."""
        return cls.from_leaf_hashes(b"".join(leaf_hash(leaf) for leaf in leaves))

    def append_leaf(self, leaf: bytes) -> int:
        """Hash and append one raw leaf; returns its index."""
        return self.append_hash(leaf_hash(leaf))

    def append_hash(self, h: bytes) -> int:
        """Append one leaf hash, completing every subtree it closes; returns its index."""
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(h)}")
        index = self._size
        levels = self._levels
        levels[0] += h
        i = index
        k = 0
        # A node at level k with an odd index closes its pair: hash it into level k+1.
        while i & 1:
            lvl = levels[k]
            o = (i - 1) * HASH_SIZE
            parent = _sha256(_NODE_PREFIX + lvl[o : o + 2 * HASH_SIZE]).digest()
            k += 1
            if k == len(levels):
                levels.append(bytearray())
            levels[k] += parent
            i >>= 1
        self._size = index + 1
        return index

    def extend_hashes(self, hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for h in hashes:
            self.append_hash(h)

    def truncate(self, size: int) -> None:
        """Drop every leaf at index ``>= size`` (used to undo appends whose commit failed)."""
        if size < 0 or size > self._size:
            raise ValueError(f"cannot truncate a tree of {self._size} leaves to {size}")
        for k, lvl in enumerate(self._levels):
            del lvl[(size >> k) * HASH_SIZE :]
        while len(self._levels) > 1 and not self._levels[-1]:
            self._levels.pop()
        self._size = size

    # ------------------------------------------------------------------ reading

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def memory_bytes(self) -> int:
        """Bytes held in hash slots (about 64 per leaf)."""
        return sum(len(lvl) for lvl in self._levels)

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored hash of leaf ``index``."""
        if index < 0 or index >= self._size:
            raise IndexError(f"leaf index {index} out of range for tree of size {self._size}")
        o = index * HASH_SIZE
        return bytes(self._levels[0][o : o + HASH_SIZE])

    def leaf_hashes(self) -> bytes:
        """All leaf hashes concatenated."""
        return bytes(self._levels[0])

    def _check_size(self, size: int) -> None:
        if size < 0 or size > self._size:
            raise ValueError(f"tree size {size} out of range: the tree has {self._size} leaves")

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range produced by the RFC's recursive split.

        Such ranges are either a complete, aligned subtree (a stored slot) or a
        right-edge range whose start is aligned to its own split point.
        """
        n = end - start
        if n & (n - 1) == 0:
            k = n.bit_length() - 1
            if start & (n - 1):
                raise ValueError(f"range [{start}, {end}) is not an aligned subtree")
            o = (start >> k) * HASH_SIZE
            return bytes(self._levels[k][o : o + HASH_SIZE])
        # Fold the complete subtrees of the range right to left (one per set bit of n).
        parts: list[tuple[int, int]] = []
        pos = start
        rem = n
        while rem:
            bit = 1 << (rem.bit_length() - 1)
            parts.append((pos, bit))
            pos += bit
            rem -= bit
        s, b = parts[-1]
        k = b.bit_length() - 1
        o = (s >> k) * HASH_SIZE
        acc = bytes(self._levels[k][o : o + HASH_SIZE])
        for s, b in reversed(parts[:-1]):
            if s & (b - 1):
                raise ValueError(f"range [{start}, {end}) is not right-edge aligned")
            k = b.bit_length() - 1
            o = (s >> k) * HASH_SIZE
            acc = _sha256(_NODE_PREFIX + self._levels[k][o : o + HASH_SIZE] + acc).digest()
        return bytes(acc)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all)."""
        if size is None:
            size = self._size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 section 2.1.3.1 ``PATH(index, D[size])``, leaf-side first."""
        if size is None:
            size = self._size
        self._check_size(size)
        if index < 0 or index >= size:
            raise ValueError(f"leaf index {index} out of range for tree size {size}")
        path: list[bytes] = []
        start, end, m = 0, size, index
        # Walk down from the root; siblings are collected root-side first, then reversed.
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if m < k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start += k
                m -= k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 9162 section 2.1.4.1 ``PROOF(first, D[second])``.

        Empty when ``first == second`` or ``first == 0`` (the RFC defines proofs
        only for ``0 < first < second``; the verifier handles those cases alone).
        """
        if second is None:
            second = self._size
        self._check_size(second)
        if first < 0 or first > second:
            raise ValueError(f"first size {first} out of range for second size {second}")
        if first == 0 or first == second:
            return []
        proof: list[bytes] = []
        start, end, m, complete = 0, second, first, True
        # SUBPROOF(m, D[start:end], complete), unrolled; nodes collected root-side first.
        while m != end - start:
            k = _largest_power_of_two_below(end - start)
            if m <= k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                start += k
                m -= k
                complete = False
        if not complete:
            proof.append(self._subtree(start, end))
        proof.reverse()
        return proof


# ---------------------------------------------------------------------- verification


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Run RFC 9162 section 2.1.3.2 over ``proof`` and return the computed root.

    Raises :class:`ProofError` when the proof has the wrong shape.
    """
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn = index
    sn = size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof node has {len(p)} bytes, expected {HASH_SIZE}")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` show leaf HASH ``leaf`` at ``index`` of ``size`` under ``root``?"""
    try:
        return root_from_inclusion_proof(leaf, index, size, proof) == root
    except ProofError:
        return False


def check_consistency(first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes) -> None:
    """RFC 9162 section 2.1.4.2; raises :class:`ProofError` saying why the proof fails.

    Also accepts the trivial cases the RFC leaves out: ``first == second``
    (empty proof, equal roots) and ``first == 0`` (empty proof).
    """
    if first < 0 or first > second:
        raise ProofError(f"first size {first} must be between 0 and second size {second}")
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof node has {len(p)} bytes, expected {HASH_SIZE}")
    if first == second:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("roots differ for equal tree sizes")
        return
    if first == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    # 1. An empty path cannot prove anything for 0 < first < second.
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # 3.
    fn = first - 1
    sn = second - 1
    # 4. While LSB(fn) is set, right-shift both.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than expected")
    if fr != first_root:
        raise ProofError("consistency proof does not reproduce the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not reproduce the second root")


def verify_consistency(first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree of size ``second`` an append-only extension of ``first``?"""
    try:
        check_consistency(first, second, proof, first_root, second_root)
    except ProofError:
        return False
    return True
