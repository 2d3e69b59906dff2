"""Config validation: typos and wrong types name the key, the file and the allowed values."""

from __future__ import annotations

import pytest
import yaml

from seglab.config import load_config
from seglab.errors import SeglabError


def _write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_valid_config_resolves_relative_root(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = load_config(_write(tmp_path, "data: {format: folder, root: data, classes: [a, b]}\n"))
    assert cfg.data.root == (tmp_path / "data").resolve()
    assert cfg.model.name == "unet" and cfg.train.precision == "auto"


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    p = _write(tmp_path, "data: {format: folder, root: .}\ntrain: {epocs: 3}\n")
    with pytest.raises(SeglabError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.epocs" in msg and str(p) in msg and "epochs" in msg and "\n" not in msg


def test_wrong_type_and_literal(tmp_path):
    p = _write(tmp_path, "data: {format: folder, root: .}\ntrain: {batch_size: many}\n")
    with pytest.raises(SeglabError, match=r"train\.batch_size"):
        load_config(p)
    p = _write(tmp_path, "data: {format: voc2012, root: .}\n")
    with pytest.raises(SeglabError, match=r"data\.format.*folder.*camvid.*isbi2012"):
        load_config(p)


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(SeglabError, match=r"'data' is required"):
        load_config(_write(tmp_path, "name: x\n"))
    with pytest.raises(SeglabError, match=r"not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(SeglabError, match=r"not found"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_are_typed_and_validated(tmp_path):
    p = _write(tmp_path, yaml.safe_dump({"data": {"format": "folder", "root": "."}}))
    cfg = load_config(p, ["train.epochs=7", "augment.crop=[64, 96]", "loss.name=ce+dice"])
    assert cfg.train.epochs == 7 and cfg.augment.crop == (64, 96) and cfg.loss.name == "ce+dice"
    with pytest.raises(SeglabError, match=r"train\.epochz"):
        load_config(p, ["train.epochz=7"])
    with pytest.raises(SeglabError, match=r"key=value"):
        load_config(p, ["train.epochs"])
    # a value that is not YAML names the key and shows the form
    with pytest.raises(SeglabError, match=r"--set augment\.crop: '\[256,256' is not a valid"):
        load_config(p, ["augment.crop=[256,256"])
    # an optional section set to null in the file can still be set from the command line
    q = _write(tmp_path, "data: {format: folder, root: .}\ndistill: null\n")
    assert load_config(q).distill is None
    assert str(load_config(q, ["distill.teacher=runs/big"]).distill.teacher) == "runs/big"


@pytest.mark.parametrize(
    "name",
    ["camvid.yaml", "camvid-fcn.yaml", "camvid-realtime.yaml", "isbi2012.yaml", "dsb2018.yaml"],
)
def test_shipped_configs_validate(name):
    from conftest import ROOT

    cfg = load_config(ROOT / "configs" / name)
    assert cfg.data.root.name in ("camvid", "isbi2012", "dsb2018")


def test_readme_config_reference_lists_every_key():
    """The README's config reference is a valid config and names every key of every section."""
    import re
    import typing

    from conftest import ROOT

    from seglab.config import Config

    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Config reference.*?```yaml\n(.*?)```", text, re.S).group(1)
    raw = yaml.safe_load(block)
    Config.model_validate(raw)  # every key in the reference exists, with a valid value

    def keys(model, prefix=""):
        out = set()
        for name, field in model.model_fields.items():
            out.add(prefix + name)
            ann = field.annotation
            for arg in typing.get_args(ann):  # Optional[Section]
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    ann = arg
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                out |= keys(ann, f"{prefix}{name}.")
        return out

    def present(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("splits", "options"):
                out |= present(v, f"{prefix}{k}.")
        return out

    assert keys(Config) == present(raw)
