"""The split from the safetensors headers: MoE-aware bytes per token, the MTP layer left out, `--split
auto|stored|streamed`, and the memory check before loading (no model of the fake checkpoints is built)."""

import json
import re

import numpy as np
import pytest

import mlx_tandem as tdm
from mlx_tandem import cli, memory
from mlx_tandem.checkpoint import Checkpoint
from mlx_tandem.pipeline import partition, ranks
from pipeline_helpers.tiny_deepseek import H, MTP_SHARD, V, nbytes, tiny_deepseek
from pipeline_helpers.tiny_llama import LAYERS, tiny_llama

PLENTY = 1 << 40
LAYERS_DS, EXPERTS, PER_TOKEN = 6, 8, 2


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    return tiny_deepseek(tmp_path_factory.mktemp("ds") / "deepseek", LAYERS_DS, EXPERTS, PER_TOKEN)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return {tied: tiny_llama(tmp_path_factory.mktemp("llama") / f"tied{tied}", tied=tied) for tied in (False, True)}


def layer_of(name):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return int(m[1]) if m else None


def expected_layers(tensors):
    """(stored, streamed) bytes per layer from the writer's own record: a token streams every tensor
    of a layer but its routed experts, and PER_TOKEN of those (all experts are the same size)."""
    stored, streamed = [0] * LAYERS_DS, [0] * LAYERS_DS
    for name, a in tensors.items():
        i = layer_of(name)
        if i is None:
            continue
        stored[i] += nbytes(a)
        if ".mlp.experts." not in name:
            streamed[i] += nbytes(a)
        elif ".mlp.experts.0." in name:
            streamed[i] += PER_TOKEN * nbytes(a)
    return stored, streamed


def balanced(layer_bytes, rank0_extra, rank1_extra):
    return min(range(1, len(layer_bytes)),
               key=lambda s: (abs(rank0_extra + sum(layer_bytes[:s]) - sum(layer_bytes[s:]) - rank1_extra), s))


def expected_splits(tensors):
    stored, streamed = expected_layers(tensors)
    embed, norm = V * H * 2, H * 2  # bf16
    # rank 0 holds the embedding but streams only its gathered rows; the bf16 head of an FP8
    # checkpoint stays bf16
    return balanced(stored, embed, V * H * 2 + norm), balanced(streamed, 0, V * H * 2 + norm)


def use_memory(monkeypatch, available):
    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    monkeypatch.delenv(memory.OVERRIDE_ENV, raising=False)


# ---- bytes ------------------------------------------------------------------------------------
def test_step_bytes_count_k_of_e_experts_and_skip_mtp(deepseek):
    path, tensors = deepseek
    ckpt = Checkpoint(path)
    step = partition.step_bytes(ckpt)
    _, want = expected_layers(tensors)
    got = [sum(n for name, n in step.items() if layer_of(name) == i) for i in range(LAYERS_DS)]
    assert got == want
    assert got[2] < got[1]  # an MoE layer streams less than the dense one before it here
    for name in tensors:
        if ".mlp.experts." in name:
            assert step[name] == nbytes(tensors[name]) * PER_TOKEN // EXPERTS
        elif ".mlp.gate." in name or name == "lm_head.weight":  # bf16 router and head run as stored
            assert step[name] == nbytes(tensors[name])


@pytest.mark.parametrize("count", [partition.tensor_bytes, partition.step_bytes, partition.resident_bytes])
def test_mtp_layer_is_neither_counted_nor_opened(deepseek, count):
    path, tensors = deepseek
    ckpt = Checkpoint(path)
    assert any(layer_of(n) == LAYERS_DS for n in ckpt.where)  # the index lists it ...
    sizes = count(ckpt)
    assert set(sizes) == set(tensors)  # ... the counts leave it out
    assert MTP_SHARD not in ckpt._files  # and its (absent) shard was never opened


