//! The JSON Schema of config.toml (draft 7, which taplo / Even Better TOML read), derived
//! from the [`crate::schema`] types with schemars. The value types of [`crate::values`]
//! parse themselves, so their schemas are written here: a pattern or bounds where the
//! schema language can say what `FromStr` accepts, the rule in words where it cannot.
//! The schema may accept more than the device (cross-field rules, base64 key data, image
//! reference grammar), never less: `tests/json_schema.rs` checks both directions.
//!
//! The shipped copy is `userspace/config/config.schema.json`, printed by `atomixctl schema`.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

use crate::schema::Config;
use crate::values::{
    ContainerName, ControllerId, Hostname, ImageRef, Ipv4Net, LeaseTime, NtpServer, PortSpec,
    Publish, SshPublicKey, Tenant, Timezone, TokenFile, UpdateInterval, UpdateUrl, VolumeMount,
    SSH_KEY_TYPES, TIMEZONES,
};

/// Where the shipped schema lives, relative to the workspace root.
pub const SHIPPED_PATH: &str = "userspace/config/config.schema.json";

/// The command that regenerates the shipped schema.
pub const REGENERATE: &str =
    "cargo run -p atomixctl -- schema > userspace/config/config.schema.json";

/// The schema as a JSON value.
pub fn json_schema() -> Value {
    let mut settings = SchemaSettings::draft07();
    // First, so that draft 7's own transforms (no siblings beside `$ref`) see its result.
    settings.transforms.insert(0, Box::new(ForToml));
    let mut schema = settings.into_generator().into_root_schema_for::<Config>();
    schema.insert("title".into(), json!("AtomixOS config.toml v1"));
    schema.insert(
        "description".into(),
        json!(
            "The whole intent for one AtomixOS device. Keys are kebab-case; unknown keys are \
             errors. Checked here: keys, types, enums and value formats. Checked only by \
             `atomixctl validate` (as the device checks): cross-field rules (static WAN needs \
             address, gateway and dns; rauc needs url; the update timer's keys beside \
             [update.hawkbit]; DHCP range inside the LAN; unique \
             container names and host ports; ports the device uses), SSH key data, the full \
             image reference grammar. Reference: docs/configuration.md."
        ),
    );
    schema.to_value()
}

/// The schema as shipped: pretty JSON with a final newline.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// TOML has no null: an absent key is how an `Option` is left out, so the schema offers no
/// `null` alternatives and defaults carry no null members. And `format` is only an
/// annotation for many validators, so IPv4 addresses get a pattern as well.
#[derive(Debug, Clone)]
struct ForToml;

impl Transform for ForToml {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = obj.get_mut(key) {
                    alts.retain(|a| a.get("type") != Some(&json!("null")));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        obj.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, v) in inner {
                                obj.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            if obj.get("format") == Some(&json!("ipv4")) {
                obj.insert("pattern".into(), json!(format!("^{}$", ipv4())));
            }
            if let Some(Value::Object(default)) = obj.get_mut("default") {
                default.retain(|_, v| !v.is_null());
            }
        }
        transform_subschemas(self, schema);
    }
}

/// One IPv4 octet as `Ipv4Addr::from_str` takes it: decimal, no leading zeros.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

fn ipv4() -> String {
    format!("{OCTET}(\\.{OCTET}){{3}}")
}

/// A DNS name as `check_dns_name` takes it (its 253-character bound is `maxLength`).
const DNS_NAME: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";

/// A string type whose schema is `schema`, referenced by `name` from the definitions.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

string_schema!(
    Hostname,
    "Hostname",
    json_schema!({
        "description": "An RFC 1123 host name: dot-separated labels of letters, digits and '-', 1-63 long, not starting or ending with '-'; 253 characters in all.",
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": DNS_NAME,
    })
);

string_schema!(
    NtpServer,
    "NtpServer",
    json_schema!({
        "description": "An NTP server: a host name or an IPv4 address.",
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": DNS_NAME,
    })
);

string_schema!(Timezone, "Timezone", {
    let zones: Vec<&str> = TIMEZONES.lines().collect();
    json_schema!({
        "description": "An IANA time zone such as `Europe/Berlin`.",
        "type": "string",
        "enum": zones,
    })
});

string_schema!(
    Ipv4Net,
    "Ipv4Net",
    json_schema!({
        "description": "An IPv4 address with its prefix length, like `192.168.100.1/24`.",
        "type": "string",
        "pattern": format!("^{}/(3[0-2]|[0-2]?[0-9])$", ipv4()),
    })
);

