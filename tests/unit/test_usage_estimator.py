"""Counting usage off the event loop: a real count in the worker, the byte bounds when it cannot run in time."""

from __future__ import annotations

from tenantgate.metering.estimator import UsageEstimator

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there, how are you today?"}]}
ANSWER = {"choices": [{"message": {"content": "very well, thank you"}}]}


async def test_the_worker_counts_and_never_exceeds_the_bounds() -> None:
    estimator = UsageEstimator(timeout_s=30)
    try:
        usage = await estimator.estimate(
            "chat/completions", BODY, answer=ANSWER, prompt_bound=1000, completion_bound=1000
        )
    finally:
        await estimator.close()
    assert usage.estimated and estimator.fallbacks == 0
    assert 5 < usage.prompt_tokens < 30 and 3 < usage.completion_tokens < 10  # a tokenizer's count, not bounds


async def test_past_its_time_cap_the_count_falls_back_to_the_bounds() -> None:
    estimator = UsageEstimator(timeout_s=0.001)  # the worker cannot even start in time
    try:
        usage = await estimator.estimate("chat/completions", BODY, answer=ANSWER, prompt_bound=77, completion_bound=55)
    finally:
        await estimator.close()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (77, 55, True)
    assert estimator.fallbacks == 1


async def test_too_many_waiting_counts_fall_back_at_once() -> None:
    estimator = UsageEstimator(max_pending=0)
    usage = await estimator.estimate("chat/completions", BODY, answer=ANSWER, prompt_bound=9, completion_bound=8)
    await estimator.close()
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 8) and estimator.fallbacks == 1
