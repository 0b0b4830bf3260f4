from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tumorscope.config import Config, ConfigError, config_from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["tiny", "demo", "demo-petct", "brain-mri", "petct"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.in_channels == len(cfg.data.channels)
    assert [s.name for s in cfg.stages][:2] == ["seg_warmup", "cls_head"]


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
        CONFIGS / "demo.yaml", ["data.fold=3", "stages.joint.max_steps=7", "stages.0.lr=0.5"]
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
