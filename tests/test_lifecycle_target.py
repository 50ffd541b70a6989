"""Issue 9: the target version. `--to N`, else the node program's own ocore (the VERSION constant of its
sqlite_migrations.js), else 50 with a warning; refusals before anything is copied; verify checks that the
node's ocore accepts the target; the versions and the tool's version in state.json, results and reports.

Node programs are real dirs: `<home>/<app>/package.json` naming the data dir `<home>/.config/<app>`, with
`node_modules/ocore/{package.json,sqlite_migrations.js}`."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from bluegreen.errors import BluegreenError, PreflightError
from bluegreen.lifecycle import command
from bluegreen.lifecycle import plan as planmod
from bluegreen.lifecycle.state import Phase, StateStore
from bluegreen.nodecompat import find_node_app, parse_schema_version
from bluegreen.version import tool_version
from conftest import DEVNET_V29, DEVNET_V31, writable_copy
from test_lifecycle_support import cli_json, make_node, run_cli, tree_hash

APP = "headless-obyte"

# The opening lines of ocore's sqlite_migrations.js at real commits (github.com/byteball/ocore), each with
# the VERSION it declares: the constant moved down as requires were added, its form never changed.
OCORE_HEADS = {
    "55d7f51 (2017-03-22)": ('/*jslint node: true */\n"use strict";\n\nvar VERSION = 3;\n\n'
                             "var async = require('async');\n", 3),
    "37c44fb (2017-11-08)": ('/*jslint node: true */\n"use strict";\nvar eventBus = require(\'./event_bus.js\');\n\n'
                             "var VERSION = 14;\n\nvar async = require('async');\n", 14),
    "9cca91b (2018-03-19)": ('/*jslint node: true */\n"use strict";\nvar eventBus = require(\'./event_bus.js\');\n'
                             'var constants = require("./constants.js");\n\nvar VERSION = 18;\n', 18),
    "3c99940 (2019-05-31)": ('/*jslint node: true */\n"use strict";\nvar eventBus = require(\'./event_bus.js\');\n'
                             'var constants = require("./constants.js");\nvar conf = require("./conf.js");\n\n'
                             "var VERSION = 29;\n\nvar async = require('async');\n", 29),
    "ca0c60c": ('"use strict";\nvar conf = require("./conf.js");\n\nvar VERSION = 46;\n\n'
                'console.log("db version "+version+", software version "+VERSION);\n'
                "if (version > VERSION)\n", 46),
    "6334eb6 (ocore 0.4.6)": ('"use strict";\nvar conf = require("./conf.js");\n\nvar VERSION = 50;\n', 50),
}


@pytest.mark.parametrize("commit", sorted(OCORE_HEADS))
def test_version_parsed_from_real_ocore_heads(commit: str) -> None:
    text, version = OCORE_HEADS[commit]
    assert parse_schema_version(text) == version


@pytest.mark.parametrize("text, version", [
    ("let VERSION=47\n", 47),
    ("\tconst VERSION = 48; // bumped\n", 48),
    ("// var VERSION = 3;\nvar VERSION = 49;\n", 49),
    ("/* var VERSION = 3;\n*/\nvar VERSION = 49;\n", 49),
    ("var VERSION = 40;\nvar VERSION = 41;\n", None),  # ambiguous: refuse to guess
    ("var SOME_VERSION = 40;\nexports.VERSION = 41;\n", None),
    ("", None),
])
def test_version_parse_edge_cases(text: str, version: int | None) -> None:
    assert parse_schema_version(text) == version


def make_app(home: Path, schema_version: int | None, *, libs: Path | None = None, text: str | None = None) -> Path:
    """A node program dir for `<home>/.config/APP`; `libs`: a node_modules whose entries are linked in."""
    app = home / APP
    nm = app / "node_modules"
    ocore = nm / "ocore"
    ocore.mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"name": APP, "version": "1.0.0"}))
    (ocore / "package.json").write_text(json.dumps({"name": "ocore", "version": "0.4.x-test"}))
    body = text if text is not None else (f'"use strict";\nvar conf = require("./conf.js");\n\n'
                                          f"var VERSION = {schema_version};\n")
    (ocore / "sqlite_migrations.js").write_text(body)
    if libs is not None:
        for entry in libs.iterdir():
            if entry.name != "ocore":
                (nm / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return app


def make_data(home: Path, fixture: Path = DEVNET_V29) -> Path:
    data = writable_copy(fixture, home / ".config" / APP)
    (data / "expected-kv.jsonl").unlink(missing_ok=True)
    return data


def test_default_target_is_the_node_apps_ocore_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_app(home, 46)
    data = make_data(home)
    app = find_node_app(data)
    assert app is not None and app.ocore is not None and app.ocore.schema_version == 46
    res = command.stage(data)
    assert (res.source_version, res.target_version) == (29, 46)
    assert res.target_origin and "VERSION 46" in res.target_origin and "0.4.x-test" in res.target_origin
    state = StateStore(res.staging_dir).load()
    assert state is not None and (state.source_version, state.target_version) == (29, 46)
    assert state.tool_version == tool_version() and "VERSION 46" in (state.target_origin or "")
    v = command.verify(data)
    [oc] = [c for c in v.report.checks if c.name == command.CHECK_NODE_OCORE]  # type: ignore[union-attr]
    assert oc.passed and v.passed, [c for c in v.report.checks if not c.passed]  # type: ignore[union-attr]
    assert (v.source_version, v.target_version) == (29, 46)
    assert v.report is not None and (v.report.source_version, v.report.target_version) == (29, 46)
    saved = json.loads(Path(v.report_path).read_text())  # type: ignore[arg-type]
    assert (saved["source_version"], saved["target_version"], saved["tool_version"]) == (29, 46, tool_version())
    st = command.status(data)
    assert (st.source_version, st.target_version, st.state_tool_version) == (29, 46, tool_version())
    assert "VERSION 46" in (st.target_origin or "")
    out = run_cli("status", "--data-dir", str(data), check=True).stdout
    assert "source 29 -> target 46" in out and "target from: the node's ocore" in out and "tool:" in out
    p = command.promote(data)
    assert (p.source_version, p.target_version) == (29, 46)
    assert command.status(data).data_dir_version == 46


def test_no_node_app_means_50_with_a_warning(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    res = command.stage(node)
    assert (res.source_version, res.target_version) == (29, 50)
    assert any("the highest bluegreen knows" in w for w in res.warnings), res.warnings
    assert "highest known" in (res.target_origin or "")


def test_explicit_to_above_the_nodes_ocore_fails_verify_without_node(tmp_path: Path) -> None:
    """The ocore check needs no Node.js: it reads the node's sqlite_migrations.js."""
    home = tmp_path / "home"
    make_app(home, 45)
    data = make_data(home)
    res = command.stage(data, target_version=50)
    assert res.target_version == 50 and res.target_origin == "--to"
    assert any("refuses a database at version 50" in w for w in res.warnings), res.warnings
    v = command.verify(data)
    [oc] = [c for c in v.report.checks if c.name == command.CHECK_NODE_OCORE]  # type: ignore[union-attr]
    assert not oc.passed and not v.passed
    assert "refuses a database at version 50" in oc.first_failures[0] and "up to 45" in oc.first_failures[0]
    with pytest.raises(BluegreenError):
        command.promote(data)


