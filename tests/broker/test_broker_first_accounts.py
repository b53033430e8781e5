"""The broker's first accounts: `python -m careloop.mqtt init FILE` (what docker-compose runs before Mosquitto)."""

from __future__ import annotations

import json

import pytest

from careloop.mqtt import ADMIN_USER, SERVICE_USER, admin_acls, dynsec_password_matches, main, service_acls

SERVICE_PASSWORD = "service-password-0123456789"
ADMIN_PASSWORD = "admin-password-0123456789"


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_MQTT_SERVICE_PASSWORD", SERVICE_PASSWORD)
    monkeypatch.setenv("CARELOOP_MQTT_ADMIN_PASSWORD", ADMIN_PASSWORD)


def test_init_writes_the_two_accounts_and_denies_everything_else_by_default(tmp_path, passwords) -> None:
    target = tmp_path / "data" / "dynamic-security.json"
    assert main(["init", str(target)]) == 0
    config = json.loads(target.read_text())
    assert config["defaultACLAccess"] == {
        "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": False,
    }
    clients = {client["username"]: client for client in config["clients"]}
    assert clients.keys() == {SERVICE_USER, ADMIN_USER}
    assert dynsec_password_matches(SERVICE_PASSWORD, clients[SERVICE_USER])
    assert dynsec_password_matches(ADMIN_PASSWORD, clients[ADMIN_USER])
    assert SERVICE_PASSWORD not in target.read_text()
    assert target.stat().st_mode & 0o077 == 0, "the file is readable by its owner only"


def test_init_keeps_a_file_that_holds_devices_and_brings_the_service_roles_up_to_date(tmp_path, passwords,
                                                                                      capsys) -> None:
    target = tmp_path / "dynamic-security.json"
    target.write_text(json.dumps({
        "clients": [{"username": "RH-1", "roles": [{"rolename": "device:RH-1"}]}],
        "roles": [{"rolename": "careloop-service", "acls": []}, {"rolename": "device:RH-1", "acls": ["kept"]}],
    }))
    assert main(["init", str(target)]) == 0
    config = json.loads(target.read_text())
    assert config["clients"] == [{"username": "RH-1", "roles": [{"rolename": "device:RH-1"}]}]
    roles = {role["rolename"]: role["acls"] for role in config["roles"]}
    assert roles["device:RH-1"] == ["kept"] and roles["careloop-service"] == service_acls()
    assert roles["careloop-broker-admin"] == admin_acls()
    assert "kept" in capsys.readouterr().out


@pytest.mark.parametrize("variable", ["CARELOOP_MQTT_SERVICE_PASSWORD", "CARELOOP_MQTT_ADMIN_PASSWORD"])
def test_init_refuses_a_missing_or_short_password_naming_it(tmp_path, passwords, monkeypatch, capsys,
                                                             variable: str) -> None:
    monkeypatch.setenv(variable, "short")
    assert main(["init", str(tmp_path / "dynamic-security.json")]) == 2
    assert variable in capsys.readouterr().err
    assert not (tmp_path / "dynamic-security.json").exists()


def test_the_embedded_mosquitto_hands_out_the_service_account_and_keeps_the_issuer_for_its_home(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from careloop import embedded
    from careloop.mqtt import BrokerAccounts, find_dynsec_plugin, new_secret

    if shutil.which("mosquitto") is None or find_dynsec_plugin() is None:
        pytest.skip("no mosquitto with its dynamic-security plugin on this machine")
    monkeypatch.setenv(embedded.BROKER_CHOICE_VARIABLE, "mosquitto")  # whichever the run's other tests use
    home = tmp_path / "home"
    url = embedded.start_broker(home, preferred_port=None)
    try:
        assert url.startswith(f"mqtt://{SERVICE_USER}:") and embedded.running_broker_kind(home) == "mosquitto"
        admin_url = embedded.broker_admin_url(home, url)
        assert admin_url is not None and admin_url.startswith(f"mqtt://{ADMIN_USER}:")
        assert embedded.broker_admin_url(home, "mqtt://elsewhere.example:1883") is None
        BrokerAccounts(admin_url).set_device_password("RH-EMBEDDED-1", new_secret())
        accounts = (home / "mosquitto" / "careloop-accounts.json")
        assert accounts.stat().st_mode & 0o077 == 0
    finally:
        embedded.release(home, "broker")
