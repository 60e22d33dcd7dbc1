"""Property-based invariants (hypothesis) of masking and packing, over generated examples."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayft.data.packing import PackedCollator, pack_examples
from rayft.data.tokenize import IGNORE_INDEX, tokenize

TEXT = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), min_size=1, max_size=60)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(turns=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3), max_length=st.integers(8, 120),
       side=st.sampled_from(["right", "left"]))
def test_every_label_token_belongs_to_an_answer(tiny_tokenizer, turns, max_length, side):
    segments = [seg for user, answer in turns for seg in ((user, False), (answer, True))]
    tok = tokenize(segments, tiny_tokenizer, max_length=max_length, truncation_side=side)
    if tok is None:  # truncation cut every answer token: dropped (and counted by the caller)
        return
    assert len(tok.input_ids) == len(tok.labels) <= max_length
    # Rebuild which positions are answer tokens, then truncate the same way.
    answer_flags: list[bool] = []
    for text, trainable in segments:
        answer_flags += [trainable] * len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    answer_flags.append(True)  # the appended EOS is part of the answer
    answer_flags = answer_flags[:max_length] if side == "right" else answer_flags[-max_length:]
    for flag, token, label in zip(answer_flags, tok.input_ids, tok.labels):
        assert label == IGNORE_INDEX or (flag and label == token)
        if flag:
            assert label == token, "answer tokens are all trained on"


@SETTINGS
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=25), max_length=st.integers(40, 128))
def test_packing_keeps_every_token_and_isolates_examples(lengths, max_length):
    items = []
    next_id = 10
    for n in lengths:  # distinct token ids per example, so provenance is checkable
        ids = list(range(next_id, next_id + n))
        next_id += n
        items.append({"input_ids": ids, "labels": ids})
    packed = pack_examples(items, max_length)
    flat = sorted(t for row in packed for t in row["input_ids"])
    assert flat == sorted(t for item in items for t in item["input_ids"]), "every token kept exactly once"
    assert all(len(row["input_ids"]) <= max_length for row in packed)
    batch = PackedCollator(pad_token_id=0)(packed)
    mask = batch["attention_mask"][:, 0] == 0  # True where attention is allowed
    for b, row in enumerate(packed):
        owner = []
        for k, n in enumerate(row["seq_lengths"]):
            owner += [k] * n
        n = len(owner)
        owner_t = torch.tensor(owner)
        allowed = mask[b, :n, :n]
        same = owner_t[:, None] == owner_t[None, :]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        assert torch.equal(allowed, same & causal), "no cross-example attention, causal within"
        starts = [sum(row["seq_lengths"][:k]) for k in range(len(row["seq_lengths"]))]
        assert all(batch["position_ids"][b, s] == 0 for s in starts), "positions restart per example"
