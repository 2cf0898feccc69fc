"""A candidate's ``memory_mb`` in the results store, from the one source the run's config names
(``reward.memory_source``, README "Memory as a cost"), only when the run needs it (the reward's
cost or ``reward.max_memory_mb``): the analytic estimate (`models.memory`) when the row is first
stored, or the footprint the phone reported with the candidate's timing."""

from __future__ import annotations

from typing import Any

from pipeline.config import RewardConfig


def _source(reward: RewardConfig) -> str | None:
    return reward.memory_source if reward.needs_memory else None


def estimated_memory(reward: RewardConfig, network: Any) -> dict[str, Any]:
    """The memory columns of a newly trained candidate (none unless the run estimates memory);
    a `SearchError` when the network's family cannot be estimated."""
    if _source(reward) != "estimate":
        return {}
    from models.memory import MemoryEstimateError, estimate_memory
    from pipeline.search_setup import SearchError

    try:
        estimate = estimate_memory(network)
    except MemoryEstimateError as error:
        raise SearchError(str(error)) from None
    return {"memory_mb": estimate.memory_mb, "memory_source": "estimate"}


def measured_memory(reward: RewardConfig, record: Any, key: str) -> dict[str, Any]:
    """The memory columns from a `pipeline.latency_chain.LatencyRecord` (none unless the run
    measures memory); a `LatencyUnavailableError` when the device reported no footprint."""
    if _source(reward) != "measured":
        return {}
    if record.memory_mb is None:
        from pipeline.latency_chain import LatencyUnavailableError

        raise LatencyUnavailableError(
            f"{record.spec} reported no memory footprint for {key} (benchmark_model prints "
            "'Memory footprint' / 'peak memory' lines; an older build may not): update the "
            "phone's benchmark_model, or set reward.memory_source = 'estimate'"
        )
    return {"memory_mb": record.memory_mb, "memory_source": "measured"}
