"""Token files (``output.token_formats``, issue 23) read back by the trainers' own readers.

One dummy-teacher run, shared by the reader tests: megatron-core's ``IndexedDataset`` opens every
prefix and ``GPTDataset`` (through ``BlendedMegatronDatasetBuilder``, on the CPU) cuts training samples
from the blend the run wrote; datatrove's ``DatatroveFileDataset`` (what nanotron reads) and a numpy
memmap with OLMo's boundaries give the same documents. Each must equal the kept rows' target-tokenizer
ids plus EOS, none lost, none doubled. Importing megatron-core takes ~15 s on this machine, once per module.
"""

from __future__ import annotations

import gzip
import json
import shutil
import types
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from tests.pipeline.conftest import compose

FORMATS = "output.token_formats=[megatron,nanotron,numpy]"
OVERRIDES = ("teacher=dummy", "++filters.lm=null", "n=40", "output.rows_per_shard=8",
             "output.validation_fraction=0.25", FORMATS)  # fmt: skip


def _kept(out: Path) -> dict[str, list[dict]]:
    """Kept rows per shard name (id order inside a shard, as the writer sorts them)."""
    return {p.stem: pq.read_table(p).to_pylist() for p in sorted((out / "data").glob("*.parquet"))}


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    from filters.tokenizers import load_target_tokenizer
    from pipeline.run import run as litho_run

    out = tmp_path_factory.mktemp("tokfiles") / "run"
    manifest = litho_run(compose(*OVERRIDES, f"output.dir={out}"))
    tok = load_target_tokenizer("embedded:smollm2")
    eos = manifest["tokenized"]["eos_id"]
    expected = {
        name: [list(ids) + [eos] for ids in tok.encode([r["text"] for r in rows])]
        for name, rows in _kept(out).items()
    }
    assert sum(len(d) for d in expected.values()) == manifest["counts"]["kept"] > 20
    return out, manifest, expected


@pytest.fixture(scope="module")
def megatron():
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
    from megatron.core.datasets import indexed_dataset

    return indexed_dataset


@pytest.mark.slow
def test_megatron_core_opens_every_prefix_with_the_kept_rows_ids(run, megatron):
    out, manifest, expected = run
    section = manifest["tokenized"]
    assert section["dtype"]["megatron"] == "uint16" and len(expected) == len(section["shards"]) > 3
    for name, docs in expected.items():
        ds = megatron.IndexedDataset(str(out / "tokenized" / "megatron" / name))
        assert ds.index.dtype == np.uint16 and len(ds) == len(docs)
        assert [ds[i].tolist() for i in range(len(ds))] == docs  # in order: none lost, none doubled
        assert ds.document_indices.tolist() == list(range(len(docs) + 1))
    splits = section["splits"]
    assert sum(s["documents"] for s in splits.values()) == manifest["counts"]["kept"]
    assert splits["train"]["tokens"] == sum(
        len(d) for n, docs in expected.items() if n.startswith("train") for d in docs
    )


@pytest.mark.slow
def test_gpt_dataset_builds_fixed_length_samples_from_the_written_blend(run, megatron, tmp_path):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    out, manifest, expected = run
    blend = json.loads((out / "tokenized" / "megatron" / "blend.json").read_text())
    assert (
        blend["test"] is None
        and (out / "tokenized" / "megatron" / "data-args.txt").read_text().split() == blend["train"]
    )
    # GPTDataset caches its indices beside the prefixes: it reads a copy, so the run's folder stays as written.
    copy = shutil.copytree(out / "tokenized" / "megatron", tmp_path / "megatron")
    blend = json.loads(json.dumps(blend).replace(str(out / "tokenized" / "megatron"), str(copy)))
    per_split = [
        (v[1::2], [float(w) for w in v[::2]]) if v else None
        for v in (blend["train"], blend["valid"], blend["test"])
    ]
    tokenizer = types.SimpleNamespace(eod=manifest["tokenized"]["eos_id"], vocab_size=manifest["tokenized"]["vocab_size"],
                                      unique_identifiers={"class": "litho-test"})  # fmt: skip
    config = GPTDatasetConfig(random_seed=1, sequence_length=32, blend_per_split=per_split, tokenizer=tokenizer,
                              reset_position_ids=True, reset_attention_mask=False, eod_mask_loss=False,
                              path_to_cache=None)  # fmt: skip
    train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, [16, 4, None], lambda: True, config).build()
    stream = {t for docs in expected.values() for d in docs for t in d}
    for dataset in (train, valid):
        for i in range(4):
            sample = dataset[i]
            assert sample["tokens"].shape == (32,) and sample["labels"].shape == (32,)
            assert set(sample["tokens"].tolist()) <= stream and sample["loss_mask"].sum() > 0


