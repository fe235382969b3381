"""Where a reward model reads its score, and refusing a "reward model" without a trained head."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kotune.data.schema import Message, PreferencePair
from kotune.data.templates import install_template
from kotune.preference.models import backbone
from kotune.preference.pairs import tokenize_pairs
from kotune.preference.scoring import RewardModelError, load_reward_model, score_sequences


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_score_is_read_at_the_last_real_token_and_does_not_move_with_padding(tiny_models, arch):
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    install_template(tok, "ko_chat")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models[arch], num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id
    pairs = [PreferencePair((Message("user", "질문"),), "짧게.", "아주 길고 자세한 답을 드리겠습니다 " * 3)]
    (tp,), _, _ = tokenize_pairs(tok, pairs, 512)
    short, long = tp.chosen_sequence, tp.rejected_sequence
    assert short[-1] == tok.eos_token_id

    batched = score_sequences(model, [short, long], tok.pad_token_id)
    alone = torch.cat([score_sequences(model, [s], tok.pad_token_id) for s in (short, long)])
    assert torch.allclose(batched, alone, atol=1e-5)  # right padding never changes a score

    with torch.no_grad():
        per_token = model.score(backbone(model)(input_ids=torch.tensor([short])).last_hidden_state)[0, :, 0]
    # pad == eos (polyglot-ko, GPT-NeoX): transformers skips the EOS and reads the last reply token;
    # a distinct pad (LLaMA): it reads the EOS. Training, PPO and a user's AutoModel call all agree on this.
    position = len(short) - 2 if tok.pad_token_id == tok.eos_token_id else len(short) - 1
    assert float(alone[0]) == pytest.approx(float(per_token[position]), abs=1e-5)


def test_an_sft_model_is_refused_as_reward_model(tiny_neox):
    # The seed's failure: a checkpoint without the trained head loads with a random one and "works".
    with pytest.raises(RewardModelError, match="no trained reward head.*score.weight"):
        load_reward_model(str(tiny_neox))
