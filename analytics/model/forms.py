"""The model as one factored polynomial in the comparison bits, shared by plain and encrypted scoring.

A tree node is ``N = L + b_j * (R - L)`` (``b_j`` its edge's bit, ``L``/``R`` its subtrees), so a
tree of depth ``d`` is a multilinear polynomial of degree ``d`` in the bits, and so is the sum of all
trees. :class:`Form` keeps that polynomial factored the way a tree is built::

    F = const + sum_e lin[e] * b_e + sum_p b_p * piv[p]          (piv[p] is again a Form)

Adding trees merges equal pivots, so every tree whose root splits on edge ``p`` lands in one
``piv[p]``; the encrypted evaluator relinearises once per such group instead of once per tree, and
the inner groups (children edges) merge the same way. :func:`evaluate` walks a Form with a backend
(numpy arrays or CKKS ciphertexts) and a target scale, so plaintext and encrypted scoring share one
path and differ only in the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ciphercare.analytics.model.package import ModelPackage, TreeNode

V = TypeVar("V")


@dataclass
class Form:
    """``const + sum lin[e] b_e + sum b_p piv[p]`` (see the module docstring)."""

    const: float = 0.0
    lin: dict[int, float] = field(default_factory=dict)
    piv: dict[int, Form] = field(default_factory=dict)

    @property
    def degree(self) -> int:
        if self.piv:
            return 1 + max(p.degree for p in self.piv.values())
        return 1 if self.lin else 0

    @property
    def is_constant(self) -> bool:
        return not self.lin and not self.piv

    def add(self, other: Form, sign: float = 1.0) -> Form:
        """``self + sign * other`` as a new Form (pivots with equal edges merge)."""
        out = Form(self.const + sign * other.const, dict(self.lin), dict(self.piv))
        for e, c in other.lin.items():
            out.lin[e] = out.lin.get(e, 0.0) + sign * c
        for p, sub in other.piv.items():
            out.piv[p] = out.piv[p].add(sub, sign) if p in out.piv else Form().add(sub, sign)
        return out.normalised()

    def times_bit(self, edge: int) -> Form:
        """``b_edge * self``."""
        if self.is_constant:
            return Form(lin={edge: self.const}).normalised()
        return Form(piv={edge: self})

    def normalised(self) -> Form:
        """Drop zero terms; a pivot over a constant becomes a linear term."""
        lin = {e: c for e, c in self.lin.items() if c != 0.0}
        piv: dict[int, Form] = {}
        for p, sub in self.piv.items():
            if sub.is_constant:
                if sub.const != 0.0:
                    lin[p] = lin.get(p, 0.0) + sub.const
            else:
                piv[p] = sub
        return Form(self.const, {e: c for e, c in lin.items() if c != 0.0}, piv)

    def counts(self) -> dict[str, int]:
        """Operation counts of evaluating this Form encrypted (products, constant products, relinearisations)."""
        products = len(self.piv)
        scalar = len(self.lin)
        relin = 0
        for sub in self.piv.values():
            inner = sub.counts()
            products += inner["products"]
            scalar += inner["scalar_products"]
            relin += inner["relinearisations"] + (1 if sub.piv else 0)
        return {"products": products, "scalar_products": scalar, "relinearisations": relin}


def split_form(form: Form, parts: int) -> list[Form]:
    """Split ``form`` into ``parts`` Forms whose sum is ``form``, balancing the encrypted work.

    Top-level pivot groups go whole to the least-loaded part (a relinearisation weighs most, then a
    product, then a constant product); linear terms are dealt round-robin; the constant stays in part 0.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    out = [Form() for _ in range(parts)]
    load = [0.0] * parts

    def cost(sub: Form) -> float:
        c = sub.counts()
        return 6.0 * (c["relinearisations"] + (1 if sub.piv else 0)) + 2.0 * (c["products"] + 1) + c["scalar_products"]

    for edge, sub in sorted(form.piv.items(), key=lambda item: -cost(item[1])):
        k = load.index(min(load))
        out[k].piv[edge] = sub
        load[k] += cost(sub)
    for i, (edge, coefficient) in enumerate(sorted(form.lin.items())):
        k = load.index(min(load)) if i % 4 == 0 else i % parts
        out[k].lin[edge] = coefficient
        load[k] += 1.0
    out[0].const = form.const
    return out


def tree_form(node: TreeNode) -> Form:
    """A tree as a Form: ``N = L + b (R - L)``."""
    if node.is_leaf:
        return Form(const=node.value)
    left = tree_form(node.left)  # type: ignore[arg-type]
    right = tree_form(node.right)  # type: ignore[arg-type]
    return left.add(right.add(left, -1.0).times_bit(node.edge))


def model_form(model: ModelPackage) -> Form:
    """The whole model (base margin plus every tree) as one Form."""
    total = Form(const=model.base_margin)
    for tree in model.trees:
        total = total.add(tree_form(tree))
    return total


class Backend(Protocol, Generic[V]):
    """The arithmetic a Form needs. Values carry a scale (1 in plain mode)."""

    bit_scale: float

    def bit(self, edge: int) -> V: ...
    def scaled_bit(self, edge: int, coefficient: float, scale: float) -> V: ...
    def add(self, a: V | None, b: V) -> V: ...
    def add_constant(self, a: V | None, value: float, scale: float) -> V: ...
    def multiply(self, a: V, b: V) -> V: ...
    def relinearise(self, a: V) -> V: ...


def evaluate(form: Form, backend: Backend[V], scale: float) -> V:
    """The value of ``form`` at exactly ``scale`` (a bit has ``backend.bit_scale``; products multiply scales)."""
    inner = scale / backend.bit_scale
    acc: V | None = None
    for edge, coefficient in form.lin.items():
        acc = backend.add(acc, backend.scaled_bit(edge, coefficient, inner))
    for edge, sub in form.piv.items():
        value = evaluate(sub, backend, inner)
        if sub.piv:
            value = backend.relinearise(value)
        acc = backend.add(acc, backend.multiply(backend.bit(edge), value))
    return backend.add_constant(acc, form.const, scale)


class PlainBackend:
    """numpy arithmetic on bit columns: the ``plain`` mode of the one scoring path."""

    bit_scale = 1.0

    def __init__(self, bits: Any) -> None:
        import numpy as np

        self._bits = np.asarray(bits, dtype=np.float64)

    def bit(self, edge: int):  # type: ignore[no-untyped-def]
        return self._bits[:, edge]

    def scaled_bit(self, edge: int, coefficient: float, scale: float):  # type: ignore[no-untyped-def]
        return self._bits[:, edge] * coefficient

    def add(self, a, b):  # type: ignore[no-untyped-def]
        return b if a is None else a + b

    def add_constant(self, a, value: float, scale: float):  # type: ignore[no-untyped-def]
        import numpy as np

        if a is None:
            return np.full(self._bits.shape[0], value)
        return a + value if value else a

    def multiply(self, a, b):  # type: ignore[no-untyped-def]
        return a * b

    def relinearise(self, a):  # type: ignore[no-untyped-def]
        return a
