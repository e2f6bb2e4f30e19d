"""Tiny randomly initialised Hugging Face models convert, train and unconvert (nothing downloaded)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fewbit_design.torch as ft  # noqa: E402


def tiny_bert():
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config), {"labels": torch.tensor([0, 1, 2, 1])}


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config), {}


@pytest.mark.parametrize("build,expected,tol", [
    (tiny_bert, {"GELUActivation": ("gelu", 2), "Tanh": ("tanh", 1)}, 0.0),
    (tiny_gpt2, {"NewGELUActivation": ("gelu_tanh", 2)}, 1e-5),
], ids=["bert", "gpt2"])
def test_convert_train_unconvert(build, expected, tol):
    torch.manual_seed(0)
    model, extra = build()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids, **extra}
    model.eval()  # no dropout: the converted forward can be compared
    with torch.no_grad():
        before = model(**batch).logits
    originals = dict(model.named_modules())

    done = ft.convert(model, bits=3)
    kinds = {}
    for _, old, new in done:
        name, count = kinds.get(old, (new.activation, 0))
        kinds[old] = (name, count + 1)
    assert kinds == expected
    with torch.no_grad():
        after = model(**batch).logits
    # GELUActivation is F.gelu: bit for bit; GPT-2's NewGELU formula differs in the last bits
    torch.testing.assert_close(after, before, rtol=tol, atol=tol)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    restored = ft.unconvert(model)
    assert len(restored) == len(done)
    assert all(originals[name] is mod for name, mod in model.named_modules())


def test_save_pretrained_keeps_the_tables(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model, _ = tiny_bert()
    ft.convert(model, bits=2)
    model.save_pretrained(tmp_path)
    state = safetensors.load_file(tmp_path / "model.safetensors")
    key = "bert.encoder.layer.0.intermediate.intermediate_act_fn._extra_state"
    assert state[key].dtype == torch.uint8
    again, _ = tiny_bert()
    ft.convert(again, bits=2)
    again.load_state_dict(state)  # same tables: loads; other bits: refused
    ft.convert(again, bits=4)
    with pytest.raises(RuntimeError, match="intermediate_act_fn._extra_state: the checkpoint's table"):
        again.load_state_dict(state)
