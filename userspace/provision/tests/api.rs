//! The API contract through the router (`tower::ServiceExt::oneshot`), with the fake
//! system on a temporary root, and once over a real socket.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atomix_provision::announce::FakeAnnouncer;
use atomix_provision::api::app;
use atomix_provision::apply::{Admin, Applier};
use atomix_provision::paths::Paths;
use atomix_provision::service::Service;
use atomix_provision::system::FakeSystem;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use failpoints::Failpoints;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use common::{sha256_hex, signature_header, tar};
use test_support::{config_with_admin, keygen, Key, EXAMPLE};

struct Fixture {
    dir: tempfile::TempDir,
    svc: Arc<Service>,
    key: Key,
    sys: Arc<FakeSystem>,
    announcer: Arc<FakeAnnouncer>,
}

fn fixture(failpoints: &str) -> Fixture {
    fixture_with(failpoints, FakeSystem::default())
}

fn fixture_with(failpoints: &str, sys: FakeSystem) -> Fixture {
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
    let sys = Arc::new(sys);
    let applier = Applier {
        paths,
        system: sys.clone(),
        failpoints: Failpoints::parse(failpoints).unwrap(),
        admin: Admin::from_passwd(""),
    };
    let announcer = Arc::new(FakeAnnouncer::default());
    let svc = Service::new(applier, announcer.clone(), None, None);
    Fixture {
        dir,
        svc,
        key,
        sys,
        announcer,
    }
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
            ("x-atomix-content-sha256", &sha256_hex(body)),
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

    let digest = sha256_hex(body);
    let sig = signature_header(&f.key, "00", body);
    let unknown = [
        toml,
        ("x-atomix-nonce", "00"),
        ("x-atomix-content-sha256", &digest),
        ("x-atomix-signature", &sig),
    ];
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &unknown, body.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("nonce"), "{v}");

    let stranger = keygen(f.dir.path(), "stranger", "ed25519");
    let (status, _, v) = post_config(&f.svc, &stranger, "application/toml", body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("not trusted"), "{v}");

    // A declared SHA-256 other than the signed one: 401 from the headers alone.
    let n = nonce(&f.svc).await;
    let sig = signature_header(&f.key, &n, body);
    let tampered = EXAMPLE.replace("edge-042", "edge-666");
    let lying = [
        toml,
        ("x-atomix-nonce", n.as_str()),
        ("x-atomix-content-sha256", &sha256_hex(tampered.as_bytes())),
        ("x-atomix-signature", &sig),
    ];
    let (status, _, v) = call(
        &f.svc,
        "POST",
        "/api/config",
        &lying,
        tampered.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    // The signed SHA-256 with another body: 400 once the body has arrived.
    let headers = [
        toml,
        ("x-atomix-nonce", n.as_str()),
        ("x-atomix-content-sha256", &digest),
        ("x-atomix-signature", &sig),
    ];
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &headers, tampered.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("nothing was stored"),
        "{v}"
    );
    assert!(!f.svc.provisioned());
    assert!(f.svc.tracker.running().is_none());
    // Neither refusal spent the nonce; the accepted request does.
    let (status, _, v) = call(&f.svc, "POST", "/api/config", &headers, body.into()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, _, v2) = call(&f.svc, "POST", "/api/config", &headers, body.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a nonce works once: {v2}");
    wait_job(&f.svc, v["job"].as_str().unwrap()).await;
}