string_schema!(
    PortSpec,
    "PortSpec",
    json_schema!({
        "description": "A port (1-65535) or an inclusive range like \"8000-8100\" whose first port is not above its last.",
        "anyOf": [
            { "type": "integer", "minimum": 1, "maximum": 65535 },
            { "type": "string", "pattern": "^[0-9]+(-[0-9]+)?$" },
        ],
    })
);

string_schema!(
    Publish,
    "Publish",
    json_schema!({
        "description": "A published port `[HOST-IP:]HOST-PORT:CONTAINER-PORT[/tcp|udp]`, as podman's -p; ports 1-65535.",
        "type": "string",
        "pattern": format!("^({}:)?[0-9]+:[0-9]+(/(tcp|udp))?$", ipv4()),
    })
);

string_schema!(
    VolumeMount,
    "VolumeMount",
    json_schema!({
        "description": "`NAME:/path[:OPTS]` (a named volume) or `/data/apps/...:/path[:OPTS]`; OPTS from ro, rw, z, Z; the container path is a clean absolute path; no path ends in a backslash or white space.",
        "type": "string",
        "pattern": "^([A-Za-z0-9][A-Za-z0-9_.-]{0,127}|/data/apps(/[^:]*)?):/[^:,]*(:(ro|rw|z|Z)(,(ro|rw|z|Z))*)?$",
    })
);

string_schema!(
    ContainerName,
    "ContainerName",
    json_schema!({
        "description": "A container name: [a-z0-9][a-z0-9-]*, at most 63 characters.",
        "type": "string",
        "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
    })
);

string_schema!(
    ImageRef,
    "ImageRef",
    json_schema!({
        "description": "An OCI image reference `[REGISTRY[:PORT]/]PATH[:TAG][@ALGO:HEX]` (give the registry, e.g. docker.io/library/nginx: short names warn), or `oci-archive:/data/apps/DIR/FILE.tar`, an image archive shipped in the bundle. The full grammar is checked by `atomixctl validate`.",
        "type": "string",
        "minLength": 1,
        "pattern": "^[^\\s]+$",
    })
);

string_schema!(SshPublicKey, "SshPublicKey", {
    let types = SSH_KEY_TYPES.join("|");
    json_schema!({
        "description": format!(
            "An OpenSSH public key line `TYPE BASE64 [COMMENT]`, TYPE one of {}; the key data must decode and name the same type (checked by `atomixctl validate`). Options such as from=\"...\" are not accepted.",
            SSH_KEY_TYPES.join(", ")
        ),
        "type": "string",
        "pattern": format!("^\\s*({types})\\s+[A-Za-z0-9+/]+={{0,2}}(\\s.*)?$"),
    })
});

string_schema!(
    LeaseTime,
    "LeaseTime",
    json_schema!({
        "description": "A DHCP lease time: N, Ns, Nm, Nh, Nd, Nw (at most 9 digits) or \"infinite\".",
        "type": "string",
        "pattern": "^(infinite|[0-9]{1,9}[smhdw]?)$",
    })
);

string_schema!(
    UpdateUrl,
    "UpdateUrl",
    json_schema!({
        "description": "An http:// or https:// URL, no white space or control characters.",
        "type": "string",
        "pattern": "^https?://[^/\\s][^\\s]*$",
    })
);

string_schema!(
    UpdateInterval,
    "UpdateInterval",
    json_schema!({
        "description": format!(
            "A duration like \"6h\", \"90min\" or \"1d 12h\" (s, m/min, h, d, w...), whole seconds, from {} to {} seconds (5 minutes to 365 days).",
            UpdateInterval::MIN,
            UpdateInterval::MAX
        ),
        "type": "string",
        "minLength": 1,
    })
);

string_schema!(
    Tenant,
    "Tenant",
    json_schema!({
        "description": "A hawkBit tenant: letters, digits, '.', '_' and '-', 1-64 characters.",
        "type": "string",
        "pattern": "^[A-Za-z0-9._-]{1,64}$",
        "not": { "enum": [".", ".."] },
    })
);

string_schema!(
    ControllerId,
    "ControllerId",
    json_schema!({
        "description": "The device's hawkBit controller id: letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 253 characters.",
        "type": "string",
        "maxLength": 253,
        "pattern": "^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
    })
);

string_schema!(
    TokenFile,
    "TokenFile",
    json_schema!({
        "description": "The file holding the hawkBit token: a clean absolute path under /data (no empty, '.' or '..' components, no control characters).",
        "type": "string",
        "maxLength": TokenFile::MAX_LEN,
        "pattern": "^/data(/([^/\\x00-\\x1f\\x7f.][^/\\x00-\\x1f\\x7f]*|\\.[^/\\x00-\\x1f\\x7f.][^/\\x00-\\x1f\\x7f]*|\\.\\.[^/\\x00-\\x1f\\x7f]+))+$",
    })
);
