"""CPU-bound CKKS evaluation off the event loop: a process pool shared by every ScoringServicer.

SEAL (through TenSEAL's bindings) holds the GIL, so threads would serialise and block the gRPC event
loop; worker processes (spawned, never forked from a process running gRPC) use every core. Each worker
caches the evaluators of recently used contexts and the compiled form of the model, loading both from
files the service wrote (their hashes are checked on load), so a task carries only ciphertexts.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

_EVALUATORS: OrderedDict[str, Any] = OrderedDict()
_FORMS: dict[str, Any] = {}
_MAX_EVALUATORS = 8


def _evaluator(context_path: str, context_id: str) -> Any:
    from ciphercare.analytics.he.ckks import HEError
    from ciphercare.analytics.server.evaluator import Evaluator

    cached = _EVALUATORS.get(context_id)
    if cached is not None:
        _EVALUATORS.move_to_end(context_id)
        return cached
    data = Path(context_path).read_bytes()
    if hashlib.sha256(data).hexdigest() != context_id:
        raise HEError(f"stored context {context_id[:16]}… does not match its id")
    evaluator = Evaluator(data)
    _EVALUATORS[context_id] = evaluator
    while len(_EVALUATORS) > _MAX_EVALUATORS:
        _EVALUATORS.popitem(last=False)
    return evaluator


def _model(model_path: str, model_sha256: str, evaluator: Any) -> tuple[Any, Any]:
    """The deployed package and its Form (cached per hash; checked against the evaluator's budget)."""
    from ciphercare.analytics.he.budget import check_model
    from ciphercare.analytics.model.forms import model_form
    from ciphercare.analytics.model.package import ModelPackage

    entry = _FORMS.get(model_sha256)
    if entry is None:
        package = ModelPackage.load(Path(model_path), expected_sha256=model_sha256)
        _FORMS.clear()
        entry = _FORMS[model_sha256] = (package, model_form(package))
    check_model(entry[0], evaluator)
    return entry


def evaluate_batch(context_path: str, context_id: str, model_path: str, model_sha256: str,
                   envelopes: list[bytes], batch_index: int, owned: int,
                   output_sigma: float = 0.0) -> tuple[bytes, float]:
    """Validate one batch's bit ciphertexts and evaluate the model on them (runs in a worker).

    Only the first ``owned`` slots (the batch's declared, consented, logged patients) carry a result.
    """
    started = time.perf_counter()
    evaluator = _evaluator(context_path, context_id)
    package, form = _model(model_path, model_sha256, evaluator)
    bits = [evaluator.load_ciphertext(env, f"ciphertext (batch {batch_index}, edge {j})")
            for j, env in enumerate(envelopes)]
    return (evaluator.evaluate(form, bits, groups=package.grid.groups(), owned=owned, output_sigma=output_sigma),
            time.perf_counter() - started)


def evaluate_part(context_path: str, context_id: str, model_path: str, model_sha256: str,
                  envelopes: list[bytes], batch_index: int, part: int, parts: int,
                  owned: int) -> tuple[bytes, float]:
    """Part ``part`` of ``parts`` of one batch (validates every ciphertext); the partial stays on the server.

    Part 0 also carries the input-validity term.
    """
    from ciphercare.analytics.model.forms import split_form

    started = time.perf_counter()
    evaluator = _evaluator(context_path, context_id)
    package, whole = _model(model_path, model_sha256, evaluator)
    form = split_form(whole, parts)[part]
    bits = [evaluator.load_ciphertext(env, f"ciphertext (batch {batch_index}, edge {j})")
            for j, env in enumerate(envelopes)]
    groups = package.grid.groups() if part == 0 else None
    return evaluator.evaluate_partial(form, bits, groups=groups, owned=owned), time.perf_counter() - started


def finish_parts(context_path: str, context_id: str, partials: list[bytes], owned: int,
                 output_sigma: float = 0.0) -> tuple[bytes, float]:
    """Sum the parts of a batch, mask, flood and re-randomise: the ciphertext the client receives."""
    started = time.perf_counter()
    return (_evaluator(context_path, context_id).finish_partials(partials, owned=owned, output_sigma=output_sigma),
            time.perf_counter() - started)


def warm(context_path: str, context_id: str, model_path: str, model_sha256: str) -> int:
    """Load a context and the model into this worker's caches (returns the worker's pid)."""
    _model(model_path, model_sha256, _evaluator(context_path, context_id))
    return os.getpid()


class EvaluationPool:
    """A lazily started process pool (one per server process)."""

    _lock = threading.Lock()
    _instance: EvaluationPool | None = None

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    @classmethod
    def shared(cls) -> EvaluationPool:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(max(1, min(2, os.cpu_count() or 1)))
                atexit.register(cls._shutdown)
            return cls._instance

    @classmethod
    def _shutdown(cls) -> None:
        with cls._lock:
            if cls._instance is not None:
                cls._instance._executor.shutdown(wait=True, cancel_futures=True)
                cls._instance = None

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        return self._executor.submit(fn, *args)
