//! Table-driven checks of decoding and validation: each case is config text and the
//! exact diagnostics expected, in the CLI's line format.

mod common;

use atomix_config::check;
use common::{minimal, KEY};

fn lines(text: &str) -> Vec<String> {
    check("config.toml", text)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_minimal_config_and_the_example_are_valid() {
    assert_eq!(lines(&minimal("")), Vec::<String>::new());
    let example = include_str!("../../../examples/config.toml");
    let checked = check("examples/config.toml", example);
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
    assert_eq!(checked.warnings().count(), 0, "{:#?}", checked.diagnostics);
}

#[test]
fn errors_carry_line_column_path_and_reason() {
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown keys, each with its position",
            minimal("colour = 1\n[update]\nrauc = true\nurll = \"x\"\n"),
            &[
                "config.toml:10:1: network.lan.colour: unknown field `colour`, expected one of `address`, `dhcp-range`, `dns`",
                "config.toml:12:8: update.url: rauc = true needs url (the RAUC bundle the update timer installs)",
                "config.toml:13:1: update.urll: unknown field `urll`, expected one of `rauc`, `url`, `interval`, `hawkbit`",
            ],
        ),
        (
            "dhcp range outside the LAN",
            minimal("").replace("start = \"192.168.100.50\"", "start = \"192.168.1.5\""),
            &["config.toml:8:24: network.lan.dhcp-range.start: 192.168.1.5 is outside 192.168.100.0/24"],
        ),
        (
            "missing required keys are reported where their table is, once",
            "schema = 1\n[device]\ntimezone = \"Etc/UTC\"\n[network.lan]\naddress = \"10.0.0.1/8\"\n".to_owned(),
            &[
                "config.toml:1:1: admin: missing required key `admin`",
                "config.toml:2:1: device.hostname: missing required key `hostname`",
            ],
        ),
        (
            "an invalid required value is not also reported missing",
            minimal("").replace("\"edge-042\"", "\"edge_042\""),
            &["config.toml:3:12: device.hostname: \"edge_042\" is not an RFC 1123 host name: only letters, digits, '-' and '.' are allowed"],
        ),
        (
            "type errors",
            minimal("[update]\nrauc = \"yes\"\n"),
            &["config.toml:11:8: update.rauc: invalid type: string \"yes\", expected a boolean"],
        ),
        (
            "container names: invalid and duplicate",
            minimal("[[containers]]\nname = \"Web\"\nimage = \"docker.io/library/nginx\"\n[[containers]]\nname = \"db\"\nimage = \"docker.io/library/postgres\"\n[[containers]]\nname = \"db\"\nimage = \"docker.io/library/postgres\"\n"),
            &[
                "config.toml:11:8: containers[0].name: \"Web\" is not a container name ([a-z0-9][a-z0-9-]*, at most 63 characters)",
                "config.toml:17:8: containers[2].name: duplicate container name \"db\" (also containers[1])",
            ],
        ),
        (
            "ports the device uses on the LAN, and clashes between containers",
            minimal("[[firewall.allow]]\nzone = \"wan\"\nproto = \"tcp\"\nport = \"80-443\"\n[[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\npublish = [\"22:22\", \"443:443\"]\n[[containers]]\nname = \"b\"\nimage = \"docker.io/library/nginx\"\npublish = [\"443:8443/tcp\", \"8080:80\"]\n"),
            &[
                "config.toml:17:12: containers[0].publish[0]: host port 22/tcp is the device's SSH port",
                "config.toml:21:12: containers[1].publish[0]: host port 443/tcp is already published by containers[0]",
                "config.toml:21:28: containers[1].publish[1]: host port 8080/tcp is the provisioning console's port",
                "config.toml:17:12: warning: containers[0].publish[0]: host port 22/tcp is not opened on the WAN by any firewall.allow rule",
                "config.toml:21:28: warning: containers[1].publish[1]: host port 8080/tcp is not opened on the WAN by any firewall.allow rule",
            ],
        ),
        (
            "volumes outside /data/apps, values systemd cannot carry",
            minimal("[[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\nvolumes = [\"/data/apps/../etc:/etc\"]\nexec = [\"ok\", \"two\\nlines\"]\nenvironment = { A = \"tab\\there\" }\n"),
            &[
                "config.toml:13:11: containers[0].volumes: host path \"/data/apps/../etc\" is outside /data/apps",
                "config.toml:14:15: containers[0].exec[1]: an argument with a newline or other control character cannot be carried by a systemd unit",
                "config.toml:15:21: containers[0].environment.A: a value with a newline or other control character cannot be carried by a systemd unit",
            ],
        ),
        (
            "static WAN: incomplete, and overlapping the LAN",
            minimal("[network.wan]\ndhcp = false\naddress = \"192.168.0.2/16\"\n"),
            &[
                "config.toml:11:8: network.wan.dns: dhcp = false needs dns",
                "config.toml:11:8: network.wan.gateway: dhcp = false needs gateway",
                "config.toml:12:11: network.wan.address: 192.168.0.0/16 overlaps the LAN 192.168.100.0/24",
            ],
        ),
        (
            "no keys, wrong schema, unknown zone",
            minimal("[[firewall.allow]]\nzone = \"dmz\"\nproto = \"tcp\"\nport = 1\n")
                .replace(&format!("[\"{KEY}\"]"), "[]")
                .replace("schema = 1", "schema = 2"),
            &[
                "config.toml:1:10: schema: unsupported schema version 2 (this build reads 1)",
                "config.toml:5:23: admin.ssh-authorized-keys: at least one SSH public key is required",
                "config.toml:11:8: firewall.allow[0].zone: unknown variant `dmz`, expected `wan` or `lan`",
            ],
        ),
        (
            "positions count characters, not bytes",
            minimal("").replace("hostname = \"edge-042\"", "hostname = \"édge\""),
            &["config.toml:3:12: device.hostname: \"édge\" is not an RFC 1123 host name: only letters, digits, '-' and '.' are allowed"],
        ),
        (
            "the update timer: a URL is required, the interval has bounds and a syntax",
            minimal("[update]\nrauc = true\ninterval = \"4min\"\n"),
            &[
                "config.toml:11:8: update.url: rauc = true needs url (the RAUC bundle the update timer installs)",
                "config.toml:12:12: update.interval: \"4min\" is shorter than the minimum of 5min",
            ],
        ),
        (
            "an update interval in another syntax",
            minimal("[update]\nrauc = false\ninterval = \"daily\"\n"),
            &["config.toml:12:12: update.interval: \"daily\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""],
        ),
        (
            "the timer and a hawkBit server are one source too many, each timer key where it is",
            minimal("[update]\nrauc = true\nurl = \"https://u.example/b.raucb\"\ninterval = \"6h\"\n[update.hawkbit]\nurl = \"https://hawkbit.example\"\ntenant = \"DEFAULT\"\n"),
            &[
                "config.toml:11:8: update.rauc: the update timer (rauc, url, interval) and [update.hawkbit] are mutually exclusive: a device takes its updates from one source",
                "config.toml:12:7: update.url: the update timer (rauc, url, interval) and [update.hawkbit] are mutually exclusive: a device takes its updates from one source",
                "config.toml:13:12: update.interval: the update timer (rauc, url, interval) and [update.hawkbit] are mutually exclusive: a device takes its updates from one source",
            ],
        ),
        (
            "a URL or interval left over from the timer clashes as well (rauc = false does not)",
            minimal("[update]\nrauc = false\nurl = \"https://u.example/b.raucb\"\nhawkbit = { url = \"https://hawkbit.example\", tenant = \"DEFAULT\" }\n"),
            &["config.toml:12:7: update.url: the update timer (rauc, url, interval) and [update.hawkbit] are mutually exclusive: a device takes its updates from one source"],
        ),
        (
            "hawkBit values: the URL, tenant, controller id and token file each checked; unknown keys refused",
            minimal("[update.hawkbit]\nurl = \"updates.example\"\ntenant = \"a/b\"\ncontroller-id = \"-edge\"\ntoken-file = \"/etc/token\"\ntoken-kind = \"bearer\"\ntoken = \"s3cret\"\n"),
            &[
                "config.toml:11:7: update.hawkbit.url: \"updates.example\" is not an http(s) URL",
                "config.toml:12:10: update.hawkbit.tenant: \"a/b\" is not a tenant name (letters, digits, '.', '_' and '-', 1-64 characters)",
                "config.toml:13:17: update.hawkbit.controller-id: \"-edge\" is not a controller id (letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 253 characters)",
                "config.toml:14:14: update.hawkbit.token-file: \"/etc/token\" is not a path under /data",
                "config.toml:15:14: update.hawkbit.token-kind: unknown variant `bearer`, expected `target` or `gateway`",
                "config.toml:16:1: update.hawkbit.token: unknown field `token`, expected one of `url`, `tenant`, `controller-id`, `token-file`, `token-kind`, `insecure-http-token`",
            ],
        ),
        (
            "a token over http:// would travel in clear text",
            minimal("[update.hawkbit]\nurl = \"http://hawkbit.example\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\ninsecure-http-token = false\n"),
            &["config.toml:13:14: update.hawkbit.token-file: the token would travel in clear text to http://hawkbit.example, readable and reusable by anyone on the way; use an https:// url"],
        ),
        (
            "insecure-http-token is for http:// only",
            minimal("[update.hawkbit]\nurl = \"https://hawkbit.example\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\ninsecure-http-token = true\n"),
            &["config.toml:14:23: update.hawkbit.insecure-http-token: only for an http:// url (over https:// the token is encrypted)"],
        ),
        (
            "a hawkBit table needs its server and tenant",
            minimal("[update.hawkbit]\ntoken-file = \"/data/apps/hawkbit/token\"\n"),
            &[
                "config.toml:10:1: update.hawkbit.tenant: missing required key `tenant`",
                "config.toml:10:1: update.hawkbit.url: missing required key `url`",
            ],
        ),
        (
            "syntax errors stand alone",
            "schema = 1\n[device\nhostname = 3\n".to_owned(),
            &["config.toml:2:8: (document): unclosed table, expected `]`"],
        ),
    ];
    for (what, text, want) in cases {
        assert_eq!(lines(text), *want, "case: {what}");
    }
}

