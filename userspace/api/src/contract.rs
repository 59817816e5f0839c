//! The constants of this crate as one JSON document, for clients that cannot link it:
//! the web console is handed [`Contract::current`] inside the page the service serves,
//! and builds its requests, the signed message and its sentences from it.

use serde::{Deserialize, Serialize};

use crate::{headers, limits, media_types, routes, signing, types};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// The service's port.
    pub port: u16,
    /// The SSHSIG namespace and first line of the signed message.
    pub namespace: String,
    pub routes: Routes,
    pub headers: Headers,
    pub media_types: MediaTypes,
    pub limits: Limits,
    /// The word a factory reset is confirmed with ([`crate::FactoryReset::CONFIRM`]).
    pub factory_reset_confirm: String,
}

/// [`crate::routes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    pub health: String,
    pub nonce: String,
    pub validate: String,
    pub config: String,
    pub update: String,
    pub factory_reset: String,
    /// The recent jobs (signed `GET`).
    pub job_list: String,
    /// The prefix of a job's path.
    pub jobs: String,
}

/// [`crate::headers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    pub nonce: String,
    pub content_sha256: String,
    pub signature: String,
}

/// [`crate::media_types`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTypes {
    pub config: String,
    pub tar: String,
    pub gzip: String,
    pub update_bundle: String,
    pub json: String,
}

/// [`crate::limits`], in bytes and seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub config_text_bytes: u64,
    pub config_bundle_bytes: u64,
    pub update_bundle_bytes: u64,
    pub factory_reset_bytes: u64,
    pub job_list_len: usize,
    pub nonce_ttl_secs: u64,
}

impl Contract {
    /// The contract this build speaks.
    pub fn current() -> Contract {
        Contract {
            port: routes::PORT,
            namespace: signing::NAMESPACE.into(),
            routes: Routes {
                health: routes::HEALTH.into(),
                nonce: routes::NONCE.into(),
                validate: routes::VALIDATE.into(),
                config: routes::CONFIG.into(),
                update: routes::UPDATE.into(),
                factory_reset: routes::FACTORY_RESET.into(),
                job_list: routes::JOB_LIST.into(),
                jobs: routes::JOBS.into(),
            },
            headers: Headers {
                nonce: headers::NONCE.into(),
                content_sha256: headers::CONTENT_SHA256.into(),
                signature: headers::SIGNATURE.into(),
            },
            media_types: MediaTypes {
                config: media_types::CONFIG.into(),
                tar: media_types::TAR.into(),
                gzip: media_types::GZIP.into(),
                update_bundle: media_types::UPDATE_BUNDLE.into(),
                json: media_types::JSON.into(),
            },
            limits: Limits {
                config_text_bytes: limits::CONFIG_TEXT_BYTES,
                config_bundle_bytes: limits::CONFIG_BUNDLE_BYTES,
                update_bundle_bytes: limits::UPDATE_BUNDLE_BYTES,
                factory_reset_bytes: limits::FACTORY_RESET_BYTES,
                job_list_len: limits::JOB_LIST_LEN,
                nonce_ttl_secs: limits::NONCE_TTL.as_secs(),
            },
            factory_reset_confirm: types::FactoryReset::CONFIRM.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_receives_every_constant() {
        assert_eq!(
            serde_json::to_string(&Contract::current()).unwrap(),
            concat!(
                r#"{"port":8080,"namespace":"atomix-provision","#,
                r#""routes":{"health":"/api/health","nonce":"/api/nonce","validate":"/api/validate","#,
                r#""config":"/api/config","update":"/api/update","factory_reset":"/api/factory-reset","#,
                r#""job_list":"/api/jobs","jobs":"/api/jobs/"},"#,
                r#""headers":{"nonce":"x-atomix-nonce","content_sha256":"x-atomix-content-sha256","#,
                r#""signature":"x-atomix-signature"},"#,
                r#""media_types":{"config":"application/toml","tar":"application/x-tar","#,
                r#""gzip":"application/gzip","update_bundle":"application/octet-stream","#,
                r#""json":"application/json"},"#,
                r#""limits":{"config_text_bytes":262144,"config_bundle_bytes":16777216,"#,
                r#""update_bundle_bytes":2147483648,"factory_reset_bytes":1024,"job_list_len":20,"#,
                r#""nonce_ttl_secs":120},"factory_reset_confirm":"erase"}"#,
            )
        );
    }
}
