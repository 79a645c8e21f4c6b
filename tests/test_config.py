"""Configuration: precedence of flags, environment, file and defaults; validation; the example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lb_service import config as cfg
from lb_service.balancer import BalancerConfig
from lb_service.cli import main
from lb_service.model import Engine, StrategyName

REPO = Path(__file__).resolve().parents[1]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lb.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_without_any_source() -> None:
    """With no flag, variable or file every option has its documented default."""
    config = cfg.load({}, environ={})
    service, balancer = config.service(), config.balancer()
    assert service.listen == "127.0.0.1:50051"
    assert service.strategy is StrategyName.LEAST_CONNECTIONS
    assert (balancer.session_ttl_s, balancer.request_timeout_s) == (1800.0, 600.0)
    assert config.admin_token is None
    assert set(config.sources.values()) == {"default"}


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    """A flag wins over LB_* which wins over the file, which wins over the default."""
    path = _file(tmp_path, "strategy: weighted\nsession_ttl_s: 60\nrequest_timeout_s: 30\n")
    config = cfg.load(
        {"strategy": StrategyName.ROUND_ROBIN},
        environ={"LB_STRATEGY": "latency-based", "LB_SESSION_TTL_S": "90"},
        config_path=path,
    )
    balancer = config.balancer()
    assert config.service().strategy is StrategyName.ROUND_ROBIN
    assert balancer.session_ttl_s == 90.0
    assert balancer.request_timeout_s == 30.0
    assert balancer.latency_smoothing == 0.3
    assert config.sources["strategy"] == "flag"
    assert config.sources["session_ttl_s"] == "env"
    assert config.sources["request_timeout_s"] == "file"


def test_lb_config_names_the_file(tmp_path: Path) -> None:
    """LB_CONFIG points at the config file when --config is not given."""
    path = _file(tmp_path, "listen: 127.0.0.1:6000\n")
    assert cfg.load({}, environ={"LB_CONFIG": str(path)}).service().listen == "127.0.0.1:6000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("session_ttl_s: -5\n", "session_ttl_s: must be a finite number > 0, got -5"),
        ("strategy: fastest\n", "strategy: must be one of round-robin"),
        ("sticky_sessions: maybe\n", "sticky_sessions: must be true or false, got 'maybe'"),
        ("listen: localhost\n", "listen: must be HOST:PORT"),
        ("latency_smoothing: 2\n", "latency_smoothing: must be in (0, 1], got 2"),
        ("sesion_ttl_s: 5\n", "unknown option(s) 'sesion_ttl_s'"),
        ("- just\n- a list\n", "must hold a mapping of options"),
        ("listen: [unclosed\n", "is not valid YAML"),
        (
            "agents:\n  - {id: a, host: h, port: 70000}\n",
            "agents[0].port: must be from 1 to 65535, got 70000",
        ),
        (
            "agents:\n  - {id: a, host: h, port: 0}\n",
            "agents[0].port: must be from 1 to 65535, got 0",
        ),
        ("agents:\n  - {id: a, port: 11434}\n", "agents[0].host: required"),
        ("agents:\n  - {id: a, host: ' ', port: 11434}\n", "agents[0].host: required"),
        (
            "agents:\n  - {id: a, host: h, port: 1, hardware: {vram_gb: -1}}\n",
            "hardware.vram_gb must be a finite",
        ),
        (
            "agents:\n  - {id: a, host: h, port: 1}\n  - {id: a, host: h, port: 1}\n",
            "id 'a' is declared more than once",
        ),
        ("agents:\n  - {id: a, colour: red}\n", "unknown field(s) ['colour']"),
        (
            "agents:\n  - {id: a, host: h, port: 1}\nweights: {b: 2}\n",
            "weights name agents not declared",
        ),
        (
            "agents:\n  - {id: a, host: h, port: 1}\nweights: {a: -2}\n",
            "weight of 'a' must be a finite number",
        ),
        ("agents:\n  - {id: a, max_connections: -1}\n", "max_connections: must be a whole"),
        (
            "agents:\n  - {id: a, host: h, port: 1, parallel_slots: -1}\n",
            "agents[0].parallel_slots: must be a whole number >= 0, got -1",
        ),
        (
            "agents:\n  - {id: a, host: h, port: 1, parallel_slots: 2000}\n",
            "agents[0].parallel_slots: must be from 0 (guess from the hardware) to 1024, got 2000 "
            "(agent 'a')",
        ),
        ("tls_cert: /nonexistent.crt\ntls_key: /nonexistent.key\n", "tls_cert: no such file"),
        ("tls_cert: /etc/hostname\n", "tls_cert and tls_key must be given together"),
        ("max_agents: 0\n", "max_agents: must be a whole number >= 1, got 0"),
        ("max_leases: 2.5\n", "max_leases: must be a whole number >= 1, got 2.5"),
        ("max_sessions: lots\n", "max_sessions: must be a number, got 'lots'"),
        ("state_file: /nonexistent/s.json\n", "state_file: no such directory '/nonexistent'"),
    ],
)
def test_bad_values_name_the_field_and_value(tmp_path: Path, text: str, message: str) -> None:
    """Each invalid file is refused with a message naming the field, the value and the file."""
    path = _file(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load({}, environ={}, config_path=path)
    assert message in str(caught.value)


def test_limits_and_state_options_have_documented_defaults(tmp_path: Path) -> None:
    """Limits default as the README says; the state file is off unless given, saved every 5 s."""
    config = cfg.load({}, environ={})
    service, balancer = config.service(), config.balancer()
    assert service.max_message_bytes == 4 * 1024 * 1024
    assert (balancer.max_candidates, balancer.max_agents) == (1000, 10_000)
    assert (balancer.max_sessions, balancer.max_leases) == (100_000, 100_000)
    assert (service.state_file, service.state_interval_s) == (None, 5.0)
    path = tmp_path / "state.json"
    given = cfg.load({}, environ={"LB_STATE_FILE": str(path), "LB_MAX_AGENTS": "50"})
    assert (given.service().state_file, given.balancer().max_agents) == (path, 50)


def test_bad_environment_value_names_the_variable() -> None:
    """A malformed LB_* value is refused naming the variable it came from."""
    expected = "environment LB_REQUEST_TIMEOUT_S: request_timeout_s: must be a number"
    with pytest.raises(cfg.ConfigError, match=expected):
        cfg.load({}, environ={"LB_REQUEST_TIMEOUT_S": "soon"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not a traceback."""
    with pytest.raises(cfg.ConfigError, match="cannot read config file"):
        cfg.load({}, environ={}, config_path=tmp_path / "absent.yaml")


