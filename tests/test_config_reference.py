"""The config described from the schema: `docs/config.md` is current, and the JSON
Schema `kts schema` prints accepts every example config and rejects unknown keys."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from service.config import RunConfig, reference
from service.config.keys import yaml_fields
from tests.helpers import CONFIGS, REPO, heavy_imports, kts_probe

EXAMPLES = sorted(CONFIGS.glob("*.yaml")) + sorted(
    (REPO / "k8s" / "base" / "config").glob("*.yaml")
)


def test_docs_config_md_is_generated_from_the_schema():
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == reference.markdown(), (
        "docs/config.md is stale: run `kts schema --markdown > docs/config.md`"
    )


def _keys(model, prefix=""):
    for key, info in yaml_fields(model).items():
        yield f"{prefix}{key}", info
        inner = reference._section_of(info.annotation)
        if inner is not None:
            yield from _keys(inner[0], f"{prefix}{key}.")


def test_every_key_is_documented():
    keys = dict(_keys(RunConfig))
    assert len(keys) > 100
    undocumented = [k for k, info in keys.items() if not (info.description or "").strip()]
    assert undocumented == []
    markdown = reference.markdown()
    for key in keys:
        assert f"`{key}`" in markdown.replace(".<name>", ""), key


@pytest.fixture(scope="module")
def schema():
    result = kts_probe(["schema"])
    assert result.returncode == 0, result.stderr
    assert heavy_imports(result) == ""
    text = result.stdout.rstrip().rsplit("\n", 1)[0]  # the probe's HEAVY= line last
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_json_schema_accepts_every_example_config(schema, path):
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


@pytest.mark.parametrize(
    ("where", "key", "value", "needle"),
    [
        ((), "trainig", {}, "'trainig' was unexpected"),
        (("training",), "epoch", 3, "'epoch' was unexpected"),
        (("training", "early_stopping"), "mode", "max", "'mode' was unexpected"),
        (("training", "optimizer"), "name", "adamm", "'adamm' is not one of"),
        (("bless",), "direction", "maximize", "'maximize' is not one of"),
        (("model",), "type", "resnet9000", "'resnet9000' is not one of"),
        (("training",), "epochs", 0, "0 is less than the minimum of 1"),
    ],
)
def test_json_schema_rejects_unknown_keys_and_bad_values(schema, where, key, value, needle):
    data = yaml.safe_load((CONFIGS / "digits_cnn.yaml").read_text())
    node = data
    for part in where:
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(jsonschema.ValidationError, match=needle):
        jsonschema.validate(data, schema)


def test_json_schema_describes_keys_for_editors(schema):
    stopping = schema["$defs"]["EarlyStoppingConfig"]["properties"]
    assert stopping["direction"]["enum"] == ["auto", "max", "min"]
    assert "Keras" in stopping["direction"]["description"]
    assert schema["$schema"] == reference.SCHEMA_DIALECT
