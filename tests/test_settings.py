import pytest

from ml_backend.settings import ConfigError, ProjectConfig, Settings, parse_extra_params


def test_env_defaults_are_the_embedded_local_judge():
    s = Settings.from_env({})
    cfg = ProjectConfig.resolve(s)
    assert (cfg.provider, cfg.model, cfg.temperature) == ("local", "smollm2-135m", 0.0)


def test_env_openai_and_extra_params_override():
    s = Settings.from_env({"JUDGE_PROVIDER": "openai", "JUDGE_MODEL": "m1", "JUDGE_TEMPERATURE": "0.3"})
    cfg = ProjectConfig.resolve(s, '{"model": "m2", "metric": "toxicity", "control": "verdict"}')
    assert (cfg.provider, cfg.model, cfg.temperature, cfg.metric, cfg.control) == \
        ("openai", "m2", 0.3, "toxicity", ("verdict",))


def test_switching_provider_in_extra_params_picks_that_providers_default_model():
    cfg = ProjectConfig.resolve(Settings.from_env({}), {"provider": "openai"})
    assert cfg.model == "gpt-4o-mini"


def test_prompt_replaces_env_metric():
    s = Settings.from_env({"JUDGE_METRIC": "toxicity"})
    cfg = ProjectConfig.resolve(s, {"prompt": "Is {output} ok?"})
    assert cfg.prompt == "Is {output} ok?" and cfg.metric is None


@pytest.mark.parametrize("raw", [None, "", "null", {}])
def test_empty_extra_params(raw):
    assert parse_extra_params(raw) == {}


@pytest.mark.parametrize("raw,needle", [
    ('{"temprature": 1}', "unknown extra_params key 'temprature'"),
    ('{"temperature": "hot"}', "wrong type"),
    ('{"temperature": 5}', "between 0 and 2"),
    ('{"provider": "bard"}', "must be one of"),
    ('{"fields": {"input": 3}}', "fields"),
    ("[1, 2]", "JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_extra_params_are_named(raw, needle):
    with pytest.raises(ConfigError, match=None) as err:
        ProjectConfig.resolve(Settings.from_env({}), raw)
    assert needle in str(err.value)


def test_bad_env_is_named():
    with pytest.raises(ConfigError, match="JUDGE_PROVIDER"):
        Settings.from_env({"JUDGE_PROVIDER": "nope"})
    with pytest.raises(ConfigError, match="BASIC_AUTH_PASS"):
        Settings.from_env({"BASIC_AUTH_USER": "u"})
    with pytest.raises(ConfigError, match="JUDGE_MAX_TOKENS"):
        Settings.from_env({"JUDGE_MAX_TOKENS": "many"})
    with pytest.raises(ConfigError, match="EVALUATOR_LAYERS"):
        Settings.from_env({"EVALUATOR_LAYERS": "-1"})
    with pytest.raises(ConfigError, match="PREDICT_CONCURRENCY"):
        Settings.from_env({"PREDICT_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="TRAIN_PRECISION"):
        Settings.from_env({"TRAIN_PRECISION": "fp8"})
    for bad in ("0", "9", "-2", "two"):
        with pytest.raises(ConfigError, match="TRAIN_SOUP"):
            Settings.from_env({"TRAIN_SOUP": bad})


def test_evaluator_base_model_and_layers():
    s = Settings.from_env({"EVALUATOR_BASE_MODEL": "/models/my-bert", "EVALUATOR_LAYERS": "3"})
    assert (s.evaluator_base_model, s.evaluator_layers) == ("/models/my-bert", 3)
    assert Settings.from_env({"TRAIN_PRECISION": "FP32"}).train_precision == "fp32"
    assert (Settings.from_env({}).train_soup, Settings.from_env({"TRAIN_SOUP": "1"}).train_soup) == (2, 1)
    assert (Settings.from_env({}).evaluator_base_model, Settings.from_env({}).evaluator_layers) == (None, 0)


def test_redacted_hides_every_secret():
    s = Settings.from_env({"OPENAI_API_KEY": "sk-secret123456", "LABEL_STUDIO_API_KEY": "tok",
                           "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "pw", "WEBHOOK_SECRET": "ws"})
    text = repr(s.redacted())
    for secret in ("sk-secret123456", "'tok'", "'pw'", "'ws'"):
        assert secret not in text
