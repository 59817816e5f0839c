//! The API contract through the router (`tower::ServiceExt::oneshot`), with the fake
//! system on a temporary root, and once over a real socket.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atomix_provision::api::app;
use atomix_provision::apply::{Admin, Applier};
use atomix_provision::failpoints::Failpoints;
use atomix_provision::paths::Paths;
use atomix_provision::service::Service;
use atomix_provision::system::FakeSystem;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use common::{config_with_admin, keygen, signature_header, tar, Key, EXAMPLE};

struct Fixture {
    dir: tempfile::TempDir,
    svc: Arc<Service>,
    key: Key,
}

fn fixture(failpoints: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let paths = Paths::new(dir.path().join("root"));
    std::fs::create_dir_all(paths.provisioning_keys().parent().unwrap()).unwrap();
    std::fs::write(paths.provisioning_keys(), &key.public).unwrap();
    let record = boot_state::BootRecord {
        slot: boot_state::Slot::B,
        build_id: Some("20261127.7".into()),
        root_partuuid: "x".into(),
        root_device: "/dev/vda4".into(),
        disk: "/dev/vda".into(),
        boot_device: None,
        fresh_flash: false,
        partitions_created: vec![],
        data_formatted: false,
        data_device: None,
        data_fstype: None,
        steps: vec![],
    };
    boot_state::write_record(&paths.boot_record(), &record).unwrap();
    let applier = Applier {
        paths,
        system: Arc::new(FakeSystem::default()),
        failpoints: Failpoints::parse(failpoints).unwrap(),
        admin: Admin::from_passwd(""),
    };
    let svc = Service::new(applier, None, None);
    Fixture { dir, svc, key }
}

async fn call(
    svc: &Arc<Service>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(Arc::clone(svc))
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

async fn nonce(svc: &Arc<Service>) -> String {
    let (status, _, v) = call(svc, "GET", "/api/nonce", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    v["nonce"].as_str().unwrap().to_owned()
}

/// POST /api/config signed by `key` with a fresh nonce.
async fn post_config(
    svc: &Arc<Service>,
    key: &Key,
    content_type: &str,
    body: &[u8],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let n = nonce(svc).await;
    let sig = signature_header(key, &n, body);
    call(
        svc,
        "POST",
        "/api/config",
        &[
            ("content-type", content_type),
            ("x-atomix-nonce", &n),
            ("x-atomix-signature", &sig),
        ],
        body.to_vec(),
    )
    .await
}

async fn wait_job(svc: &Arc<Service>, url: &str) -> Value {
    for _ in 0..300 {
        let (status, _, v) = call(svc, "GET", url, &[], vec![]).await;
        assert_eq!(status, StatusCode::OK);
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {url} did not finish");
}

#[tokio::test]
async fn health_and_nonce() {
    let f = fixture("");
    let (status, _, v) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["provisioned"], false);
    assert_eq!(v["build_id"], "20261127.7");
    assert_eq!(v["slot"], "b");
    assert_eq!(v["last_import_error"], Value::Null);
    let (_, _, n) = call(&f.svc, "GET", "/api/nonce", &[], vec![]).await;
    assert_eq!(n["nonce"].as_str().unwrap().len(), 64);
    assert_eq!(n["expires_in"], 120);
    let (status, _, v) = call(&f.svc, "GET", "/api/nope", &[], vec![]).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not found"))
    );
}

#[tokio::test]
async fn validate_statuses() {
    let f = fixture("");
    let toml = [("content-type", "application/toml")];
    let (status, _, v) = call(&f.svc, "POST", "/api/validate", &toml, EXAMPLE.into()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["valid"], true);
    assert!(v["warnings"].is_array());

    let bad = EXAMPLE.replace("hostname = \"edge-042\"", "hostname = \"edge 042\"");
    let plain = [("content-type", "text/plain; charset=utf-8")];
    let (status, _, v) = call(&f.svc, "POST", "/api/validate", &plain, bad.into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 8);
    assert_eq!(v["errors"][0]["column"], 12);
    assert_eq!(v["errors"][0]["path"], "device.hostname");

    let json = [("content-type", "application/json")];
    let (status, _, v) = call(&f.svc, "POST", "/api/validate", &json, EXAMPLE.into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(v["error"].as_str().unwrap().contains("application/toml"));
    let (status, _, _) = call(&f.svc, "POST", "/api/validate", &[], EXAMPLE.into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let tar_ct = [("content-type", "application/x-tar")];
    let huge = vec![0u8; (16 << 20) + 1];
    let (status, _, v) = call(&f.svc, "POST", "/api/validate", &tar_ct, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].as_str().unwrap().contains("larger than"));
    let big_toml = vec![b'#'; (1 << 20) + 1];
    let (status, _, _) = call(&f.svc, "POST", "/api/validate", &toml, big_toml).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let evil = tar(&[
        ("config.toml", EXAMPLE.as_bytes()),
        ("apps/web/../../x", b"x"),
    ]);
    let (status, _, v) = call(&f.svc, "POST", "/api/validate", &tar_ct, evil).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["errors"][0]["path"], "apps/web/../../x");
    assert_eq!(v["errors"][0]["line"], Value::Null);
    let good = tar(&[
        ("config.toml", EXAMPLE.as_bytes()),
        ("apps/web/index.html", b"hi"),
    ]);
    let (status, _, _) = call(&f.svc, "POST", "/api/validate", &tar_ct, good).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !f.dir.path().join("root/data").exists(),
        "validate changes nothing"
    );
}