def test_fingerprint_inventory_ignores_the_mtp_layer(deepseek, tmp_path):
    path, _ = deepseek
    plain, _ = tiny_deepseek(tmp_path / "no-mtp", LAYERS_DS, EXPERTS, PER_TOKEN, mtp=False)
    with_mtp, without = Checkpoint(path), Checkpoint(plain)
    assert len(with_mtp.where) > len(without.where)
    inventory = partition.tensor_bytes(with_mtp)
    assert inventory == partition.tensor_bytes(without)
    assert (partition.model_fingerprint(with_mtp.config, inventory)
            != partition.model_fingerprint(with_mtp.config, dict(inventory, extra=1)))  # the inventory counts


def test_fp8_checkpoint_resident_bytes_are_its_stored_bytes(deepseek):
    path, tensors = deepseek
    assert partition.resident_bytes(Checkpoint(path)) == {n: nbytes(a) for n, a in tensors.items()}


# ---- the split --------------------------------------------------------------------------------
def test_auto_balances_streamed_bytes_when_memory_is_plentiful(deepseek, monkeypatch):
    path, tensors = deepseek
    want_stored, want_streamed = expected_splits(tensors)
    assert want_stored != want_streamed  # the fake model is built so that the criteria disagree
    use_memory(monkeypatch, PLENTY)
    p = ranks.plan(path, "auto")
    assert (p.split, p.choice.criterion) == (want_streamed, "streamed")
    assert p.choice.streamed[0] == sum(expected_layers(tensors)[1][:want_streamed])


def test_auto_balances_stored_bytes_when_the_streamed_split_would_not_fit(deepseek, monkeypatch):
    path, tensors = deepseek
    want_stored, want_streamed = expected_splits(tensors)
    streamed_need = max(ranks.plan(path, want_streamed).choice.need)
    edge = int(streamed_need / partition.AUTO_FIT_FRACTION)
    use_memory(monkeypatch, edge - 1)
    p = ranks.plan(path, "auto")
    assert (p.split, p.choice.criterion) == (want_stored, "stored")
    assert "would need" in p.choice.reason
    use_memory(monkeypatch, edge + 1)
    assert ranks.plan(path, "auto").split == want_streamed


@pytest.mark.parametrize("available", [PLENTY, 1 << 20])
def test_forced_criteria_ignore_memory(deepseek, monkeypatch, available):
    path, tensors = deepseek
    want_stored, want_streamed = expected_splits(tensors)
    use_memory(monkeypatch, available)
    assert ranks.plan(path, "stored").choice.criterion == "stored"
    assert ranks.plan(path, "stored").split == want_stored
    assert ranks.plan(path, "streamed").split == want_streamed
    p = ranks.plan(path, "4")
    assert (p.split, p.choice.criterion) == (4, "layer")


@pytest.mark.parametrize("bad, msg", [("middle", "'auto', 'stored', 'streamed' or a layer index"),
                                      ("0", "must be in 1..5"), (str(LAYERS_DS), "must be in 1..5")])
