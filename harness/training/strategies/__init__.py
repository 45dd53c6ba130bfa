"""How one stage's model is spread over the run's ranks, behind one seam (`Strategy`, in
`base`), one module per strategy:

- `single`: one process, the model as is;
- `ddp`: a full replica per rank, gradients all-reduced (small models, the CPU demo);
- `fsdp`: torch FSDP2 on the LLM's decoder layers and the root (ZeRO-3 when the LLM trains,
  ZeRO-2 when only the connector does), trained on a copy loaded shard by shard.

`registry.pick` is the one choice of a strategy, which training (`choose`, below) and the
plan's memory estimate (harness.planning.estimate) both call (training through
`registry.choose`): `auto` picks single on one rank,
ddp below a billion parameters, fsdp above. Every strategy computes in the run's precision
with trainable parameters (and so their gradients, their reduction and the optimizer) in fp32;
frozen Linear and Conv weights are held in the compute dtype for the stage
(harness.training.frozen), the other frozen parts as loaded (harness.training.preparation).
Importing this package registers every strategy."""
from harness.training.strategies import ddp, fsdp, single  # noqa: F401  (they register)
from harness.training.strategies.base import PreparedModel, Strategy
from harness.training.strategies.fsdp import decoder_layers
from harness.training.strategies.registry import (
    STRATEGIES,
    choose,
    pick,
    strategy_choices,
)

__all__ = ["STRATEGIES", "PreparedModel", "Strategy", "choose",
           "decoder_layers", "pick", "strategy_choices"]