@pytest.mark.node
def test_probe_with_the_node_apps_own_modules_fails_on_an_older_ocore(tmp_path: Path, node_modules: Path) -> None:
    home = tmp_path / "home"
    make_app(home, 45, libs=node_modules)
    data = make_data(home)
    command.stage(data, target_version=50)
    v = command.verify(data)
    checks = {c.name: c for c in v.report.checks}  # type: ignore[union-attr]
    assert checks[command.CHECK_NODE_COMPAT].passed, checks[command.CHECK_NODE_COMPAT]  # the libraries read it
    assert not checks[command.CHECK_NODE_OCORE].passed and not v.passed  # but this ocore would refuse it
    assert any("probing green with the node's own libraries" in w for w in v.warnings)


def test_node_ocore_newer_than_we_know_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_app(home, 51)
    data = make_data(home)
    blue = tree_hash(data)
    with pytest.raises(PreflightError, match="expects schema version 51.*newer than this bluegreen knows") as e:
        command.stage(data)
    assert "--to" in (e.value.hint or "")
    assert not data.with_name(data.name + ".bluegreen").exists() and tree_hash(data) == blue
    p = planmod.plan(data)  # plan says so too, without writing
    assert any("stage would refuse" in w for w in p.warnings) and p.steps == []
    # An explicit target the node can migrate up from is accepted (ocore runs 50 -> 51 itself).
    assert command.stage(data, target_version=50).target_version == 50


