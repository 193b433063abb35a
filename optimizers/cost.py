"""What a configuration costs: tokens, or money from a price table per LM."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from fusion_dspy import TokenUsage

__all__ = ["CostModel", "Price"]


class Price(BaseModel):
    """Price of one LM in any currency, per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class CostModel(BaseModel):
    """Turns per-LM token usage into one cost number.

    Without prices the cost is the total token count (input + output), which is what matters for
    local models. With ``prices`` every LM that appears must be priced, so a missing entry is an
    error rather than a silent zero that would make that LM look free to the optimizer.

    Attributes:
        prices: Price per LM, keyed by LM model string (``"openai/gpt-4o-mini"``) or by the teacher
            or fusor name used in the pool (resolved through ``aliases``).
        aliases: Pool name -> LM model string, filled in by the optimizer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prices: dict[str, Price] | None = None
    aliases: dict[str, str] = Field(default_factory=dict)

    @property
    def unit(self) -> str:
        return "tokens" if self.prices is None else "price"

    def with_aliases(self, aliases: Mapping[str, str]) -> CostModel:
        return self.model_copy(update={"aliases": {**self.aliases, **aliases}})

    def cost(self, usage: Mapping[str, TokenUsage]) -> float:
        """The cost of ``usage`` (per-LM token counts as in :class:`~fusion_dspy.FusionReport`)."""
        if self.prices is None:
            return float(sum(u.total_tokens for u in usage.values()))
        prices = dict(self.prices)
        for alias, model in self.aliases.items():
            if alias in prices and model not in prices:
                prices[model] = prices[alias]
        total = 0.0
        for model, used in usage.items():
            price = prices.get(model)
            if price is None:
                raise ValueError(
                    f"No price for LM {model!r}; priced: {sorted(self.prices)}. Add it to the price table "
                    "(keyed by model string or pool name), or drop prices to measure cost in tokens."
                )
            total += (used.input_tokens * price.input + used.output_tokens * price.output) / 1e6
        return total