#[test]
fn a_valid_config_decodes_to_typed_values() {
    let checked = check(
        "config.toml",
        &minimal("[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nrootless = true\n"),
    );
    let config = checked.config.expect("valid");
    assert_eq!(config.device.hostname.get_ref().as_str(), "edge-042");
    assert_eq!(config.device.timezone.to_string(), "Etc/UTC");
    assert!(*config.network.wan.dhcp.get_ref());
    assert!(config.network.lan.dns);
    assert_eq!(
        config.network.lan.dhcp_range.unwrap().lease.to_string(),
        "12h"
    );
    assert!(config.containers[0].rootless);
    assert!(!config.update.rauc.get_ref());
    assert_eq!(
        config.update.interval.get_ref().secs(),
        86400,
        "24h by default"
    );

    let checked = check(
        "config.toml",
        &minimal("[update]\nrauc = true\nurl = \"https://u.example/b.raucb\"\ninterval = \"6h\"\n"),
    );
    let update = checked.config.expect("valid").update;
    assert!(*update.rauc.get_ref());
    assert_eq!(update.interval.get_ref().systemd(), "6h");
    assert_eq!(update.hawkbit, None);

    let checked = check(
        "config.toml",
        &minimal("[update.hawkbit]\nurl = \"https://hawkbit.example\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\n"),
    );
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
    let config = checked.config.expect("valid");
    let hawkbit = config.update.hawkbit.as_ref().expect("given").get_ref();
    assert!(!config.update.timer());
    assert_eq!(
        hawkbit.controller_id_or(config.device.hostname.get_ref()),
        "edge-042",
        "the host name by default"
    );
    assert_eq!(hawkbit.token_kind, atomix_config::schema::TokenKind::Target);
    assert_eq!(
        hawkbit.token_file.as_ref().map(|t| t.get_ref().as_str()),
        Some("/data/apps/hawkbit/token")
    );

    let checked = check(
        "config.toml",
        &minimal("[update]\nrauc = false\n[update.hawkbit]\nurl = \"http://10.0.2.2:60053\"\ntenant = \"DEFAULT\"\ncontroller-id = \"rock64-0001\"\ntoken-kind = \"gateway\"\n"),
    );
    assert!(
        checked.is_valid(),
        "rauc = false beside hawkbit: {:#?}",
        checked.diagnostics
    );
    let config = checked.config.expect("valid");
    let hawkbit = config.update.hawkbit.as_ref().expect("given").get_ref();
    assert_eq!(
        hawkbit.controller_id_or(config.device.hostname.get_ref()),
        "rock64-0001"
    );
    assert_eq!(hawkbit.token_file, None);

    // A test set-up (a server on a virtual machine's host) opts in to a token over http://.
    let checked = check(
        "config.toml",
        &minimal("[update.hawkbit]\nurl = \"http://10.0.2.2:60053\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\ninsecure-http-token = true\n"),
    );
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
}

