from diffenvs.world.attributes import world_words
from diffenvs.world.tokenizer import CONTEXT_LENGTH, build_world_tokenizer, learn_merges


def test_every_world_word_is_one_token(tmp_path):
    tok = build_world_tokenizer(tmp_path)
    for word in world_words():
        ids = tok(word).input_ids
        assert len(ids) == 3, (word, tok.convert_ids_to_tokens(ids))  # <sot> word <eot>


def test_end_of_text_has_the_largest_id_and_pads(tmp_path):
    tok = build_world_tokenizer(tmp_path)
    assert tok.eos_token_id == len(tok) - 1
    ids = tok("one red circle", padding="max_length", max_length=CONTEXT_LENGTH).input_ids
    assert len(ids) == CONTEXT_LENGTH and ids[-1] == tok.eos_token_id


def test_unknown_words_still_tokenize(tmp_path):
    tok = build_world_tokenizer(tmp_path)
    ids = tok("a zebra").input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a zebra"


def test_merges_are_deterministic():
    assert learn_merges(["red", "green", "reed"]) == learn_merges(["reed", "green", "red"])
