//! The bootstrap web console (`/`): self-contained HTML, CSS and JS compiled into the
//! binary from `web/`, so it works with no internet and no files on the device. The
//! Content-Security-Policy allows this origin only: nothing external can load.
//!
//! The page carries the API's constants ([`atomix_api::Contract`]: routes, headers, the
//! signing namespace, body types, limits) as a JSON data block, which `console.js` reads
//! instead of repeating them.

use std::sync::OnceLock;

use atomix_api::Contract;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// `web/index.html`, with [`CONTRACT_MARK`] where the contract goes.
const INDEX: &str = include_str!("../web/index.html");
const CONTRACT_MARK: &str = "{{contract}}";
const CSS: &str = include_str!("../web/console.css");
const JS: &str = include_str!("../web/console.js");
const SHA256_JS: &str = include_str!("../web/sha256.js");

/// Same origin only; `blob:` for the "download the message" link.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", page()) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/sha256.js",
            get(|| async { asset("text/javascript; charset=utf-8", SHA256_JS) }),
        )
}

/// The page as served, rendered once.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| render(INDEX, &Contract::current()))
}

/// `index` with `contract` in place of [`CONTRACT_MARK`]. It is JSON inside a `<script
/// type="application/json">` element (data, never run, so the CSP's `script-src 'self'`
/// allows it); `<` is escaped as `\u003c` so no value can end the element.
fn render(index: &str, contract: &Contract) -> String {
    let json = serde_json::to_string(contract)
        .expect("the contract serialises")
        .replace('<', "\\u003c");
    index.replacen(CONTRACT_MARK, &json, 1)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new image may change the console; never serve a stale one.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self-contained: every link in the page is same-origin, the CSS fetches nothing,
    /// and the only `http://` URL the JS makes is the device's own LAN address.
    #[test]
    fn the_console_loads_nothing_external() {
        let index = page();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in index.match_indices(attr) {
                let value = &index[i + attr.len()..];
                assert!(
                    value.starts_with('/') || value.starts_with('#'),
                    "index.html: {}",
                    &value[..value.len().min(40)]
                );
            }
        }
        assert!(!CSS.contains("url(") && !CSS.contains("@import"));
        for (name, text) in [
            ("index.html", index),
            ("console.js", JS),
            ("sha256.js", SHA256_JS),
        ] {
            assert!(!text.contains("https://"), "{name}");
            for line in text.lines().filter(|l| l.contains("http://")) {
                let line = line.trim_start();
                assert!(
                    line.starts_with("//") || line.contains("`http://${"),
                    "{name}: {line}"
                );
            }
        }
        for asset in ["/console.css", "/console.js", "/sha256.js"] {
            assert!(index.contains(asset), "index.html loads {asset}");
        }
    }

    /// The served page holds the contract, literally as the wire has it, in the data
    /// block `console.js` reads.
    #[test]
    fn the_page_carries_the_contract() {
        let index = page();
        let start = r#"<script id="contract" type="application/json">"#;
        let json = &index[index.find(start).expect("the contract's element") + start.len()..];
        let json = &json[..json.find("</script>").expect("the element ends")];
        let contract: Contract = serde_json::from_str(json).unwrap();
        assert_eq!(contract, Contract::current());
        for literal in [
            r#""namespace":"atomix-provision""#,
            r#""nonce":"x-atomix-nonce""#,
            r#""content_sha256":"x-atomix-content-sha256""#,
            r#""signature":"x-atomix-signature""#,
            r#""config":"/api/config""#,
            r#""config_text_bytes":262144"#,
            r#""config_bundle_bytes":16777216"#,
            r#""update":"/api/update""#,
            r#""factory_reset":"/api/factory-reset""#,
            r#""job_list":"/api/jobs""#,
            r#""factory_reset_confirm":"erase""#,
        ] {
            assert!(json.contains(literal), "{literal} in {json}");
        }
        assert!(!index.contains(CONTRACT_MARK));
        assert!(
            INDEX.contains(CONTRACT_MARK),
            "index.html marks where it goes"
        );
        let hostile = Contract {
            namespace: "</script><script>alert(1)</script>".into(),
            ..Contract::current()
        };
        assert!(!render(INDEX, &hostile).contains("</script><script>"));
    }

    /// What the contract holds is read from it, never repeated in the page's code.
    #[test]
    fn the_console_repeats_no_constant() {
        for (name, text) in [("index.html", INDEX), ("console.js", JS)] {
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for constant in [
                "atomix-provision",
                "/api/",
                "x-atomix-",
                "X-Atomix-",
                "application/toml",
                "application/x-tar",
                "application/gzip",
                "application/octet-stream",
                "8080",
                "1 MiB",
                "16 MiB",
                "2 minutes",
            ] {
                assert!(!code.contains(constant), "{name} repeats {constant:?}");
            }
        }
    }
}