#[tokio::test]
async fn config_authentication_failures_are_401() {
    let f = fixture("");
    let body = EXAMPLE.as_bytes();
    let toml = ("content-type", "application/toml");
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &[toml], body.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"].as_str().unwrap().contains("x-atomix-nonce"),
        "{v}"
    );

    let sig = signature_header(&f.key, "00", body);
    let unknown = [toml, ("x-atomix-nonce", "00"), ("x-atomix-signature", &sig)];
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &unknown, body.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("nonce"), "{v}");

    let stranger = keygen(f.dir.path(), "stranger", "ed25519");
    let (status, _, v) = post_config(&f.svc, &stranger, "application/toml", body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("not trusted"), "{v}");

    // Signed over one body, sent with another; then the nonce is spent.
    let n = nonce(&f.svc).await;
    let sig = signature_header(&f.key, &n, body);
    let headers = [
        toml,
        ("x-atomix-nonce", n.as_str()),
        ("x-atomix-signature", &sig),
    ];
    let tampered = EXAMPLE.replace("edge-042", "edge-666");
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &headers, tampered.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    let (status, _, _) = call(&f.svc, "POST", "/api/config", &headers, body.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a nonce works once");
    assert!(!f.svc.provisioned());
    assert!(f.svc.tracker.running().is_none());
}

