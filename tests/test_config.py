from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tumorscope.config import Config, ConfigError, config_from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["tiny", "demo", "staged", "demo-petct", "brain-mri", "petct"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.in_channels == len(cfg.data.channels)
    first = [s.name for s in cfg.stages][:2]
    # The demo trains on one schedule; the staged curriculum stays a config.
    assert first == (["joint", "surv_head"] if name == "demo" else ["seg_warmup", "cls_head"])


def test_demo_is_one_channel_flair() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.data.channels == ("flair",)
    assert cfg.model.in_channels == 1


def test_mistyped_key_names_key_and_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  base_chanels: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert "model.base_chanels" in str(e.value)
    assert "base_channels" in str(e.value)  # suggestion


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("data:\n  image_size: big\n", "data.image_size"),
        ("data:\n  image_size: 4\n", "data.image_size"),
        ("model:\n  norm: batch\n", "model.norm"),
        ("runtime:\n  deterministic: 3\n", "runtime.deterministic"),
        ("stages:\n  - {name: a, tasks: [segmentaton]}\n", "stages[0].tasks"),
        ("stages:\n  - {name: a, tasks: [tumour], freeze: [encodr]}\n", "stages[0].freeze"),
        ("stages:\n  - {tasks: [tumour]}\n", "name"),
        ("data:\n  fold: 7\n  n_folds: 5\n", "data.fold"),
        ("model:\n  in_channels: 2\n", "model.in_channels"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(p)


def test_overrides_apply_and_are_validated() -> None:
    cfg = load_config(
        CONFIGS / "staged.yaml", ["data.fold=3", "stages.joint.max_steps=7", "stages.0.lr=0.5"]
    )
    assert cfg.data.fold == 3
    assert cfg.stages[2].max_steps == 7
    assert cfg.stages[0].lr == 0.5
    with pytest.raises(ConfigError, match=r"stages\.nope"):
        load_config(CONFIGS / "demo.yaml", ["stages.nope.lr=1"])
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        load_config(CONFIGS / "demo.yaml", ["data.image_size=x"])


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    save_config(cfg, tmp_path / "resolved.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text()))
    assert again == cfg
    assert isinstance(again, Config)
    assert isinstance(again.data.channels, tuple)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == Config()


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "x.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


# --- safe YAML -----------------------------------------------------------------------


def _write(tmp_path: Path, body: str | bytes) -> Path:
    p = tmp_path / "c.yaml"
    if isinstance(body, bytes):
        p.write_bytes(body)
    else:
        p.write_text(body)
    return p


def test_billion_laughs_fails_fast_naming_the_file(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    p = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases") as e:
        load_config(p)
    assert str(p) in str(e.value) and len(str(e.value)) < 500


def test_aliases_may_not_expand_past_the_value_budget(tmp_path: Path) -> None:
    # 60 aliases only, but 120 000 values once expanded
    lines = ["a: &a [" + ",".join(["x"] * 2000) + "]"]
    lines += ["b: &b [" + ",".join(["*a"] * 60) + "]"]
    with pytest.raises(ConfigError, match="values once aliases are expanded"):
        load_config(_write(tmp_path, "\n".join(lines) + "\n"))


def test_a_few_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    body = (
        "stages:\n"
        "  - &base {name: seg_warmup, tasks: [segmentation], lr: 0.002, max_steps: 7}\n"
        "  - {<<: *base, name: cls_head, tasks: [tumour]}\n"
    )
    cfg = load_config(_write(tmp_path, body))
    assert [s.name for s in cfg.stages] == ["seg_warmup", "cls_head"]
    assert cfg.stages[1].lr == 0.002 and cfg.stages[1].tasks == ("tumour",)


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ("data:\n  image_size: 32\n  image_size: 64\n", "duplicate key 'image_size'"),
        ("{a: 1, a: 2}\n", "duplicate key 'a'"),
        ("a: &a [*a]\n", "refers to a section that holds it"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than"),
        ("data: !!python/object/apply:os.system ['true']\n", "is not allowed"),
        ("data: !!python/name:os.system\n", "is not allowed"),
        ("data: !custom x\n", "is not allowed"),
        ("seed: " + "9" * 5000 + "\n", "digits"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: \x1b[31m\n", "unacceptable character"),
    ],
)
def test_unsafe_yaml_is_refused_in_one_line(tmp_path: Path, body: str, fault: str) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=re.escape(fault)) as e:
        load_config(p)
    message = str(e.value)
    assert message.startswith(f"{p}: not valid YAML") and "\n" not in message


def test_a_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"first on line 2\) \(line 4"):
        load_config(_write(tmp_path, "data:\n  fold: 1\n  n_folds: 5\n  fold: 2\n"))


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("data: {channels: [donn\xe9es]}\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
        (b"# " + b"x" * (2 << 20), "a config file is at most 1048576 bytes"),
    ],
)
def test_files_that_are_not_small_utf8_text_are_refused(
    tmp_path: Path, body: bytes, fault: str
) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=re.escape(fault)) as e:
        load_config(p)
    assert str(p) in str(e.value)


def test_a_folder_or_device_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config("/dev/zero")


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "\ufeffdata:\n  fold: 1\n".encode())).data.fold == 1


def test_bad_yaml_in_set_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--set data\.channels: not valid YAML"):
        load_config(CONFIGS / "tiny.yaml", ["data.channels=[flair"])
    with pytest.raises(ConfigError, match="is not allowed"):
        load_config(CONFIGS / "tiny.yaml", ["data.channels=!!python/name:os.system"])


