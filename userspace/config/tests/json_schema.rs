//! The shipped JSON Schema (`config.schema.json`) is what the types generate, and an
//! independent validator (the `jsonschema` crate) agrees with the Rust decoder: the
//! configs it accepts pass, and configs with an unknown key, a wrong type, a bad enum
//! value or a missing key fail for that reason.

mod common;

use atomix_config::json_schema::{json_schema, json_schema_text, REGENERATE, SHIPPED_PATH};
use common::minimal;
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&json_schema())
        .expect("the generated schema is a valid draft 7 schema")
}

/// config.toml text as the JSON a schema-aware editor checks.
fn to_json(text: &str) -> Value {
    let table: toml::Table = toml::from_str(text).expect("valid TOML");
    serde_json::to_value(table).expect("TOML values convert to JSON")
}

/// Each error as `instance path: message`.
fn errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let instance = to_json(text);
    v.iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_shipped_schema_is_the_generated_one() {
    let shipped = include_str!("../config.schema.json");
    assert!(
        shipped == json_schema_text(),
        "{SHIPPED_PATH} differs from what the schema types generate; regenerate it with\n    {REGENERATE}"
    );
}

/// Configs the Rust decoder accepts: the example, the render fixtures, and values at the
/// edges of each value type's grammar.
fn accepted() -> Vec<(String, String)> {
    let mut configs = vec![
        (
            "examples/config.toml".to_owned(),
            include_str!("../../../examples/config.toml").to_owned(),
        ),
        ("minimal".to_owned(), minimal("")),
    ];
    for entry in std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/render"
    ))
    .unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            configs.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let edges = [
        "[[firewall.allow]]\nzone = \"wan\"\nproto = \"udp\"\nport = 51820\nsource = \"0.0.0.0/0\"\n[[firewall.allow]]\nzone = \"lan\"\nproto = \"tcp\"\nport = \"8000-8100\"\n",
        "[time]\nntp-servers = [\"192.0.2.1\", \"ntp.example\"]\n[update]\nrauc = true\nurl = \"http://updates.example:8000/a.raucb\"\ninterval = \"1d 12h\"\n",
        "[[containers]]\nname = \"web-1\"\nimage = \"oci-archive:/data/apps/web/web.tar\"\nrootless = true\npublish = [\"127.0.0.1:9000:80/udp\", \"8443:443\"]\nvolumes = [\"web-data:/var/lib/web:ro,Z\", \"/data/apps/web:/srv\", \"/data/apps:/x\"]\nenvironment = { _X1 = \"a b\" }\nexec = [\"--flag\"]\nrestart = \"on-failure\"\n",
        "[update.hawkbit]\nurl = \"https://hawkbit.example/\"\ntenant = \"DEFAULT\"\ncontroller-id = \"edge-042.example.com\"\ntoken-file = \"/data/apps/hawkbit/..token\"\ntoken-kind = \"gateway\"\n",
        "[update.hawkbit]\nurl = \"http://10.0.2.2:60053\"\ntenant = \"t_1.x\"\ncontroller-id = \"E_1\"\ntoken-file = \"/data/.t\"\ninsecure-http-token = true\n",
        "[network.wan]\ndhcp = false\naddress = \"203.0.113.10/24\"\ngateway = \"203.0.113.1\"\ndns = [\"203.0.113.53\"]\n",
    ];
    for (i, extra) in edges.iter().enumerate() {
        configs.push((format!("edge case {i}"), minimal(extra)));
    }
    configs.push((
        "timezone and lease".to_owned(),
        minimal("")
            .replace(
                "[admin]",
                "timezone = \"America/Argentina/Buenos_Aires\"\n[admin]",
            )
            .replace(
                "end = \"192.168.100.150\"",
                "end = \"192.168.100.150\", lease = \"infinite\"",
            ),
    ));
    configs
}

