//! The configuration reference (docs/configuration.md) lists every key of the schema
//! types; the keys are read from the types themselves (serde's field lists), so a field
//! added without documentation fails here.

use serde::de::{self, Deserialize, Visitor};

use atomix_config::schema::*;

/// A deserializer that only records the field names serde asks for.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

fn fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    assert!(!names.is_empty());
    names
}

#[test]
fn every_schema_key_is_documented() {
    let doc = include_str!("../../../docs/configuration.md");
    let tables: Vec<(&str, Vec<&str>)> = vec![
        ("", fields::<Config>()),
        ("device.", fields::<Device>()),
        ("admin.", fields::<Admin>()),
        ("network.", fields::<Network>()),
        ("network.wan.", fields::<Wan>()),
        ("network.lan.", fields::<Lan>()),
        ("network.lan.dhcp-range.", fields::<DhcpRange>()),
        ("time.", fields::<Time>()),
        ("firewall.", fields::<Firewall>()),
        ("firewall.allow.", fields::<AllowRule>()),
        ("containers.", fields::<Container>()),
        ("update.", fields::<Update>()),
        ("update.hawkbit.", fields::<Hawkbit>()),
    ];
    let mut missing = Vec::new();
    for (prefix, keys) in &tables {
        for key in keys {
            let full = format!("{prefix}{key}");
            // Tables that only group others (network, time, firewall...) need no row.
            let is_group = tables.iter().any(|(p, _)| *p == format!("{full}."));
            if !doc.contains(&format!("| `{full}` |")) && !is_group {
                missing.push(full);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
    // And the other way: every documented key exists.
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = line.trim_start_matches("| `").split('`').next().unwrap();
        let known = tables
            .iter()
            .any(|(p, ks)| ks.iter().any(|k| format!("{p}{k}") == key));
        assert!(
            known,
            "docs/configuration.md documents {key}, which the schema lacks"
        );
    }
}