def test_error_messages_are_clipped_and_one_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "data:\n  channels: [" + ",".join(["x" * 50] * 5000) + "]\n  fold: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["profile=" + "y" * 100_000])
    assert len(str(e.value)) < 1100 and "\n" not in str(e.value)
    assert str(ConfigError("a\nb")) == "a b"


# --- bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("stages:\n  - {name: a, tasks: [tumour], lr: .inf}\n", "stages[0].lr"),
        ("stages:\n  - {name: a, tasks: [tumour], lr: .nan}\n", "stages[0].lr"),
        ("stages:\n  - {name: a, tasks: [tumour], lr: 100}\n", "stages[0].lr"),
        ("stages:\n  - {name: a, tasks: [tumour], lr_encoder: -.inf}\n", "stages[0].lr_encoder"),
        ("stages:\n  - {name: a, tasks: [tumour], weight_decay: 1e3}\n", "stages[0]"),
        ("stages:\n  - {name: a, tasks: [tumour], batch_size: 1000000000}\n", "batch_size"),
        ("stages:\n  - {name: a, tasks: [tumour], batch_size: 1.0e+9}\n", "batch_size"),
        ("stages:\n  - {name: a, tasks: [tumour], batch_size: 1e9}\n", "batch_size"),
        ("stages:\n  - {name: a, tasks: [tumour], max_steps: 100000000}\n", "max_steps"),
        ("stages:\n  - {name: a, tasks: [tumour], grad_clip: .inf}\n", "grad_clip"),
        ("stages:\n  - {name: ../../x, tasks: [tumour]}\n", "stages[0].name"),
        ("stages:\n  - {name: /etc, tasks: [tumour]}\n", "stages[0].name"),
        ("stages:\n  - {name: .hidden, tasks: [tumour]}\n", "stages[0].name"),
        (f"runtime:\n  seed: {2**64}\n", "runtime.seed"),
        (f"runtime:\n  seed: {2**32}\n", "runtime.seed"),
        ("runtime:\n  seed: -1\n", "runtime.seed"),
        ("runtime:\n  threads: 5000\n", "runtime.threads"),
        ("runtime:\n  num_workers: 100000\n", "runtime.num_workers"),
        ("data:\n  slices_per_patient: 1000000000\n", "data.slices_per_patient"),
        ("data:\n  image_size: 100000\n", "data.image_size"),
        ("data:\n  bag_patients: 64\n  bag_slices: 64\n", "data.bag_patients"),
        ("data:\n  max_voxels: 100000000000\n", "data.max_voxels"),
        ("data:\n  clip_percentiles: [.nan, 99]\n", "data.clip_percentiles"),
        ("data:\n  n_folds: 1000\n", "data.n_folds"),
        ("data:\n  channels: ['../t1']\n", "data.channels"),
        ("model:\n  base_channels: 128\n  depth: 6\n", "model.base_channels"),
        ("model:\n  survival_dim: 100000\n", "model.survival_dim"),
        ("model:\n  dropout: .nan\n", "model.dropout"),
        ("loss:\n  task_weights: {tumour: .inf}\n", "loss.task_weights.tumour"),
        ("loss:\n  focal_gamma: 1e3\n", "loss"),
        ("loss:\n  tumour_pos_weight: 1.0e+300\n", "loss.tumour_pos_weight"),
        ("calibration:\n  ece_bins: 100000000\n", "calibration.ece_bins"),
        ("calibration:\n  gate_threshold: .nan\n", "calibration.gate_threshold"),
        (f"calibration:\n  gate_threshold: {10**400}\n", "calibration.gate_threshold"),
    ],
)
def test_values_past_their_fixed_bounds_name_the_key_and_file(
    tmp_path: Path, text: str, key: str
) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(key)) as e:
        load_config(p)
    assert str(p) in str(e.value) and len(str(e.value)) < 1100


def test_values_at_their_bounds_pass() -> None:
    cfg = config_from_dict(
        {
            "data": {"image_size": 1024, "slices_per_patient": 4096, "bag_patients": 32},
            "model": {"base_channels": 64, "depth": 5},
            "stages": [
                {"name": "s-1.a_b", "tasks": ["tumour"], "batch_size": 1024, "max_steps": 10**7}
            ],
            "runtime": {"seed": 2**32 - 1, "threads": 1024},
        }
    )
    assert cfg.runtime.seed == 2**32 - 1 and cfg.stages[0].batch_size == 1024


def test_snapshot_steps_from_yaml_and_set_are_tuples(tmp_path: Path) -> None:
    p = _write(tmp_path, "runtime:\n  snapshot_steps: [3, 10]\n")
    assert load_config(p).runtime.snapshot_steps == (3, 10)
    cfg = load_config(p, ["runtime.snapshot_steps=[10,20]"])
    assert cfg.runtime.snapshot_steps == (10, 20)
    assert cfg.to_dict()["runtime"]["snapshot_steps"] == [10, 20]
    assert load_config(CONFIGS / "tiny.yaml").runtime.snapshot_steps == ()


@pytest.mark.parametrize(
    "value", ["[-1]", "[10, 10]", "[1.5]", "[true]", "5", f"{list(range(1, 102))}"]
)
def test_bad_snapshot_steps_name_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.snapshot_steps"):
        config_from_dict({}, [f"runtime.snapshot_steps={value}"])


def test_split_seed_defaults_to_none_and_is_range_checked() -> None:
    assert config_from_dict({}).data.split_seed is None
    assert config_from_dict({}, ["data.split_seed=4294967295"]).data.split_seed == 2**32 - 1
    for value in ("-1", "4294967296", "1.5"):
        with pytest.raises(ConfigError, match=r"data\.split_seed"):
            config_from_dict({}, [f"data.split_seed={value}"])