#[test]
fn every_config_the_device_accepts_is_valid_against_the_schema() {
    let v = validator();
    for (name, text) in accepted() {
        // The decoder's verdict (types and value formats): cross-field rules and bundle
        // contents are beyond the schema, so a config need not pass those to count.
        let decoded = atomix_config::decode::decode(&text);
        assert!(
            decoded.config.is_some() && decoded.findings.is_empty(),
            "{name}: the decoder refuses it: {:#?}",
            decoded.findings
        );
        assert_eq!(errors(&v, &text), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn a_schema_directive_is_a_comment_the_device_accepts() {
    let text = format!("#:schema ./config.schema.json\n{}", minimal(""));
    let checked = atomix_config::check("config.toml", &text);
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
    assert_eq!(checked.warnings().count(), 0);
}

#[test]
fn invalid_configs_fail_for_the_expected_reason() {
    let v = validator();
    // (what is wrong, config text, the schema error expected: path and a part of the message)
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown key",
            minimal("colour = 1\n"),
            "/network/lan",
            "Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            "unknown top-level table",
            format!("{}[extras]\nx = 1\n", minimal("")).replace("# line 9\n", ""),
            "",
            "'extras' was unexpected",
        ),
        (
            "wrong type",
            minimal("[update]\nrauc = \"yes\"\n"),
            "/update/rauc",
            "\"yes\" is not of type \"boolean\"",
        ),
        (
            "bad enum value",
            minimal("[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nrestart = \"sometimes\"\n"),
            "/containers/0/restart",
            "\"sometimes\" is not one of",
        ),
        (
            "bad zone",
            minimal("[[firewall.allow]]\nzone = \"dmz\"\nproto = \"tcp\"\nport = 443\n"),
            "/firewall/allow/0/zone",
            "\"dmz\" is not valid under any of the schemas",
        ),
        (
            "missing required key",
            minimal("").replace("hostname = \"edge-042\"\n", ""),
            "/device",
            "\"hostname\" is a required property",
        ),
        (
            "missing required table",
            minimal("").replace("[admin]\n", "[admin-x]\n"),
            "",
            "\"admin\" is a required property",
        ),
        (
            "wrong schema version",
            minimal("").replace("schema = 1", "schema = 2"),
            "/schema",
            "1 was expected",
        ),
        (
            "no SSH keys",
            minimal("").replace(&format!("[\"{}\"]", common::KEY), "[]"),
            "/admin/ssh-authorized-keys",
            "[] has less than 1 item",
        ),
        (
            "bad host name",
            minimal("").replace("\"edge-042\"", "\"edge_042\""),
            "/device/hostname",
            "does not match",
        ),
        (
            "unknown time zone",
            minimal("").replace("[admin]", "timezone = \"Mars/Olympus\"\n[admin]"),
            "/device/timezone",
            "is not one of",
        ),
        (
            "address without prefix",
            minimal("").replace("\"192.168.100.1/24\"", "\"192.168.100.1\""),
            "/network/lan/address",
            "does not match",
        ),
        (
            "bad IPv4 address",
            minimal("").replace("\"192.168.100.50\"", "\"192.168.100.500\""),
            "/network/lan/dhcp-range/start",
            "",
        ),
        (
            "port out of range",
            minimal("[[firewall.allow]]\nzone = \"wan\"\nproto = \"tcp\"\nport = 70000\n"),
            "/firewall/allow/0/port",
            "",
        ),
        (
            "bad volume option",
            minimal("[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nvolumes = [\"web:/srv:rx\"]\n"),
            "/containers/0/volumes/0",
            "does not match",
        ),
        (
            "bad lease",
            minimal("").replace("end = \"192.168.100.150\"", "end = \"192.168.100.150\", lease = \"1y\""),
            "/network/lan/dhcp-range/lease",
            "does not match",
        ),
        (
            "hawkBit: unknown key (no token in the config)",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"DEFAULT\"\ntoken = \"s3cret\"\n"),
            "/update/hawkbit",
            "'token' was unexpected",
        ),
        (
            "hawkBit: missing tenant",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\n"),
            "/update/hawkbit",
            "\"tenant\" is a required property",
        ),
        (
            "hawkBit: bad tenant",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"a b\"\n"),
            "/update/hawkbit/tenant",
            "does not match",
        ),
        (
            "hawkBit: tenant ..",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"..\"\n"),
            "/update/hawkbit/tenant",
            "",
        ),
        (
            "hawkBit: bad controller id",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"DEFAULT\"\ncontroller-id = \"edge-\"\n"),
            "/update/hawkbit/controller-id",
            "does not match",
        ),
        (
            "hawkBit: token file outside /data",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"DEFAULT\"\ntoken-file = \"/etc/token\"\n"),
            "/update/hawkbit/token-file",
            "does not match",
        ),
        (
            "hawkBit: token file through ..",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/../../etc/shadow\"\n"),
            "/update/hawkbit/token-file",
            "does not match",
        ),
        (
            "hawkBit: bad token kind",
            minimal("[update.hawkbit]\nurl = \"https://h.example\"\ntenant = \"DEFAULT\"\ntoken-kind = \"bearer\"\n"),
            "/update/hawkbit/token-kind",
            "",
        ),
        (
            "hawkBit: a URL without a scheme",
            minimal("[update.hawkbit]\nurl = \"h.example\"\ntenant = \"DEFAULT\"\n"),
            "/update/hawkbit/url",
            "does not match",
        ),
        (
            "bad environment name",
            minimal("[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nenvironment = { \"1X\" = \"a\" }\n"),
            "/containers/0/environment",
            "does not match",
        ),
    ];
    for (what, text, path, needle) in cases {
        // The device refuses each as well.
        assert!(
            !atomix_config::check("config.toml", text).is_valid(),
            "{what}: the device accepts it"
        );
        let errs = errors(&v, text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
            "{what}: expected an error at {path:?} containing {needle:?}, got {errs:#?}"
        );
    }
}