@pytest.mark.slow
def test_datatrove_reads_the_nanotron_files_back_as_the_same_documents(run):
    from datatrove.utils.dataset import DatatroveFileDataset, DatatroveFolderDataset

    out, manifest, expected = run
    for name, docs in expected.items():
        path = out / "tokenized" / "nanotron" / name.split("-")[0] / f"{name}.ds"
        tokens = sum(len(d) for d in docs)
        # One window of the whole file: its ids, and positions datatrove derives from the .index file.
        item = DatatroveFileDataset(str(path), seq_len=tokens - 1, token_size=2, return_positions=True)[0]
        ids, positions = item["input_ids"].numpy(), item["positions"].numpy()
        starts = np.flatnonzero(positions == 0)
        assert [d.tolist() for d in np.split(ids, starts[1:])] == docs
        meta = path.with_name(path.name + ".metadata").read_text().splitlines()
        assert meta[:2] == ["embedded:smollm2|2", str(tokens)]
    folder = DatatroveFolderDataset(str(out / "tokenized" / "nanotron" / "train"), seq_len=16, filename_pattern="*.ds",
                                    token_size=2)  # fmt: skip
    assert len(folder) == sum(
        sum(len(d) for d in docs) // 17 for n, docs in expected.items() if n.startswith("train")
    )


@pytest.mark.slow
def test_numpy_memmap_with_olmo_boundaries_gives_the_same_documents(run):
    out, _, expected = run
    for name, docs in expected.items():
        ids = np.memmap(out / "tokenized" / "numpy" / f"{name}.npy", dtype=np.uint16, mode="r")
        with gzip.open(out / "tokenized" / "numpy" / f"{name}.csv.gz", "rt") as f:
            bounds = [tuple(int(x) for x in line.split(",")) for line in f]
        assert [ids[s:e].tolist() for s, e in bounds] == docs and bounds[-1][1] == len(ids)


@pytest.mark.slow
def test_manifest_card_and_a_rerun_that_changes_nothing(run):
    from pipeline.run import run as litho_run

    out, manifest, _ = run
    section = manifest["tokenized"]
    listed = {f for s in section["shards"] for f in s["files"]} | set(section["blend"])
    on_disk = {str(p.relative_to(out / "tokenized")) for p in (out / "tokenized").rglob("*") if p.is_file()}
    assert (
        listed == on_disk
        and section["tokenizer"] == "embedded:smollm2"
        and section["written"] == len(section["shards"])
    )
    card = (out / "README.md").read_text()
    assert "token files in `tokenized/`: `megatron` (uint16), `nanotron` (uint16), `numpy` (uint16)" in card
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "tokenized").rglob("*") if p.is_file()}
    again = litho_run(compose(*OVERRIDES, f"output.dir={out}"))["tokenized"]
    assert again["unchanged"] and again["written"] == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_bad_token_settings_are_one_line_errors_before_ray(tmp_path, monkeypatch):
    from pipeline.job import Job

    with pytest.raises(
        ConfigError, match=r"output.token_formats=\['megatron', 'arrow'\]: unknown format 'arrow'"
    ):
        Job.from_config(
            compose("teacher=dummy", "output.token_formats=[megatron,arrow]", f"output.dir={tmp_path}")
        )
    # A tokenizer without an EOS token: a tokenizer.json with no tokenizer_config.json beside it.
    from tests.helpers.random_models import chat_tokenizer

    (tmp_path / "tok").mkdir()
    chat_tokenizer().backend_tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    spec = f"filters.tokenizer={tmp_path / 'tok' / 'tokenizer.json'}"
    cfg = compose("teacher=dummy", "output.token_formats=[numpy]", spec, f"output.dir={tmp_path / 'o'}")
    with pytest.raises(ConfigError, match="output.append_eos=true: .* has no end-of-sequence token"):
        Job.from_config(cfg)
    Job.from_config(compose("teacher=dummy", "output.token_formats=[numpy]", "output.append_eos=false", spec,
                            f"output.dir={tmp_path / 'o'}"))  # fmt: skip
    # A vocabulary beyond int32 (no real tokenizer has one: its size is faked).
    import filters.tokenizers

    huge = types.SimpleNamespace(
        is_byte_fallback=type("Ids", (), {"__len__": lambda self: 2**31 + 1})(), eos_id=0
    )
    monkeypatch.setattr(filters.tokenizers, "load_target_tokenizer", lambda *a, **k: huge)
    with pytest.raises(ConfigError, match="vocabulary of 2,147,483,649 ids does not fit int32"):
        Job.from_config(compose("teacher=dummy", "output.token_formats=[megatron]", f"output.dir={tmp_path}"))