def test_bad_split_is_a_clear_error(deepseek, bad, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        ranks.plan(deepseek[0], bad)


def test_moe_config_without_expert_counts_is_refused(tmp_path):
    path, _ = tiny_deepseek(tmp_path / "ds", 3, 4, 1, first_dense=1, mtp=False)
    with open(f"{path}/config.json") as f:
        config = json.load(f)
    del config["num_experts_per_tok"], config["n_routed_experts"]
    with open(f"{path}/config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="routed expert.*no n_routed_experts"):
        partition.step_bytes(Checkpoint(path))


@pytest.mark.parametrize("tied", [False, True])
def test_dense_llama_keeps_todays_split_and_inventory(llama, monkeypatch, tied):
    path = llama[tied]
    ckpt = Checkpoint(path)
    f = ckpt._open("model.safetensors")
    disk = {n: i["offsets"][1] - i["offsets"][0] for n, i in f.tensors.items()}
    assert partition.tensor_bytes(ckpt) == disk  # the fingerprint's inventory: every tensor
    # the rule before MoE: matrices one byte per element, the rest as stored
    old = {n: int(np.prod(i["shape"])) if len(i["shape"]) == 2 else disk[n] for n, i in f.tensors.items()}
    assert partition.step_bytes(ckpt) == old
    layer = [sum(b for n, b in old.items() if layer_of(n) == i) for i in range(LAYERS)]
    head = sum(b for n, b in old.items() if n.startswith(("lm_head.", "model.norm.")))
    head += old["model.embed_tokens.weight"] if tied else 0
    use_memory(monkeypatch, PLENTY)
    p = ranks.plan(path, "auto")
    assert (p.split, p.choice.criterion) == (balanced(layer, 0, head), "streamed")
    # a float checkpoint holds its matrices as FP8 once loaded
    assert p.choice.stored[0] < p.rank_bytes[0]


# ---- the memory check -------------------------------------------------------------------------
def test_rank_refuses_to_load_a_share_that_does_not_fit(deepseek, monkeypatch, capsys):
    path, tensors = deepseek
    use_memory(monkeypatch, 10 << 20)
    # the check runs before loading: there is no deepseek_v3 model class here to load
    with pytest.raises(memory.NotEnoughMemory) as e:
        ranks.serve_rank1(path, split="streamed", connect_timeout=1)
    want_stored, want_streamed = expected_splits(tensors)
    msg = str(e.value)
    assert f"rank 1 (layers [{want_streamed}, {LAYERS_DS})" in msg
    assert re.search(r"needs 1\.1 GB \(\d\.\d\d MB of weights \+ 1\.1 GB for the KV cache and activations\), "
                     r"this machine has 10\.49 MB available; use --split stored", msg), msg
    assert "--no-memory-check" in msg
    assert f"split {want_streamed} (streamed: forced by --split streamed)" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_memory_check_override(llama, monkeypatch, how):
    use_memory(monkeypatch, 10 << 20)
    with pytest.raises(memory.NotEnoughMemory, match="use `tandem launch`"):
        tdm.load(llama[False])
    if how == "env":
        monkeypatch.setenv(memory.OVERRIDE_ENV, "1")
    model, _ = tdm.load(llama[False], memory_check=how != "flag")
    assert len(model.model.layers) == LAYERS


def test_load_checks_only_the_layers_it_loads(llama, monkeypatch):
    use_memory(monkeypatch, PLENTY)
    ckpt = Checkpoint(llama[False])
    held = partition.resident_bytes(ckpt)
    part = partition.share_bytes(held, 2, 4, embed=False, head=False)
    whole = partition.share_bytes(held, 0, LAYERS, embed=True, head=True)
    assert 0 < part < whole
    use_memory(monkeypatch, memory.need_bytes(part) + 1)  # enough for layers [2, 4), not for the model
    tdm.load(llama[False], layer_range=(2, 4))
    with pytest.raises(memory.NotEnoughMemory, match="layers"):
        tdm.load(llama[False], layer_range=(0, LAYERS))


def test_cli_reports_the_choice_and_the_memory_error(deepseek, llama, monkeypatch, capsys):
    path, tensors = deepseek
    want_stored, _ = expected_splits(tensors)
    use_memory(monkeypatch, 10 << 20)
    assert cli.main(["launch", "--node-rank", "0", "--model", path, "--prompt", "x", "--connect-timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert f"rank 0: split {want_stored} (stored: auto; the streamed-balanced split" in err
    assert "per rank stored" in err and "streamed per token" in err
    assert "tandem launch: memory check: rank 0" in err
    assert cli.main(["generate", "--model", llama[False], "--prompt", "w1", "--max-tokens", "1"]) == 1
    assert "error: memory check: tied" in capsys.readouterr().err
    assert cli.main(["generate", "--model", llama[False], "--prompt", "w1", "--max-tokens", "1",
                     "--no-memory-check"]) == 0


def test_unknown_memory_is_reported_not_checked(llama, monkeypatch, capsys):
    use_memory(monkeypatch, None)
    tdm.load(llama[False])
    assert "available memory is unknown, not checked" in capsys.readouterr().err
    assert ranks.plan(llama[False], "auto").choice.reason == "auto; this machine's available memory is unknown"


def test_meminfo_parse(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n")
    assert memory._meminfo_available(str(f)) == 20000000 * 1024
    f.write_text("MemTotal:       24000000 kB\n")
    assert memory._meminfo_available(str(f)) is None
