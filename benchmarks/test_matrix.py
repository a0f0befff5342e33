"""The matrix builder's own tests (no benchmark: these run in a blink)."""

from benchmarks.matrix import Case, Checkpoint, cases, checkpoint_token

TINY = [Checkpoint(name, f"/ckpt/{name}", "tiny") for name in ("llama", "qwen2", "gpt2")]


def test_matrix_is_the_product_minus_auto_with_4bit():
    ids = [case.id for case in cases(TINY)]

    assert len(ids) == len(set(ids)) == 3 * (4 * 5 - 3)
    assert not [case_id for case_id in ids if "-auto-4bit" in case_id]


def test_case_id_and_spec_read_as_the_axes():
    case = Case(TINY[0], "bfloat16", "4bit-nf4-nested")

    assert case.id == "llama-bf16-4bit-nf4-nested"
    assert (case.spec.dtype, case.spec.load_in_4bit, case.spec.bnb_4bit_quant_type, case.spec.use_bnb_nested_quant) == (
        "bfloat16", True, "nf4", True,
    )


def test_checkpoint_token_of_paths_and_hub_ids():
    assert [checkpoint_token(s) for s in ("Qwen/Qwen2.5-0.5B", "/models/My Model/", "org/x@y")] == [
        "qwen2.5-0.5b", "my_model", "x_y",
    ]