@pytest.mark.parametrize("version, text, match", [
    (29, None, "older than the first version bluegreen produces"),
    (None, "var VERSION = 40;\nvar VERSION = 41;\n", "cannot tell which schema version"),
])
def test_unusable_node_ocore_is_refused(tmp_path: Path, version: int | None, text: str | None, match: str) -> None:
    home = tmp_path / "home"
    make_app(home, version, text=text)
    data = make_data(home)
    with pytest.raises(PreflightError, match=match):
        command.stage(data)
    assert not data.with_name(data.name + ".bluegreen").exists()


def test_target_below_the_source_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    node = writable_copy(DEVNET_V31, tmp_path / "node")
    conn = apsw.Connection(str(node / "byteball.sqlite"))
    conn.execute("PRAGMA user_version=45")
    conn.close()
    blue = tree_hash(node)
    with pytest.raises(PreflightError, match="at version 45, above the target 40.*cannot be downgraded"):
        command.stage(node, target_version=40)
    with pytest.raises(PreflightError, match="not supported"):
        command.stage(node, target_version=30)
    with pytest.raises(PreflightError, match="no ocore release declares schema version 37") as e:
        command.stage(node, target_version=37)  # ocore's VERSION went 36 -> 38
    assert "--to 38" in (e.value.hint or "")
    assert not node.with_name(node.name + ".bluegreen").exists() and tree_hash(node) == blue


def test_a_different_explicit_target_on_a_staged_green_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    command.stage(node, target_version=31)
    assert command.stage(node).noop  # without --to: the staged target
    with pytest.raises(PreflightError, match="already staged for version 31") as e:
        command.stage(node, target_version=50)
    assert "upgrade abort" in (e.value.hint or "")


def test_cli_to_and_its_hidden_old_name(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    help_text = run_cli("stage", "--help", check=True).stdout
    assert "--to" in help_text and "--target-version" not in help_text
    for flag in ("--to", "--target-version"):
        rc, doc = cli_json("plan", "--data-dir", str(node), flag, "34")
        assert rc == 0 and doc["target_version"] == 34 and doc["target_origin"] == "--to", doc
        assert [s["version"] for s in doc["steps"]] == [30, 31, 32, 33, 34]
    rc, doc = cli_json("plan", "--data-dir", str(node), "--to", "34", "--target-version", "35")
    assert rc == 2 and doc["error"] == "UsageError"
    rc, doc = cli_json("stage", "--data-dir", str(node), "--to", "51")
    assert rc == 3 and "not supported" in doc["message"] and "--to" in doc["hint"]
    out = run_cli("plan", "--data-dir", str(node), check=True).stdout
    assert "target 50" in out and "target from: highest known" in out
    rc, doc = cli_json("stage", "--data-dir", str(node), "--to", "31")
    assert rc == 0 and doc["target_version"] == 31 and doc["phase"] == Phase.MIGRATED.value
