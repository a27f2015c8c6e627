"""Shared, cached fixtures for the scoring tests: the default model and key pairs (real TenSEAL keys)."""

from __future__ import annotations

import functools
from typing import Any

from ciphercare.analytics.client.keys import KeyOwner
from ciphercare.analytics.model.datasets import load_whas500
from ciphercare.analytics.model.training import TrainingResult, train_model


@functools.cache
def default_training() -> TrainingResult:
    """The default WHAS500 model, trained once per test session (deterministic: the server trains the same)."""
    return train_model(load_whas500())


@functools.cache
def key_owner(name: str = "hospital-a") -> KeyOwner:
    """A CKKS key pair per name, generated once per session."""
    return KeyOwner.generate()


def grant(env: Any, pid: str, org: str = "hospital-a", purposes: tuple[str, ...] = ("TREAT",),
          data_classes: tuple[str, ...] = ("Observation",)) -> str:
    """The patient grants ``org`` a permit; returns the consent id."""
    from ciphercare.v1 import common_pb2, consent_pb2

    client = env.patient(pid)
    try:
        response = client.grant(consent_pb2.GrantRequest(
            pid=pid, grantee_organization=org, decision=consent_pb2.CONSENT_DECISION_PERMIT,
            purposes=list(purposes), data_classes=list(data_classes), period=common_pb2.Period()))
        return response.consent.id
    finally:
        client.close()


def deploy_default(settings: Any) -> str:
    """Put the default model where the server reads it (what ``ciphercare up`` does); returns its SHA-256."""
    from ciphercare.services.scoring.servicer import model_path

    return default_training().package.save(model_path(settings))
