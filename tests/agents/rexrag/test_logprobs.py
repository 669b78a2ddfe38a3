import pytest
import torch
from transformers import AutoModelForCausalLM

from agents.rexrag.logprobs import response_token_logprobs


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_equals_a_full_log_softmax_at_target_positions(model):
    torch.manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 9:] = 0  # right padding
    target_mask = torch.zeros(3, 12, dtype=torch.bool)
    target_mask[:, 5:9] = True
    target_mask[2, 10] = True
    ours = response_token_logprobs(model, input_ids, attention_mask, target_mask)
    with torch.no_grad():
        full = torch.log_softmax(
            model(input_ids=input_ids, attention_mask=attention_mask).logits, -1
        )
    expected = full[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [3, 11], token t+1
    assert torch.allclose(ours[:, 1:][target_mask[:, 1:]], expected[target_mask[:, 1:]], atol=1e-5)
    assert (ours[~target_mask] == 0).all()


def test_gradients_reach_the_model_only_through_targets(model):
    input_ids = torch.randint(0, model.config.vocab_size, (2, 8))
    target_mask = torch.zeros(2, 8, dtype=torch.bool)
    target_mask[0, 4] = True
    model.zero_grad()
    response_token_logprobs(model, input_ids, torch.ones(2, 8), target_mask).sum().backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0