EXAMPLE = REPO / "examples" / "lb-service.yaml"


def test_example_config_loads() -> None:
    """The shipped examples/lb-service.yaml is valid and declares its three agents."""
    config = cfg.load({}, environ={}, config_path=EXAMPLE)
    assert [a.id for a in config.declared.agents] == ["cpu-1", "gpu-24g", "gpu-80g"]
    assert config.declared.weights == {"cpu-1": 4.0}
    gpu = config.declared.agents[2]
    assert (gpu.hardware.vram_gb, gpu.max_connections, gpu.parallel_slots) == (80.0, 16, 8)
    assert gpu.models[-1] == "mixtral:8x22b"


def test_example_config_shows_every_option() -> None:
    """The example sets every key of the option table, so none goes undocumented there."""
    keys = set(yaml.safe_load(EXAMPLE.read_text())) - set(cfg.DECLARED_KEYS)
    assert sorted({option.key for option in cfg.OPTIONS} - keys) == []


def test_example_config_sets_every_option_to_its_default() -> None:
    """Copying the example changes nothing, and its values agree with the documented defaults."""
    config = cfg.load({}, environ={}, config_path=EXAMPLE)
    differ = {o.key: config.values[o.key] for o in cfg.OPTIONS if config.values[o.key] != o.default}
    assert differ == {}
    assert set(config.sources.values()) == {"file"}


def test_example_config_comments_every_option() -> None:
    """Each option line of the example carries a comment saying what the key does."""
    keys = {option.key for option in cfg.OPTIONS}
    bare = [
        line
        for line in EXAMPLE.read_text().splitlines()
        if line.split(":", 1)[0] in keys and "#" not in line
    ]
    assert bare == []


def test_admin_token_from_file_or_environment(tmp_path: Path) -> None:
    """The token is read from --admin-token-file (stripped) or LB_ADMIN_TOKEN, file first."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    from_file = cfg.load({"admin_token_file": token_file}, environ={"LB_ADMIN_TOKEN": "env"})
    assert from_file.admin_token == "s3cret"
    assert cfg.load({}, environ={"LB_ADMIN_TOKEN": "env"}).admin_token == "env"


def test_empty_token_is_refused(tmp_path: Path) -> None:
    """An empty token file would disable nothing and protect nothing, so it is an error."""
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(cfg.ConfigError, match="is empty"):
        cfg.load({"admin_token_file": token_file}, environ={})


def test_describe_never_shows_the_token() -> None:
    """The start-up summary says a token is set without including it."""
    described = cfg.load({}, environ={"LB_ADMIN_TOKEN": "s3cret"}).describe()
    assert described["admin_token"] == "set"
    assert "s3cret" not in repr(described)


def test_readme_documents_every_option() -> None:
    """Each option's file key, flag and environment variable appear in the README."""
    readme = (REPO / "README.md").read_text()
    missing = [
        name
        for option in cfg.OPTIONS
        for name in (option.key, option.flag, option.env)
        if f"`{name}`" not in readme
    ]
    assert missing == []