#[test]
fn an_image_archive_must_come_in_the_bundle() {
    let text = minimal(
        "[[containers]]\nname = \"hello\"\nimage = \"oci-archive:/data/apps/hello/hello.tar\"\n",
    );
    assert_eq!(
        lines(&text),
        ["config.toml:12:9: containers[0].image: apps/hello/hello.tar is not in the bundle: an image archive comes in a config bundle, next to config.toml"]
    );
    let files = ["apps/hello/hello.tar", "apps/hello/index.html"]
        .into_iter()
        .collect();
    let checked = atomix_config::check_bundle("config.toml", &text, &files);
    assert!(checked.is_valid(), "{:#?}", checked.diagnostics);
    let elsewhere = ["apps/other/hello.tar"].into_iter().collect();
    let checked = atomix_config::check_bundle("config.toml", &text, &elsewhere);
    assert!(!checked.is_valid());
}

#[test]
fn unknown_keys_of_one_table_are_all_reported() {
    assert_eq!(
        lines(&minimal(
            "[time]\nfoo = 1\nntp-servers = []\nbar = 2\n\"b z\" = 3\n"
        )),
        [
            "config.toml:11:1: time.foo: unknown field `foo`, expected `ntp-servers`",
            "config.toml:13:1: time.bar: unknown field `bar`, expected `ntp-servers`",
            "config.toml:14:1: time.\"b z\": unknown field `b z`, expected `ntp-servers`",
        ]
    );
}

