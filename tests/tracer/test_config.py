"""The content mode from configuration: ``$FLIGHTREC_CONTENT``, ``flightrec.toml``, and the argument that wins."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

import tracer
from tests.tracer.fakes import FakeAPI, run_agent


@pytest.fixture(autouse=True)
def _no_content_env(monkeypatch):
    monkeypatch.delenv("FLIGHTREC_CONTENT", raising=False)
    monkeypatch.delenv("FLIGHTREC_CONFIG", raising=False)


def test_the_default_is_full():
    assert tracer.Recorder(":memory:").content == "full"


def test_the_environment_sets_the_mode_and_the_store_records_it(monkeypatch):
    monkeypatch.setenv("FLIGHTREC_CONTENT", "none")
    rec = tracer.Recorder()
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()), "I'm bob@example.com")
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        (session,) = store.list_sessions()
        modes = store._query("SELECT DISTINCT content_mode FROM llm_calls")
        bodies = store._query("SELECT count(*) FROM content")
    assert rec.content == "none" and session.content_mode == "none"
    assert modes == [("none",)] and bodies == [(0,)]


def test_the_config_file_sets_the_mode(tmp_path):
    (tmp_path / "flightrec.toml").write_text('content = "redacted"\n')
    assert tracer.Recorder(":memory:").content == "redacted"


def test_flightrec_config_names_another_file(tmp_path, monkeypatch):
    path = tmp_path / "conf" / "prod.toml"
    path.parent.mkdir()
    path.write_text('content = "none"\n')
    monkeypatch.setenv("FLIGHTREC_CONFIG", str(path))
    assert tracer.Recorder(":memory:").content == "none"


def test_the_environment_wins_over_the_file_and_the_argument_over_both(tmp_path, monkeypatch):
    (tmp_path / "flightrec.toml").write_text('content = "none"\n')
    monkeypatch.setenv("FLIGHTREC_CONTENT", "redacted")
    assert tracer.Recorder(":memory:").content == "redacted"
    assert tracer.Recorder(":memory:", content="full").content == "full"


@pytest.mark.parametrize("setup, expected", [
    (lambda p, m: m.setenv("FLIGHTREC_CONTENT", "redact"), r"'redact' \(from \$FLIGHTREC_CONTENT\) is not one of "
                                                           r"full, redacted, none"),
    (lambda p, m: (p / "flightrec.toml").write_text('content = "everything"\n'),
     r"flightrec.toml: content: Input should be 'full', 'redacted' or 'none'.*settings are: content \(full, "
     r"redacted, none\)"),
    (lambda p, m: (p / "flightrec.toml").write_text('contnet = "none"\n'), r"flightrec.toml: contnet: unknown setting"),
    (lambda p, m: (p / "flightrec.toml").write_text('content = none\n'), r"flightrec.toml cannot be read as TOML"),
    (lambda p, m: m.setenv("FLIGHTREC_CONFIG", str(p / "missing.toml")), r"\$FLIGHTREC_CONFIG names .*missing.toml, "
                                                                         r"which is not a file"),
])
def test_a_bad_setting_names_where_it_came_from_and_the_allowed_values(setup, expected, tmp_path, monkeypatch):
    setup(tmp_path, monkeypatch)
    with pytest.raises(tracer.ConfigError, match=expected):
        tracer.Recorder(":memory:")


def test_a_bad_argument_is_a_config_error():
    with pytest.raises(tracer.ConfigError, match=r"'secret' \(from content=\) is not one of full, redacted, none"):
        tracer.Recorder(":memory:", content="secret")


def test_validation_problems_say_where_and_what_in_one_line():
    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int

        @field_validator("n")
        @classmethod
        def _positive(cls, v: int) -> int:
            if v < 0:
                raise ValueError("n must be 0 or more")
            return v

    class Outer(BaseModel):
        inner: Inner

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"inner": {"n": -1, "colour": "blue"}})
    assert tracer.validation_problems(caught.value) == "inner.n: n must be 0 or more; inner.colour: unknown setting"
    assert tracer.validation_problems(caught.value, most=1) == "inner.n: n must be 0 or more"
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate([])
    assert tracer.validation_problems(caught.value).startswith("Input should be")  # the value as a whole: no path
