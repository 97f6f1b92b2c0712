"""The plugin loads cleanly and every operator fiftyone.yml lists exists."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_listed_operator_exists_and_loading_left_no_errors(fo):
    import fiftyone.operators as foo
    import fiftyone.plugins as fop
    from fiftyone.plugins.context import PluginContext

    spec = yaml.safe_load((ROOT / "fiftyone.yml").read_text())
    assert spec["name"] == "@prefiqs/prefiqs"
    plugin = fop.get_plugin(spec["name"])
    ctx = PluginContext(plugin)
    ctx.register_all()
    assert ctx.errors == []  # FiftyOne only logs registration failures
    assert sorted(op.name for op in ctx.instances) == sorted(spec["operators"] + spec.get("panels", []))
    for name in spec["operators"]:
        assert foo.operator_exists(f"{spec['name']}/{name}"), name


def test_plugin_version_matches_the_package(plugin):
    import importlib

    spec = yaml.safe_load((ROOT / "fiftyone.yml").read_text())
    assert spec["version"] == importlib.import_module(plugin.__name__ + ".operators").__version__


def test_the_linked_hover_script_is_the_plugins_js_bundle(fo):
    """The App loads the plugin's JS bundle with a <script> tag: the one fiftyone.yml names, which
    registers the component the panel's layout asks for (its behaviour: test_fo_panel_browser.py)."""
    import fiftyone.plugins as fop

    plugin = fop.get_plugin("@prefiqs/prefiqs")
    assert plugin.has_js and plugin.js_bundle == "js/linked_hover.js"
    assert 'name: "PrefiqsLinkedHover"' in Path(plugin.js_bundle_path).read_text()
