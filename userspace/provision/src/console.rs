//! The bootstrap web console (`/`): self-contained HTML, CSS and JS compiled into the
//! binary from `web/`, so it works with no internet and no files on the device. The
//! Content-Security-Policy allows this origin only: nothing external can load.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../web/index.html");
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
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
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
        for attr in ["src=\"", "href=\""] {
            for (i, _) in INDEX.match_indices(attr) {
                let value = &INDEX[i + attr.len()..];
                assert!(
                    value.starts_with('/') || value.starts_with('#'),
                    "index.html: {}",
                    &value[..value.len().min(40)]
                );
            }
        }
        assert!(!CSS.contains("url(") && !CSS.contains("@import"));
        for (name, text) in [
            ("index.html", INDEX),
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
            assert!(INDEX.contains(asset), "index.html loads {asset}");
        }
    }
}