/// 413 (declared) before 401 before 415 and 422; none of them spends the nonce.
#[tokio::test]
async fn status_order_and_refusals_keep_the_nonce() {
    let f = fixture("");
    let n = nonce(&f.svc).await;
    let signed = |ct: &'static str, body: &[u8]| {
        let sig = signature_header(&f.key, &n, body);
        (ct, sha256_hex(body), sig)
    };
    let send = |(ct, digest, sig): (&'static str, String, String), body: Vec<u8>| {
        let svc = Arc::clone(&f.svc);
        let n = n.clone();
        async move {
            let len = body.len().to_string();
            let headers = [
                ("content-type", ct),
                ("content-length", len.as_str()),
                ("x-atomix-nonce", n.as_str()),
                ("x-atomix-content-sha256", digest.as_str()),
                ("x-atomix-signature", sig.as_str()),
            ];
            call(&svc, "POST", "/api/config", &headers, body).await
        }
    };
    let big = vec![b'#'; (1 << 20) + 1];
    let (status, _, v) = send(signed("application/toml", &big), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (status, _, v) = call(
        &f.svc,
        "POST",
        "/api/config",
        &[("content-type", "application/json")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "401 before 415: {v}");
    let (status, _, v) = send(signed("application/json", b"{}"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    let bad = EXAMPLE.replace("hostname = \"edge-042\"", "hostname = \"edge 042\"");
    let (status, _, v) = send(signed("application/toml", bad.as_bytes()), bad.into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(f.svc.tracker.running().is_none());
    let (status, _, v) = send(
        signed("application/toml", EXAMPLE.as_bytes()),
        EXAMPLE.into(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the nonce was still good: {v}"
    );
    wait_job(&f.svc, v["job"].as_str().unwrap()).await;
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
    let f = fixture("units=sleep(6000)");
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
                ("X-Atomix-Content-SHA256", &sha256_hex(body)),
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

const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");

/// A stand-in for a RAUC bundle (the fake system never reads it).
fn bundle_bytes() -> Vec<u8> {
    (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

/// POST /api/update`query` with `body`, signed by `key` over `signed`.
async fn post_update(
    f: &Fixture,
    key: &Key,
    query: &str,
    signed: &[u8],
    body: &[u8],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let n = nonce(&f.svc).await;
    let sig = signature_header(key, &n, signed);
    call(
        &f.svc,
        "POST",
        &format!("/api/update{query}"),
        &[
            OCTETS,
            ("x-atomix-nonce", &n),
            ("x-atomix-content-sha256", &sha256_hex(signed)),
            ("x-atomix-signature", &sig),
        ],
        body.to_vec(),
    )
    .await
}

/// Files in the uploads directory.
fn uploads(f: &Fixture) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(f.dir.path().join("root/data/rauc/uploads"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn update_refusals_store_nothing_and_install_nothing() {
    let f = fixture("");
    let bundle = bundle_bytes();
    let (status, _, v) = post_update(&f, &f.key, "?reboot=soon", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "reboot=soon: give reboot=true or reboot=false");

    let n = nonce(&f.svc).await;
    let sig = signature_header(&f.key, &n, &bundle);
    let (status, _, v) = call(
        &f.svc,
        "POST",
        "/api/update",
        &[
            ("content-type", "application/x-tar"),
            ("x-atomix-nonce", &n),
            ("x-atomix-content-sha256", &sha256_hex(&bundle)),
            ("x-atomix-signature", &sig),
        ],
        bundle.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        v["error"],
        "unsupported content type \"application/x-tar\": send the RAUC bundle as application/octet-stream"
    );

    let huge = [OCTETS, ("content-length", "2147483649")];
    let (status, _, v) = call(&f.svc, "POST", "/api/update", &huge, bundle.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"], "the bundle is larger than 2147483648 bytes");

    let (status, _, v) = call(&f.svc, "POST", "/api/update", &[OCTETS], bundle.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"].as_str().unwrap().contains("x-atomix-nonce"),
        "{v}"
    );

    let stranger = keygen(f.dir.path(), "stranger", "ed25519");
    let (status, _, v) = post_update(&f, &stranger, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("not trusted"), "{v}");
    assert!(
        uploads(&f).is_empty(),
        "an untrusted signer's body is not stored"
    );

    // Signed over other bytes: stored, checked, refused and removed.
    let mut other = bundle.clone();
    other[1000] ^= 1;
    let (status, _, v) = post_update(&f, &f.key, "", &other, &bundle).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("nothing was stored"),
        "{v}"
    );
    assert!(
        f.dir.path().join("root/data/rauc/uploads").is_dir(),
        "it was stored"
    );
    assert!(uploads(&f).is_empty(), "{:?}", uploads(&f));

    assert!(f.sys.commands().is_empty(), "{:?}", f.sys.commands());
    assert!(f.svc.tracker.running().is_none());
    assert!(
        !f.dir.path().join("root/data/config/jobs").exists(),
        "no job"
    );
}

#[tokio::test]
async fn a_signed_bundle_is_installed_by_a_job_and_removed() {
    let f = fixture("");
    let admin = keygen(f.dir.path(), "admin", "ed25519");
    let config = config_with_admin(&admin, "edge-010");
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", config.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        wait_job(&f.svc, v["job"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    f.sys.actions.lock().unwrap().clear();

    // Once provisioned, the config's admin key signs updates too.
    let bundle = bundle_bytes();
    let (status, headers, v) = post_update(&f, &admin, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let url = v["job"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], url.as_str());
    let job = wait_job(&f.svc, &url).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "update");
    assert_eq!(job["origin"], "api");
    assert_eq!(job["result"]["generation"], 1, "the config is unchanged");
    assert_eq!(job["rollback"]["state"], "none");
    let steps: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["receive", "install", "install", "cleanup"]);
    let sha = {
        use sha2::Digest as _;
        atomix_api::hex(&sha2::Sha256::digest(&bundle))
    };
    let received = job["events"][0]["message"].as_str().unwrap();
    assert!(
        received.starts_with(&format!(
            "{} bytes, sha256 {sha}, signed by SHA256:",
            bundle.len()
        )),
        "{received}"
    );

    let cmds = f.sys.commands();
    let uploads_dir = f.dir.path().join("root/data/rauc/uploads");
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let installed = cmds[0].strip_prefix("rauc install ").unwrap();
    assert!(
        Path::new(installed).starts_with(&uploads_dir) && installed.ends_with(".raucb"),
        "{installed}"
    );
    assert!(!Path::new(installed).exists());
    assert!(uploads(&f).is_empty());
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["job"], Value::Null);
}

#[tokio::test]
async fn a_failing_install_fails_the_job_with_raucs_message() {
    let f = fixture_with("", FakeSystem::failing_on("rauc install"));
    let bundle = bundle_bytes();
    let (status, _, v) = post_update(&f, &f.key, "?reboot=true", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["result"]["failed_step"], "install");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("`rauc install ") && error.ends_with("` failed: fake failure"),
        "{error}"
    );
    assert!(uploads(&f).is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !f.sys.commands().iter().any(|c| c.contains("reboot")),
        "a failed update does not reboot"
    );
}

/// The running job is held by a failpoint for longer than the requests that must meet
/// it take: a signed 1.2 MB upload (hashed, checked by ssh-keygen) took more than 1.5 s
/// in a debug build on a starved machine, and then met no job at all.
#[tokio::test]
async fn updates_and_config_applies_are_single_flight() {
    let f = fixture("install=sleep(6000)");
    let bundle = bundle_bytes();
    let (status, _, first) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], first["job"]);
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], first["job"]);
    assert_eq!(uploads(&f).len(), 1, "only the running job's bundle");
    let job = wait_job(&f.svc, first["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(f.sys.commands().len(), 1, "{:?}", f.sys.commands());
    assert!(uploads(&f).is_empty());

    // And an update waits for a running apply.
    let f = fixture("units=sleep(6000)");
    let (status, _, apply) =
        post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], apply["job"]);
    assert!(uploads(&f).is_empty());
    wait_job(&f.svc, apply["job"].as_str().unwrap()).await;
}

#[tokio::test]
async fn one_upload_at_a_time_and_a_cut_off_upload_leaves_nothing() {
    use http_body_util::channel::Channel;
    let f = fixture("");
    let bundle = bundle_bytes();
    let n = nonce(&f.svc).await;
    let sig = signature_header(&f.key, &n, &bundle);
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
    let req = Request::builder()
        .method("POST")
        .uri("/api/update")
        .header(OCTETS.0, OCTETS.1)
        .header("x-atomix-nonce", &n)
        .header("x-atomix-content-sha256", sha256_hex(&bundle))
        .header("x-atomix-signature", &sig)
        .body(Body::new(body))
        .unwrap();
    let first = tokio::spawn(app(Arc::clone(&f.svc)).oneshot(req));
    tx.send_data(Bytes::copy_from_slice(&bundle[..1000]))
        .await
        .unwrap();
    for _ in 0..100 {
        if !uploads(&f).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(uploads(&f).len(), 1, "the first upload is being stored");

    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"],
        "another bundle upload is in progress; try again once it has finished"
    );

    // The client goes away mid-body: no job, no file.
    tx.abort(std::io::Error::other("connection reset"));
    let resp = first.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(uploads(&f).is_empty(), "{:?}", uploads(&f));
    assert!(f.sys.commands().is_empty());

    // The slot is free again.
    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    wait_job(&f.svc, v["job"].as_str().unwrap()).await;
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Every path under the root's `data/` with its content (a link: its target), to show
/// that a refused request wrote nothing.
fn data_tree(f: &Fixture) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.display().to_string();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((name, target.display().to_string().into_bytes()));
            } else if meta.is_dir() {
                out.push((name, vec![]));
                walk(&path, out);
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&f.dir.path().join("root/data"), &mut out);
    out.sort();
    out
}

/// Headers of a request signed by `key` over `signed`, declaring `declared` as the
/// body's SHA-256, with a fresh nonce.
async fn signed_headers(
    f: &Fixture,
    key: &Key,
    signed: &[u8],
    declared: &[u8],
) -> (String, String, String) {
    let n = nonce(&f.svc).await;
    let sig = signature_header(key, &n, signed);
    (n, sha256_hex(declared), sig)
}

async fn send_signed(
    f: &Fixture,
    method: &str,
    uri: &str,
    extra: &[(&str, &str)],
    (n, digest, sig): &(String, String, String),
    body: &[u8],
) -> (StatusCode, Value) {
    let mut headers = extra.to_vec();
    headers.extend([
        ("x-atomix-nonce", n.as_str()),
        ("x-atomix-content-sha256", digest.as_str()),
        ("x-atomix-signature", sig.as_str()),
    ]);
    let (status, _, v) = call(&f.svc, method, uri, &headers, body.to_vec()).await;
    (status, v)
}

/// A provisioned fixture (generation 1 applied through the API), for a reset to erase.
async fn provisioned(failpoints: &str) -> Fixture {
    let f = fixture(failpoints);
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // The import announces the provisioned device right after its job has finished:
    // wait for it, so that it is not taken for a later test's.
    let provisioned = || {
        f.announcer
            .published()
            .iter()
            .any(|p| p.announcement.provisioned)
    };
    for _ in 0..100 {
        if provisioned() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(provisioned(), "{:?}", f.announcer.calls());
    f.sys.actions.lock().unwrap().clear();
    f
}

const RESET: &[u8] = atomix_api::FactoryReset::BODY;

/// Every refusal of `POST /api/factory-reset` writes nothing (the whole data tree is
/// byte for byte what it was), keeps the device provisioned and spends no nonce; the
/// accepted request's headers do not work twice.
#[tokio::test]
async fn factory_reset_refusals_write_nothing() {
    let f = provisioned("").await;
    let before = data_tree(&f);
    let route = "/api/factory-reset";

    // No authentication at all.
    let (status, _, v) = call(&f.svc, "POST", route, &[JSON], RESET.to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    // Declared too large: 413 before anything else, unauthenticated or not.
    let big = vec![b' '; 2048];
    let (status, _, v) = call(
        &f.svc,
        "POST",
        route,
        &[JSON, ("content-length", "2048")],
        big.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Signed, but larger than the limit once streamed (no Content-Length).
    let h = signed_headers(&f, &f.key, &big, &big).await;
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &h, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Forged: an untrusted key; a nonce the device never issued; a declared SHA-256
    // other than the signed one; a signature that is not one.
    let stranger = keygen(f.dir.path(), "stranger", "ed25519");
    let h = signed_headers(&f, &stranger, RESET, RESET).await;
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not trusted"), "{v}");
    let unissued = (
        "0".repeat(64),
        sha256_hex(RESET),
        signature_header(&f.key, &"0".repeat(64), RESET),
    );
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &unissued, RESET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let lying = signed_headers(&f, &f.key, RESET, b"{}").await;
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &lying, b"{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (n, digest, _) = signed_headers(&f, &f.key, RESET, RESET).await;
    let garbage = (n, digest, "bm90IGEgc2lnbmF0dXJl".to_owned());
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &garbage, RESET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    // Authenticated, then refused: type, body other than the signed one, not confirmed
    // (another word, the empty body a job list signs, extra fields).
    for other in [
        &br#"{"confirm":"yes"}"#[..],
        b"",
        br#"{"confirm":"erase","x":1}"#,
    ] {
        let h = signed_headers(&f, &f.key, other, other).await;
        let (status, v) = send_signed(&f, "POST", route, &[JSON], &h, other).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(r#"{"confirm":"erase"}"#),
            "{v}"
        );
    }
    // (Nonces are issued per peer, four at most: `h` is the last one issued here.)
    let h = signed_headers(&f, &f.key, RESET, RESET).await;
    let (status, v) = send_signed(
        &f,
        "POST",
        route,
        &[("content-type", "text/plain")],
        &h,
        RESET,
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &h, br#"{"confirm":"yes!!"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    assert_eq!(data_tree(&f), before, "no refusal wrote a byte");
    assert!(f.svc.provisioned());
    assert!(f.svc.tracker.running().is_none());
    assert!(f.sys.commands().is_empty(), "{:?}", f.sys.commands());

    // The first refusal of `h` (415) left its nonce usable; once accepted, it is spent.
    let (status, v) = send_signed(&f, "POST", route, &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, replay) = send_signed(&f, "POST", route, &[JSON], &h, RESET).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a replayed reset: {replay}"
    );
    wait_job(&f.svc, v["job"].as_str().unwrap()).await;
}

/// An accepted reset unprovisions at once, marks /data, records its job and reboots;
/// what the containers and the service hold under /data stays until the next boot's
/// erase ([`reset::complete_pending`], run by restore and serve at start).
#[tokio::test]
async fn a_factory_reset_unprovisions_reboots_and_the_next_boot_erases() {
    let f = provisioned("").await;
    let data = f.dir.path().join("root/data");
    let h = signed_headers(&f, &f.key, RESET, RESET).await;
    let (status, v) = send_signed(&f, "POST", "/api/factory-reset", &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    assert_eq!(job["kind"], "factory-reset");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["previous_generation"], 1);
    let steps: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["reset", "reset", "reboot"]);
    assert!(!f.svc.provisioned(), "unprovisioned before the reboot");
    assert!(data.join("atomix/factory-reset").is_file());
    assert!(
        data.join("config/generations/1/config.toml").is_file(),
        "erased only at the next boot"
    );
    // The job holds the single flight until the reboot is requested.
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    for _ in 0..100 {
        if f.sys.commands().iter().any(|c| c == "systemctl reboot") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.sys.commands(), ["systemctl reboot"]);

    let paths = Paths::new(f.dir.path().join("root"));
    assert!(atomix_provision::reset::complete_pending(&paths).unwrap());
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "{:?}",
        data_tree(&f)
    );
}

/// Single flight both ways: no reset while a job runs, no job while a reset runs.
#[tokio::test]
async fn a_factory_reset_and_other_jobs_are_single_flight() {
    let f = fixture("units=sleep(6000)");
    let (status, _, apply) =
        post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let h = signed_headers(&f, &f.key, RESET, RESET).await;
    let (status, v) = send_signed(&f, "POST", "/api/factory-reset", &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], apply["job"]);
    assert!(!f.dir.path().join("root/data/atomix/factory-reset").exists());
    wait_job(&f.svc, apply["job"].as_str().unwrap()).await;

    let f = fixture("reset=sleep(6000)");
    let h = signed_headers(&f, &f.key, RESET, RESET).await;
    let (status, reset) = send_signed(&f, "POST", "/api/factory-reset", &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reset}");
    let (status, _, v) = post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], reset["job"]);
    let bundle = bundle_bytes();
    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let h = signed_headers(&f, &f.key, RESET, RESET).await;
    let (status, v) = send_signed(&f, "POST", "/api/factory-reset", &[JSON], &h, RESET).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["job"], reset["job"]);
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["job"], reset["job"]);
    wait_job(&f.svc, reset["job"].as_str().unwrap()).await;
}