#[tokio::test]
async fn config_is_applied_as_a_job_and_admin_keys_are_trusted_after() {
    let f = fixture("");
    let admin = keygen(f.dir.path(), "admin", "ecdsa");
    let first = config_with_admin(&admin, "edge-001");
    let (status, headers, v) =
        post_config(&f.svc, &f.key, "application/toml", first.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let url = v["job"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], url.as_str());
    assert_eq!(url, format!("/api/jobs/{}", v["id"].as_str().unwrap()));
    let job = wait_job(&f.svc, &url).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["rollback"]["state"], "none");
    assert_eq!(job["result"]["generation"], 1);
    assert!(job["events"].as_array().unwrap().len() >= 13);
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["provisioned"], true);
    assert_eq!(health["generation"], 1);

    // Now the config's admin key may sign; the bundle's files land under /data/apps.
    let bundle = tar(&[
        (
            "config.toml",
            config_with_admin(&admin, "edge-002").as_bytes(),
        ),
        ("apps/web/index.html", b"hello"),
    ]);
    let (status, _, v) = post_config(&f.svc, &admin, "application/x-tar", &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let root = f.dir.path().join("root");
    assert_eq!(
        std::fs::read(root.join("data/apps/web/index.html")).unwrap(),
        b"hello"
    );
    assert_eq!(
        std::fs::read(root.join("data/config/generations/2/apps/web/index.html")).unwrap(),
        b"hello"
    );
    let source: Value = serde_json::from_slice(
        &std::fs::read(root.join("data/config/current/source.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(source["origin"], "api");
    assert!(source["signer"].as_str().unwrap().starts_with("SHA256:"));
}

#[tokio::test]
async fn invalid_or_unsupported_configs_create_no_job() {
    let f = fixture("");
    let bad = EXAMPLE.replace("schema = 1", "schema = 2");
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", bad.as_bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["errors"][0]["path"], "schema");
    let (status, _, _) = post_config(&f.svc, &f.key, "image/png", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = vec![0u8; (16 << 20) + 1];
    let (status, _, _) = post_config(&f.svc, &f.key, "application/gzip", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!f.dir.path().join("root/data/config/jobs").exists());
    assert!(!f.svc.provisioned());
}

#[tokio::test]
async fn a_second_apply_while_one_runs_is_409() {
    let f = fixture("units=sleep(1500)");
    let body = EXAMPLE.as_bytes();
    let (status, _, first) = post_config(&f.svc, &f.key, "application/toml", body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], first["job"]);
    assert_eq!(v["error"], "another apply job is running");
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["job"], first["job"]);
    let job = wait_job(&f.svc, first["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded");
}

#[tokio::test]
async fn a_failing_step_is_reported_with_its_rollback() {
    let f = fixture("hostname=error");
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["result"]["failed_step"], "hostname");
    assert_eq!(job["rollback"]["state"], "completed");
    assert_eq!(job["rollback"]["generation"], Value::Null);
    assert!(!f.svc.provisioned());
}

#[tokio::test]
async fn unknown_jobs_are_404() {
    let f = fixture("");
    for id in ["0123456789abcdef", "..%2F..%2Fetc", "x"] {
        let (status, _, v) = call(&f.svc, "GET", &format!("/api/jobs/{id}"), &[], vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert!(v["error"].is_string());
    }
}

#[tokio::test]
async fn over_a_real_socket() {
    let f = fixture("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(Arc::clone(&f.svc));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let key_path = f.key.private.clone();
    let public = f.key.public.clone();
    let result = tokio::task::spawn_blocking(move || {
        let key = Key {
            private: key_path,
            public,
        };
        let n = common::http(addr, "GET", "/api/nonce", &[], b"").json()["nonce"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = EXAMPLE.as_bytes();
        let sig = signature_header(&key, &n, body);
        let reply = common::http(
            addr,
            "POST",
            "/api/config",
            &[
                ("Content-Type", "application/toml"),
                ("X-Atomix-Nonce", &n),
                ("X-Atomix-Signature", &sig),
            ],
            body,
        );
        assert_eq!(
            reply.status,
            202,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let url = reply.header("location").unwrap().to_owned();
        for _ in 0..300 {
            let job = common::http(addr, "GET", &url, &[], b"").json();
            if job["state"] == "succeeded" {
                return common::http(addr, "GET", "/api/health", &[], b"").json();
            }
            assert_ne!(job["state"], "failed", "{job}");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the job did not finish");
    })
    .await
    .unwrap();
    assert_eq!(result["provisioned"], true);
    server.abort();
    assert!(Path::new(&f.dir.path().join("root/data/config/current")).exists());
}

#[tokio::test]
async fn the_console_and_its_assets_are_served_same_origin_only() {
    let f = fixture("");
    for (path, ct) in [
        ("/", "text/html"),
        ("/console.css", "text/css"),
        ("/console.js", "text/javascript"),
        ("/sha256.js", "text/javascript"),
    ] {
        let (status, headers, _) = call(&f.svc, "GET", path, &[], vec![]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let got = headers["content-type"].to_str().unwrap();
        assert!(got.starts_with(ct), "{path}: {got}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
    }
    let (status, _, _) = call(&f.svc, "GET", "/console.txt", &[], vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