def test_serve_exits_2_on_an_agent_without_an_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` refuses a declared agent without a host before it binds: one line, status 2."""
    path = tmp_path / "lb.yaml"
    path.write_text("agents:\n  - {id: a, port: 11434}\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"lb-service: config error: {path}: agents[0].host: required: the host name or "
        "address dispatchers connect to (agent 'a')\n"
    )


def test_serve_exits_2_on_an_unknown_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent declared with an engine the service cannot probe stops start-up with status 2."""
    path = tmp_path / "lb.yaml"
    path.write_text("agents:\n  - {id: a, host: h, port: 1, engine: tgi}\n")

    assert main(["serve", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"lb-service: config error: {path}: agents[0].engine: must be one of ollama, vllm, "
        "sglang, http, grpc; got 'tgi'\n"
    )


def test_declared_agents_carry_their_health_fields(tmp_path: Path) -> None:
    """engine, heartbeat_ttl_ms and probe_path in the file reach the declared agent."""
    path = tmp_path / "lb.yaml"
    path.write_text(
        "agents:\n  - {id: a, host: h, port: 1, engine: http, heartbeat_ttl_ms: 5000, "
        "probe_path: /healthz}\n"
    )
    (declared,) = cfg.load({}, environ={}, config_path=path).declared.agents

    assert (declared.engine, declared.heartbeat_ttl_ms, declared.probe_path) == (
        Engine.HTTP,
        5000,
        "/healthz",
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LB_PROBE_INTERVAL_S", "0", "probe_interval_s: must be a finite number > 0, got '0'"),
        ("LB_PROBE_TIMEOUT_S", "-1", "probe_timeout_s: must be a finite number > 0, got '-1'"),
        (
            "LB_PROBE_UNHEALTHY_THRESHOLD",
            "0",
            "probe_unhealthy_threshold: must be a whole number >= 1, got '0'",
        ),
        (
            "LB_PROBE_HEALTHY_THRESHOLD",
            "1.5",
            "probe_healthy_threshold: must be a whole number >= 1, got '1.5'",
        ),
        ("LB_AGENT_EXPIRY_S", "soon", "agent_expiry_s: must be a number, got 'soon'"),
    ],
)
def test_bad_health_options_are_refused(variable: str, value: str, message: str) -> None:
    """Each health option refuses a value it cannot work with, naming option and source."""
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load({}, environ={variable: value})

    assert str(error.value) == f"environment {variable}: {message}"


def test_health_options_reach_the_balancer_config() -> None:
    """The health options' defaults are the balancer's: 5 s, 1 s, 3, 2 and 300 s."""
    config = cfg.load({}, environ={})
    balancer = config.balancer()

    assert (
        balancer.probe_interval_s,
        balancer.probe_timeout_s,
        balancer.probe_unhealthy_threshold,
        balancer.probe_healthy_threshold,
        balancer.agent_expiry_s,
    ) == (5.0, 1.0, 3, 2, 300.0)


def test_every_balancer_option_is_a_server_option_with_the_balancers_default() -> None:
    """Each BalancerConfig field is an option of the same name whose default is the field's."""
    defaults = BalancerConfig()
    by_key = {option.key: option for option in cfg.OPTIONS}

    for key in cfg.BALANCER_KEYS:
        assert by_key[key].default == getattr(defaults, key), key
    assert cfg.load({}, environ={}).balancer() == defaults


def test_every_option_is_one_field_of_balancerconfig_or_serviceoptions() -> None:
    """The option table and the two typed objects name the same options, each once."""
    keys = [option.key for option in cfg.OPTIONS]

    assert sorted(keys) == sorted(cfg.BALANCER_KEYS + cfg.SERVICE_KEYS)
    assert len(set(keys)) == len(keys)
    assert cfg.load({}, environ={}).service() == cfg.ServiceOptions()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LB_SESSION_TTL_S", "0", "session_ttl_s: must be a finite number > 0, got '0'"),
        ("LB_MAX_AGENTS", "2.5", "max_agents: must be a whole number >= 1, got '2.5'"),
        ("LB_BALANCE_FACTOR", "0.5", "balance_factor: must be a finite number >= 1, got '0.5'"),
        ("LB_LATENCY_SMOOTHING", "1.5", "latency_smoothing: must be in (0, 1], got '1.5'"),
        (
            "LB_WATCH_MIN_INTERVAL_MS",
            "-1",
            "watch_min_interval_ms: must be a finite number > 0, got '-1'",
        ),
    ],
)
def test_a_balancer_option_is_refused_in_the_words_of_the_balancers_own_rule(
    variable: str, value: str, message: str
) -> None:
    """The server's parsers apply BalancerConfig's rules, so both refuse alike."""
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load({}, environ={variable: value})

    assert str(error.value) == f"environment {variable}: {message}"
