"""A canary for the private RLlib names RexRagLearner relies on (ray[rllib] is pinned to
2.60.x for them): an RLlib upgrade that renames one fails here, naming it, before a run
fails somewhere deep in a Ray actor."""

from __future__ import annotations

import inspect

from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from agents.rexrag.learner import RexRagLearner

#: The private hooks RexRagLearner overrides: they must exist in RLlib to be called.
OVERRIDDEN_HOOKS = (
    "_make_module",
    "_make_modules_ddp_if_necessary",
    "_uncompiled_update",
    "_get_clip_function",
    "_get_optimizer_state",
    "_set_optimizer_state",
)
#: The private attributes and helpers it reads: RLlib must still set or define them.
READ_NAMES = (
    "_device",
    "_module",
    "_params",
    "_named_optimizers",
    "_optimizer_parameters",
    "_optimizer_name_to_module",
    "_weights_seq_no",
    "_set_optimizer_lr",
)


def rllib_learner_source() -> str:
    return inspect.getsource(Learner) + inspect.getsource(TorchLearner)


def test_every_private_hook_we_override_is_still_rllibs():
    missing = [name for name in OVERRIDDEN_HOOKS if not hasattr(TorchLearner, name)]
    assert not missing, f"RLlib no longer has the hooks RexRagLearner overrides: {missing}"
    ours = [name for name in OVERRIDDEN_HOOKS if name in vars(RexRagLearner)]
    assert ours == list(OVERRIDDEN_HOOKS)  # the list above is the learner's, in full


def test_every_private_name_we_read_is_still_set_by_rllib():
    source = rllib_learner_source()
    missing = [
        name for name in READ_NAMES if f"self.{name}" not in source and f"def {name}(" not in source
    ]
    assert not missing, f"RLlib's Learner no longer sets or defines: {missing}"
    ours = inspect.getsource(RexRagLearner)
    assert all(f"self.{name}" in ours for name in READ_NAMES)  # each is really read