#[test]
fn host_port_clashes_by_address() {
    let text = minimal(
        "[[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\n\
         publish = [\"127.0.0.1:8000:80\", \"192.168.100.1:8000:80\", \"127.0.0.1:8000:81\", \"8000:82\"]\n\
         [[containers]]\nname = \"b\"\nimage = \"docker.io/library/nginx\"\n\
         publish = [\"8001:80\", \"127.0.0.1:8001:80\", \"8001:80/udp\"]\n",
    );
    let errors: Vec<String> = lines(&text)
        .into_iter()
        .filter(|l| !l.contains("warning"))
        .collect();
    assert_eq!(
        errors,
        [
            "config.toml:13:58: containers[0].publish[2]: host port 8000/tcp is already published by containers[0]",
            "config.toml:13:79: containers[0].publish[3]: host port 8000/tcp is already published by containers[0]",
            "config.toml:17:23: containers[1].publish[1]: host port 8001/tcp is already published by containers[1]",
        ]
    );
}

#[test]
fn findings_past_the_cap_are_counted_not_kept() {
    let publish = vec!["\"8000:80\""; 1500].join(", ");
    let text = minimal(&format!(
        "[[firewall.allow]]\nzone = \"wan\"\nproto = \"tcp\"\nport = 8000\n\
         [[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\npublish = [{publish}]\n"
    ));
    let checked = check("config.toml", &text);
    let errors: Vec<String> = checked.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), atomix_config::diagnostic::MAX_FINDINGS + 1);
    assert!(
        errors[0].starts_with("config.toml:17:23: containers[0].publish[1]: host port 8000/tcp is already published by containers[0]"),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors.last().unwrap(),
        "config.toml:18:1: (document): 499 more errors not shown (only the first 1000 errors found are)"
    );
}

#[test]
fn decoding_a_large_config_of_errors_stops_and_says_so() {
    let block = "[[containers]]\nname = \"A\"\nimage = \"docker.io/x/y\"\n";
    let text = minimal(&block.repeat((200 << 10) / block.len()));
    let checked = check("config.toml", &text);
    let errors: Vec<String> = checked.errors().map(ToString::to_string).collect();
    assert!(errors.len() > 5 && errors.len() < 100, "{}", errors.len());
    assert!(
        errors[0]
            .starts_with("config.toml:11:8: containers[0].name: \"A\" is not a container name"),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors.last().unwrap(),
        &format!(
            "config.toml:{}:1: (document): too many errors to look for them all: correct these and check again",
            text.lines().count() + 1
        )
    );
}
