"""Training on a two-node Ray cluster, simulated on this machine (``ray.cluster_utils``).

The EnvRunners go to one node and the learner to the other through RLlib's own knobs
(``custom_resources_per_env_runner``, ``custom_resources_per_learner``), as the README's
scale-out section says; each test checks where the actors really ran. The nodes share
this machine's filesystem, so "missing on the runner's node" is a path missing everywhere:
what the tests pin is that the runner's error reaches the user, not RLlib's.
"""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from agents.rexrag.rexrag import METRICS_KEY, RolloutFailedError
from rexrag_env.retrieval.server import background_server
from tests.agents.conftest import tiny_config
from tests.helpers import CountingRetriever

pytestmark = pytest.mark.slow  # a two-node Ray cluster

#: One unit of each per node: an actor that asks for it can only run there.
LEARNER_NODE, RUNNER_NODE = "learner_node", "runner_node"


@pytest.fixture(scope="module")
def two_nodes():
    """A head node for the driver and the learner, a second node for the EnvRunner
    (one CPU each); yields their Ray node ids. Its own Ray, not ``ray_cluster``'s."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {LEARNER_NODE: 1}, "include_dashboard": False},
    )
    try:
        runner_node = cluster.add_node(num_cpus=1, resources={RUNNER_NODE: 1})
        ray.init(address=cluster.address, log_to_driver=False)
        yield {LEARNER_NODE: cluster.head_node.node_id, RUNNER_NODE: runner_node.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()


def placed_config(model_dir, task, **overrides):
    """One remote EnvRunner on the runner node, one remote learner on the learner node."""
    config = tiny_config(
        model_dir, task, num_env_runners=1, num_learners=1, questions_per_iteration=2, **overrides
    )
    config.env_runners(custom_resources_per_env_runner={RUNNER_NODE: 1})
    return config.learners(custom_resources_per_learner={LEARNER_NODE: 1})


def node_ids(algo) -> dict[str, list[str]]:
    """The Ray node each EnvRunner and each learner actor runs on."""

    def here(_) -> str:
        return ray.get_runtime_context().get_node_id()

    learners = [result.get() for result in algo.learner_group.foreach_learner(here)]
    runners = algo.env_runner_group.foreach_env_runner(here, local_env_runner=False)
    return {LEARNER_NODE: learners, RUNNER_NODE: runners}


def test_an_index_path_missing_on_the_runner_node_fails_the_first_iteration_clearly(
    answering_model_dir, capital_task, two_nodes, tmp_path
):
    index = tmp_path / "no-index-here"
    algo = placed_config(answering_model_dir, capital_task, retriever=str(index)).build_algo()
    try:
        assert node_ids(algo) == {name: [node] for name, node in two_nodes.items()}
        with pytest.raises(RolloutFailedError) as failure:
            algo.train()
    finally:
        algo.stop()
    message = str(failure.value)
    assert message.startswith("EnvRunner 1 failed to sample: ValueError")
    assert f"no directory {index} on node" in message
    assert "read on every EnvRunner's node" in message
    assert "rexrag serve --index PATH" in message
    assert "retriever=http://HOST:PORT/retrieve" in message


def test_one_iteration_with_the_index_served_and_actors_on_their_nodes(
    answering_model_dir, capital_task, two_nodes, bm25_retriever
):
    served = CountingRetriever(bm25_retriever)
    with background_server(served, description={"index": "bm25"}) as url:
        config = placed_config(answering_model_dir, capital_task, retriever=url + "/retrieve")
        algo = config.build_algo()
        try:
            assert node_ids(algo) == {name: [node] for name, node in two_nodes.items()}
            metrics = algo.train()[METRICS_KEY]
        finally:
            algo.stop()
    assert metrics["num_questions"] == 2 and metrics["trained_tokens"] > 0
    assert metrics["logprob_mismatch"] < 1e-3  # the runner sampled with the learner's weights
    assert served.calls  # the runner's searches went through the service