/// `GET /api/jobs` answers only a request signed over the empty body, once per nonce;
/// refusals read nothing out.
#[tokio::test]
async fn the_job_list_is_signed_and_spends_its_nonce() {
    let f = provisioned("").await;
    let route = "/api/jobs";
    let (status, _, v) = call(&f.svc, "GET", route, &[], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v.get("jobs").is_none());
    let (status, _, v) = call(
        &f.svc,
        "GET",
        route,
        &[("content-length", "5")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let stranger = keygen(f.dir.path(), "stranger", "ed25519");
    let h = signed_headers(&f, &stranger, b"", b"").await;
    let (status, v) = send_signed(&f, "GET", route, &[], &h, b"").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    // Signed over a body, sent with none; a body streamed without Content-Length.
    let h = signed_headers(&f, &f.key, b"x", b"x").await;
    let (status, v) = send_signed(&f, "GET", route, &[], &h, b"").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = send_signed(&f, "GET", route, &[], &h, b"x").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

    let h = signed_headers(&f, &f.key, b"", b"").await;
    let (status, v) = send_signed(&f, "GET", route, &[], &h, b"").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{v}");
    assert_eq!(jobs[0]["kind"], "config");
    assert!(jobs[0]["events"].as_array().unwrap().len() >= 13);
    let (status, v) = send_signed(&f, "GET", route, &[], &h, b"").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a replayed list: {v}");

    // The empty body's signature starts no update.
    let h = signed_headers(&f, &f.key, b"", b"").await;
    let (status, v) = send_signed(&f, "POST", "/api/update", &[OCTETS], &h, b"").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(uploads(&f).is_empty());
    assert!(f.sys.commands().is_empty());
}

/// Health names the most recent update job, across restarts of the service.
#[tokio::test]
async fn health_names_the_last_update_job() {
    let f = fixture("");
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["last_update"], Value::Null);
    let bundle = bundle_bytes();
    let (status, _, v) = post_update(&f, &f.key, "", &bundle, &bundle).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    wait_job(&f.svc, v["job"].as_str().unwrap()).await;
    let (_, _, health) = call(&f.svc, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["last_update"], v["job"]);
    let again = Service::new(
        f.svc.applier.clone(),
        Arc::new(FakeAnnouncer::default()),
        None,
        None,
    );
    let (_, _, health) = call(&again, "GET", "/api/health", &[], vec![]).await;
    assert_eq!(health["last_update"], v["job"]);
}

/// The announcement as published (`crate::announce`): what, on which ports, and when
/// again. The fake announcer stands in for the multicast DNS responder.
mod announcement {
    use super::*;
    use atomix_provision::announce::{mac_path, Announced};

    fn with_mac(f: &Fixture) {
        let mac = mac_path(&f.svc.paths);
        std::fs::create_dir_all(mac.parent().unwrap()).unwrap();
        std::fs::write(&mac, "52:54:00:a7:00:01\n").unwrap();
    }

    #[tokio::test]
    async fn unprovisioned_on_both_ports_once_until_something_changes() {
        let f = fixture("");
        f.svc.announce();
        with_mac(&f);
        f.svc.announce();
        f.svc.announce();
        let published = f.announcer.published();
        assert_eq!(published.len(), 2, "{published:?}");
        assert_eq!(published[0].announcement.name, "atomixos", "no MAC yet");
        let p = &published[1];
        assert_eq!(p.announcement.name, "atomixos-0001");
        assert_eq!(p.host, "atomixos-0001", "not every fresh device's atomixos");
        assert_eq!(p.port, 8080);
        assert_eq!(p.interfaces, ["eth0", "eth1"]);
        assert_eq!(
            p.announcement.txt(),
            [
                ("build_id", "20261127.7".to_owned()),
                ("slot", "b".to_owned()),
                ("provisioned", "false".to_owned()),
                ("name", "atomixos-0001".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn provisioning_announces_the_host_name_on_the_lan_and_a_stop_withdraws() {
        let f = fixture("");
        with_mac(&f);
        f.svc.announce();
        let (status, _, v) =
            post_config(&f.svc, &f.key, "application/toml", EXAMPLE.as_bytes()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        let job = wait_job(&f.svc, v["job"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        for _ in 0..100 {
            if f.announcer.published().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let published = f.announcer.published();
        assert_eq!(published.len(), 2, "{published:?}");
        let p = &published[1];
        assert_eq!(p.announcement.name, "edge-042");
        assert!(p.announcement.provisioned);
        assert_eq!(p.host, "edge-042");
        assert_eq!(p.interfaces, ["eth1"]);
        assert_eq!(p.fullname(), "edge-042._atomix._tcp.local.");

        f.svc.announce();
        assert_eq!(f.announcer.published().len(), 2, "nothing changed");
        f.svc.withdraw();
        f.svc.withdraw();
        assert_eq!(
            f.announcer.calls().last(),
            Some(&Announced::Withdrawn),
            "{:?}",
            f.announcer.calls()
        );
        let withdrawn = f.announcer.calls();
        assert_eq!(
            withdrawn
                .iter()
                .filter(|c| **c == Announced::Withdrawn)
                .count(),
            1,
            "withdrawn once: {withdrawn:?}"
        );
        // The service is stopping: nothing is announced after the withdrawal.
        f.svc.announce();
        assert_eq!(f.announcer.published().len(), 2);
        assert_eq!(f.announcer.calls().last(), Some(&Announced::Withdrawn));
    }

    #[tokio::test]
    async fn a_failed_publication_is_tried_again() {
        let f = fixture("");
        *f.announcer.failing.lock().unwrap() = true;
        f.svc.announce();
        assert!(f.announcer.calls().is_empty());
        *f.announcer.failing.lock().unwrap() = false;
        f.svc.announce();
        assert_eq!(f.announcer.published().len(), 1);
        f.svc.withdraw();
        assert_eq!(f.announcer.calls().last(), Some(&Announced::Withdrawn));
    }
}
