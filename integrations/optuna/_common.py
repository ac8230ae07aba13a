"""Helpers shared by the Optuna samplers and the pruner: seeds, directions, search spaces."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autolr._errors import ConfigError
from autolr._validate import check_instance, check_int
from autolr.predictors import ExponentialPredictor, Predictor, ReferenceRun
from autolr.searchers import Param

if TYPE_CHECKING:
    from optuna.study import Study

_MULTI_OBJECTIVE_MSG = (
    "{cls} supports single-objective studies only; got {n} objectives. Use optuna's "
    "GPSampler or TPESampler for multi-objective studies."
)


# ----------------------------------------------------------------------------- arguments
def seed_or_random(seed: Any) -> int:
    """``seed`` checked to be an int in ``[0, 2**63)``, or a fresh one from the OS for ``None``."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int):
        # A ConfigError (ValueError), as this adapter has always raised for a bad seed.
        raise ConfigError(f"seed must be None or an int in [0, 2**63), got {seed!r}")
    return check_int("seed", seed, minimum=0, maximum=2**63 - 1)


def predictor_or_default(predictor: Any) -> Predictor:
    """The predictor to use (``ExponentialPredictor()`` by default)."""
    if predictor is None:
        return ExponentialPredictor()
    return check_instance("predictor", predictor, Predictor)


def optional_steps(n_steps: Any) -> int | None:
    """``n_steps``: a trial's final step (``>= 1``), or ``None`` to infer it."""
    return None if n_steps is None else check_int("n_steps", n_steps, minimum=1)


def past_steps_message(cls: str, n_steps: int, step: int, number: int, effect: str) -> str:
    """The one warning for a trial that reports a step past ``n_steps`` (``effect``: what
    goes wrong in ``cls``)."""
    return (
        f"{cls}(n_steps={n_steps}): trial {number} reported step {step}, past n_steps, the "
        f"final step a complete trial reports, so {effect}. Pass the step of your last "
        "trial.report (in the unit of its `step`: evaluations or optimizer steps), or "
        "n_steps=None to take it from the complete trials"
    )


def optional_same_step_refs(n: Any) -> int | None:
    """``same_step_refs``: complete trials the same-step regression needs (``>= 3``: a line
    through two points has no residuals to size its error), or ``None`` for never."""
    return None if n is None else check_int("same_step_refs", n, minimum=3)


# ------------------------------------------------------------------------- seeds, study
def _derive_seed(seed: int, *parts: int | str) -> int:
    """Deterministic 63-bit seed from ``(seed, *parts)``: blake2b of
    ``"autolr-optuna:<seed>:<part>:..."``.

    Not the searchers' derivation (``autolr.searchers`` hashes ``"<seed>:<counter>"``,
    without this prefix), so the same numbers give different seeds there and here.
    """
    key = ":".join(["autolr-optuna", str(seed), *map(str, parts)])
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _per_trial_draw(
    seed: int, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
) -> Any:
    """A uniform draw of ``name`` for ``trial``, seeded by (seed, trial number, name).

    Not one stream per process: workers started with the same seed would all draw that
    stream's first value for their first trial (trials 0 and 1 were identical). Trial numbers
    are unique in a study, so concurrent workers draw distinct values, and one worker
    replays its seed.
    """
    trial_seed = _derive_seed(seed, "independent", trial.number, name) % 2**32
    return RandomSampler(seed=trial_seed).sample_independent(study, trial, name, dist)


def _check_single_objective(study: Study, cls: str) -> None:
    if len(study.directions) != 1:
        raise ConfigError(_MULTI_OBJECTIVE_MSG.format(cls=cls, n=len(study.directions)))


def _references(study: Study, complete: Sequence[FrozenTrial]) -> list[ReferenceRun]:
    """Complete trials as forecast calibration references, cached under (study, trial)."""
    return [
        ReferenceRun((study._study_id, t._trial_id), t.intermediate_values, t.value)
        for t in complete
    ]


def _sign(study: Study) -> float:
    """+1 for minimisation, -1 for maximisation: ``sign * value`` is always minimised."""
    return 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0


# ------------------------------------------------------------------ search space <-> Param
def _to_param(name: str, dist: BaseDistribution) -> Param:
    """The GP dimension of a numeric distribution; discrete ones get half a step either side
    so every grid value owns an equal share of the continuous box."""
    low, high = float(dist.low), float(dist.high)
    step = getattr(dist, "step", None)
    if isinstance(dist, IntDistribution):
        half = 0.5 * (1 if dist.log else dist.step)
        return Param(name, low - half, high + half, log=dist.log)
    if step is not None:
        return Param(name, low - 0.5 * step, high + 0.5 * step)
    return Param(name, low, high, log=dist.log)


def _from_param(value: float, dist: BaseDistribution) -> float | int:
    """A GP value mapped onto the distribution (rounded to its grid, clipped, plain type)."""
    if isinstance(dist, IntDistribution):
        k = round((value - dist.low) / dist.step)
        out = dist.low + k * dist.step
        return int(min(max(out, dist.low), dist.high))
    if dist.step is not None:
        k = round((value - dist.low) / dist.step)
        out = dist.low + k * dist.step
        # decimals of the step avoid 0.30000000000000004-style representations
        out = round(min(max(out, dist.low), dist.high), 12)
        return float(out)
    return float(min(max(value, dist.low), dist.high))


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (TypeError, ValueError):
        return False