@pytest.mark.slow
def test_export_retokenizes_a_run_and_a_corpus_for_another_student(run, megatron, real_texts, tmp_path):
    """``litho export``: the run's kept rows for another tokenizer, and a Parquet corpus, as token files."""
    import pyarrow as pa

    from pipeline.export import export
    from tests.helpers.random_models import chat_tokenizer

    out, manifest, expected = run
    student = chat_tokenizer()
    student.save_pretrained(tmp_path / "student")
    eos = student.eos_token_id
    cfg = compose(f"input={out}", "output.token_formats=[numpy]", f"filters.tokenizer={tmp_path / 'student'}",
                  f"output.dir={tmp_path / 'export'}", config_name="export")  # fmt: skip
    section = export(cfg)
    assert section["tokenizer"] == str(tmp_path / "student") and section["dtype"]["numpy"] == "uint16"
    for name, rows in _kept(out).items():
        ids = np.memmap(
            tmp_path / "export" / "tokenized" / "numpy" / f"{name}.npy", dtype=np.uint16, mode="r"
        )
        with gzip.open(tmp_path / "export" / "tokenized" / "numpy" / f"{name}.csv.gz", "rt") as f:
            bounds = [tuple(int(x) for x in line.split(",")) for line in f]
        want = [student(r["text"], add_special_tokens=False)["input_ids"] + [eos] for r in rows]
        assert [ids[s:e].tolist() for s, e in bounds] == want
    (tmp_path / "corpus").mkdir()
    texts = [" ".join(t.split()[:60]) for t in real_texts[:6]]
    for i in range(2):
        pq.write_table(
            pa.table({"body": texts[i * 3 : i * 3 + 3]}), tmp_path / "corpus" / f"part-{i}.parquet"
        )
    cfg = compose(f"input={tmp_path / 'corpus'}", "text_column=body", f"output.dir={tmp_path / 'c'}",
                  config_name="export")  # fmt: skip
    section = export(cfg)
    from filters.tokenizers import load_target_tokenizer

    tok = load_target_tokenizer("embedded:smollm2")
    got = [megatron.IndexedDataset(str(tmp_path / "c" / "tokenized" / "megatron" / f"train-{i:05d}-of-00002"))
           for i in range(2)]  # fmt: skip
    assert [d[j].tolist() for d in got for j in range(len(d))] == [
        ids + [section["eos_id"]] for ids in tok.encode(texts)
    ]


# The ChatML template of tests/helpers/random_models.py with assistant text marked for transformers.
MARKED = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{{ m['content'] }}<|im_end|>\n{% endgeneration %}{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_assistant_mask_equals_transformers_on_a_template_that_marks_it():
    """litho renders prefixes (any template); transformers needs {% generation %} markers: same ids, same mask."""
    from pipeline.output.sft_tokens import assistant_ids
    from tests.helpers.random_models import chat_tokenizer

    plain, marked = chat_tokenizer(), chat_tokenizer()
    marked.chat_template = MARKED
    conversations = [
        [{"role": "user", "content": "Why do rivers bend?"}, {"role": "assistant", "content": "Water erodes the outer bank."}],
        [{"role": "user", "content": "cats"}, {"role": "assistant", "content": "small things"},
         {"role": "user", "content": "and rain?"}, {"role": "assistant", "content": "The quick brown fox."}],
    ]  # fmt: skip
    for messages in conversations:
        ids, mask = assistant_ids(plain, messages)
        ref = marked.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert (
            ids == list(ref["input_ids"])
            and mask == list(ref["assistant_masks"])
            and 0 < sum(mask) < len(mask)
        )


@pytest.mark.slow
def test_sft_token_files_hold_chat_template_ids_and_an_assistant_loss_mask(ray_session, megatron, tmp_path):
    from datatrove.utils.dataset import DatatroveFileDataset

    from generators.teachers.models import load_tokenizer
    from pipeline.output.sft_tokens import assistant_ids
    from pipeline.run import run as litho_run

    out = tmp_path / "sft"
    manifest = litho_run(compose("teacher=dummy", "++filters.lm=null", "n=6", "generator=instruct", "output=sft",
                                 "filters.min_words=5", "filters.rule_sets=[]", FORMATS, f"output.dir={out}"))  # fmt: skip
    tok = load_tokenizer("embedded:smollm2")
    eos = manifest["tokenized"]["eos_id"]
    for name, rows in _kept(out).items():
        want = [assistant_ids(tok, r["messages"]) for r in rows]
        ids = megatron.IndexedDataset(str(out / "tokenized" / "megatron" / name))
        masks = megatron.IndexedDataset(str(out / "tokenized" / "megatron" / f"{name}-loss_mask"))
        assert [ids[i].tolist() for i in range(len(ids))] == [w + [eos] for w, _ in want]
        assert [masks[i].tolist() for i in range(len(masks))] == [m + [1] for _, m in want]
        flat_mask = np.concatenate([m + [1] for _, m in want]).astype(bool)
        ds = out / "tokenized" / "nanotron" / "train" / f"{name}.ds"
        assert np.array_equal(np.fromfile(ds.with_name(ds.name + ".loss"), np.bool_), flat_mask)
        assert np.array_equal(
            np.fromfile(out / "tokenized" / "numpy" / f"{name}.mask.npy", np.bool_), flat_mask
        )
        window = DatatroveFileDataset(str(ds), seq_len=len(flat_mask) - 1, token_size=2)[0][
            "input_ids"
        ].tolist()
        assert window == [t for w, _ in want for t in w + [eos]]
        for (w, m), row in zip(want, rows):  # what the mask keeps is the assistant's turns, markers and all
            kept = tok.decode([t for t, keep in zip(w, m) if keep])
            assert kept == "".join(
                t["content"] + "<|im_end|>\n" for t in row["messages"] if t["role"] == "assistant"
            )
