"""Sampling inside transformers' `generate` from the request's own torch.Generator, never the process-global RNG."""

from __future__ import annotations

from typing import Any

from qvl_core.engine.sampling import SamplingParams


class GeneratorDraw:
    """A logits processor that draws the next token from its own generator and leaves only that token.

    Scores come in already warped (temperature, top-k, top-p); out go -inf everywhere but the drawn token,
    so `generate` running greedy (argmax) emits exactly the draw.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._generator is None:  # made on the first step, on the device the scores live on
            self._generator = torch.Generator(device=scores.device)
            if self.seed is None:
                self._generator.seed()  # fresh entropy: non-reproducible, still no global state touched
            else:
                self._generator.manual_seed(self.seed)
        probs = torch.softmax(scores.float(), dim=-1)
        picked = torch.multinomial(probs, num_samples=1, generator=self._generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, picked, 0.0)


class PresencePenalty:
    """A logits processor: subtract `penalty` once from every token already in the generated text.

    transformers' generate has no presence penalty (only the multiplicative repetition_penalty, which also counts
    the prompt); the Qwen3.5 cards recommend 1.5 against loops. The first call sees only the prompt, so its length
    marks where the generated text starts.
    """

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty
        self._prompt_len: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
        generated = input_ids[:, self._prompt_len:]
        if generated.shape[1] == 0:
            return scores
        seen = scores.new_zeros(scores.shape, dtype=scores.dtype)
        seen.scatter_(1, generated, 1.0)  # 1 where a token appeared at least once, however often
        return scores - self.penalty * seen


def sampling_processors(sampling: SamplingParams) -> list[Any]:
    """The logits processors that sample `sampling` per request; run `generate` with do_sample=False around them.

    transformers 5.x `generate` draws with `torch.multinomial` on the global RNG and takes no generator, so seeding
    it meant reseeding every other request's sampling (and anything else in the process) mid-flight. These are the
    warpers `generate` would add for do_sample=True, in its order, then one draw from this request's generator.
    Greedy requests need no draw. `sampling` is resolved (no field left to the model): see `SamplingParams.resolved`.
    A presence penalty comes first, before the warpers, as generate orders its own penalties.
    """
    processors: list[Any] = [PresencePenalty(sampling.presence_penalty)] if sampling.presence_penalty else []
    if sampling.greedy:
        return processors
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if sampling.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        processors.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=sampling.top_p))
    return [*processors, GeneratorDraw(sampling.seed)]
