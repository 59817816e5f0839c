//! The DDI client against recorded server answers: goosebit 0.2.12's own (captured with
//! curl, `docs/fleet.md`) and hawkBit's as its DDI documentation gives them.

use std::path::Path;
use std::time::Duration;

use super::client::{controller_url, Client, Installer};
use super::decide::*;
use super::record::{ActionRecord, Phase, RecordStore};
use super::transport::{DdiError, FakeDdi, Method, Scripted, UreqDdi};
use super::wire::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("testdata/", $name))
    };
}

const GB_BASE: &str = "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043";
const GB_DEPLOYMENT: &str =
    "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043/deploymentBase/1";
const GB_DOWNLOAD: &str = "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043/download";
const HB_BASE: &str = "https://hawkbit.example.com/DEFAULT/controller/v1/edge-042";

fn boot(boot_id: &str, slot: &str, build: &str, good: bool) -> BootFacts {
    BootFacts {
        boot_id: boot_id.into(),
        slot: slot.into(),
        build_id: build.into(),
        slot_good: good,
    }
}

fn poll(text: &str) -> PollAnswer {
    serde_json::from_str(text).expect("a poll answer")
}

fn deployment(text: &str) -> DeploymentBase {
    serde_json::from_str(text).expect("a deployment")
}

#[test]
fn poll_answers_plan_what_to_fetch() {
    let gb = |name: &str| name.replace("edge-042", "edge-043");
    let cases: &[(&str, &str, PollPlan, u64)] = &[
        (
            "goosebit: registration asks for attributes",
            fixture!("goosebit-0.2.12/01-poll-register.json"),
            PollPlan {
                config_data: Some(gb(
                    "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-042/configData",
                )),
                cancel: None,
                deployment: None,
            },
            10,
        ),
        (
            "goosebit: no action",
            fixture!("goosebit-0.2.12/03-poll-no-action.json"),
            PollPlan {
                config_data: None,
                cancel: None,
                deployment: None,
            },
            30,
        ),
        (
            "goosebit: a deployment",
            fixture!("goosebit-0.2.12/04-poll-deployment.json"),
            PollPlan {
                config_data: None,
                cancel: None,
                deployment: Some(GB_DEPLOYMENT.into()),
            },
            30,
        ),
        (
            "hawkBit: a deployment and a request for attributes",
            fixture!("hawkbit/poll-deployment.json"),
            PollPlan {
                config_data: Some(format!("{HB_BASE}/configData")),
                cancel: None,
                deployment: Some(format!("{HB_BASE}/deploymentBase/5?c=-2122565939")),
            },
            43200,
        ),
        (
            "hawkBit: a cancel",
            fixture!("hawkbit/poll-cancel.json"),
            PollPlan {
                config_data: None,
                cancel: Some(format!("{HB_BASE}/cancelAction/5")),
                deployment: None,
            },
            300,
        ),
    ];
    for (what, text, want, sleep) in cases {
        let answer = poll(text);
        assert_eq!(&plan_poll(&answer), want, "{what}");
        assert_eq!(
            super::schedule::parse_sleep(&answer.config.polling.sleep).unwrap(),
            Duration::from_secs(*sleep),
            "{what}"
        );
    }
    // Members a server adds are ignored; what the device needs is required.
    let extra = r#"{"config":{"polling":{"sleep":"00:01:00","new":1}},"_links":{"installedBase":{"href":"x"}},"more":[]}"#;
    assert_eq!(
        plan_poll(&poll(extra)),
        PollPlan {
            config_data: None,
            cancel: None,
            deployment: None
        }
    );
    for garbage in [
        "",
        "null",
        "<html>502 Bad Gateway</html>",
        r#"{"config":{}}"#,
        r#"{"_links":{}}"#,
    ] {
        assert!(
            serde_json::from_str::<PollAnswer>(garbage).is_err(),
            "{garbage}"
        );
    }
}

#[test]
fn deployments_are_taken_on_refused_or_left_waiting() {
    let b = boot("boot-1", "a", "1.0.0", true);
    // goosebit: one artifact, SHA-1 only.
    let DeploymentPlan::Download { record } = plan_deployment(
        &deployment(fixture!("goosebit-0.2.12/05-deployment-base.json")),
        None,
        &b,
    ) else {
        panic!("goosebit's deployment is taken on")
    };
    assert_eq!(
        (
            record.action_id.as_str(),
            record.version.as_str(),
            record.artifact.as_str(),
            record.size
        ),
        ("1", "2.0.0", "v2.raucb", 75407)
    );
    assert_eq!(record.download_url, GB_DOWNLOAD);
    assert_eq!(
        (
            record.from_slot.as_str(),
            record.from_build.as_str(),
            &record.phase
        ),
        ("a", "1.0.0", &Phase::Downloading)
    );

    // hawkBit: HTTPS link preferred, all hashes kept, metadata and action history ignored.
    let DeploymentPlan::Download { record } = plan_deployment(
        &deployment(fixture!("hawkbit/deployment-base.json")),
        None,
        &b,
    ) else {
        panic!("hawkBit's deployment is taken on")
    };
    assert!(record.download_url.starts_with("https://"));
    assert!(record.hashes.sha256.is_some() && record.hashes.sha1.is_some());
    assert_eq!(record.version, "2026.12.1");

    assert_eq!(
        plan_deployment(
            &deployment(fixture!("hawkbit/deployment-skip.json")),
            None,
            &b
        ),
        DeploymentPlan::Wait
    );

    // Refusals: no bundle, two bundles, no usable hash, a malformed hash, no link.
    let base: serde_json::Value =
        serde_json::from_str(fixture!("hawkbit/deployment-base.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        f(&mut v);
        serde_json::from_value::<DeploymentBase>(v).unwrap()
    };
    let art = "/deployment/chunks/0/artifacts/0";
    let refusals: Vec<(&str, DeploymentBase, &str)> = vec![
        ("no artifact", edit(&|v| v["deployment"]["chunks"][0]["artifacts"] = serde_json::json!([])), "the deployment has no artifact"),
        (
            "two artifacts, none a bundle",
            edit(&|v| {
                let a = v.pointer(art).unwrap().clone();
                let mut x = a.clone();
                x["filename"] = "notes.txt".into();
                let mut y = a;
                y["filename"] = "image.swu".into();
                v["deployment"]["chunks"][0]["artifacts"] = serde_json::json!([x, y]);
            }),
            "no RAUC bundle (*.raucb) among the artifacts notes.txt, image.swu",
        ),
        (
            "two bundles",
            edit(&|v| {
                let a = v.pointer(art).unwrap().clone();
                let mut b = a.clone();
                b["filename"] = "other.raucb".into();
                v["deployment"]["chunks"][0]["artifacts"] = serde_json::json!([a, b]);
            }),
            "more than one RAUC bundle: atomixos-rock64.raucb, other.raucb",
        ),
        (
            "MD5 only",
            edit(&|v| v.pointer_mut(&format!("{art}/hashes")).unwrap().as_object_mut().unwrap().retain(|k, _| k == "md5")),
            "atomixos-rock64.raucb: the server gives no SHA-256 or SHA-1 hash to check the download with",
        ),
        (
            "a malformed hash",
            edit(&|v| v.pointer_mut(&format!("{art}/hashes/sha256")).map(|h| *h = "abc".into()).unwrap()),
            "atomixos-rock64.raucb: the server's SHA-256 \"abc\" is not 64 hex digits",
        ),
        (
            "no link",
            edit(&|v| v.pointer_mut(&format!("{art}/_links")).map(|l| *l = serde_json::json!({})).unwrap()),
            "atomixos-rock64.raucb: no download link",
        ),
    ];
    for (what, dep, reason) in refusals {
        assert_eq!(
            plan_deployment(&dep, None, &b),
            DeploymentPlan::Refuse {
                action_id: "5".into(),
                reason: reason.into()
            },
            "{what}"
        );
    }
    // An unknown handling value is refused by the parser (the API fixes the set).
    let mut v = base.clone();
    v["deployment"]["update"] = "later".into();
    assert!(serde_json::from_value::<DeploymentBase>(v).is_err());
}

fn record(id: &str, phase: Phase) -> ActionRecord {
    let DeploymentPlan::Download { mut record } = plan_deployment(
        &deployment(fixture!("goosebit-0.2.12/05-deployment-base.json")),
        None,
        &boot("boot-1", "a", "1.0.0", true),
    ) else {
        unreachable!()
    };
    record.action_id = id.into();
    record.phase = phase;
    *record
}

#[test]
fn a_deployment_in_progress_is_not_started_again() {
    let b = boot("boot-1", "a", "1.0.0", true);
    let dep = deployment(fixture!("goosebit-0.2.12/05-deployment-base.json"));
    let installed = Phase::Installed {
        target_slot: "b".into(),
    };
    assert_eq!(
        plan_deployment(&dep, Some(&record("1", installed.clone())), &b),
        DeploymentPlan::InProgress
    );
    assert_eq!(
        plan_deployment(&dep, Some(&record("7", installed)), &b),
        DeploymentPlan::Busy { other: "7".into() }
    );
    // A result not yet taken by the server holds no slot: another action goes ahead,
    // the same one is not started again.
    let reporting = Phase::Reporting {
        success: false,
        details: vec!["x".into()],
    };
    assert_eq!(
        plan_deployment(&dep, Some(&record("1", reporting.clone())), &b),
        DeploymentPlan::InProgress
    );
    assert!(matches!(
        plan_deployment(&dep, Some(&record("7", reporting)), &b),
        DeploymentPlan::Download { .. }
    ));
    // A download of another action is replaced; the same one restarts.
    for id in ["1", "7"] {
        assert!(matches!(
            plan_deployment(&dep, Some(&record(id, Phase::Downloading)), &b),
            DeploymentPlan::Download { .. }
        ));
    }
}

#[test]
fn downloads_are_checked_against_every_hash_given() {
    let mut r = record("5", Phase::Downloading);
    r.hashes = Hashes {
        sha1: Some("360D6CA5D055C1B51450900ACAAD9C09109FD18A".into()),
        md5: Some("whatever".into()),
        sha256: Some("65de4783fbcc2907db619ef69d7f0ff7374494352d43fdba6d977077aacfcae5".into()),
    };
    let good = Downloaded {
        size: 75407,
        sha1: "360d6ca5d055c1b51450900acaad9c09109fd18a".into(),
        sha256: "65de4783fbcc2907db619ef69d7f0ff7374494352d43fdba6d977077aacfcae5".into(),
    };
    assert_eq!(check_download(&r, &good), Ok(()));
    let short = Downloaded {
        size: 75000,
        ..good.clone()
    };
    assert_eq!(
        check_download(&r, &short).unwrap_err(),
        "v2.raucb: downloaded 75000 bytes, the server announced 75407"
    );
    let bad = Downloaded {
        sha256: "00".repeat(32),
        ..good.clone()
    };
    assert!(check_download(&r, &bad)
        .unwrap_err()
        .starts_with("v2.raucb: SHA-256 0000"));
    let bad = Downloaded {
        sha1: "00".repeat(20),
        ..good
    };
    assert!(check_download(&r, &bad)
        .unwrap_err()
        .contains("differs from the server's 360d6ca5"));
}

#[test]
fn cancels_are_honoured_only_while_nothing_is_written() {
    let cancel: CancelAnswer =
        serde_json::from_str(fixture!("hawkbit/cancel-action.json")).unwrap();
    let id = cancel.cancel_action.stop_id.as_str();
    assert_eq!(
        plan_cancel(id, None),
        CancelPlan::Confirm { discard: false }
    );
    assert_eq!(
        plan_cancel(
            id,
            Some(&record("4", Phase::Installing { target_slot: None }))
        ),
        CancelPlan::Confirm { discard: false }
    );
    assert_eq!(
        plan_cancel(id, Some(&record(id, Phase::Downloading))),
        CancelPlan::Confirm { discard: true }
    );
    for phase in [
        Phase::Installing {
            target_slot: Some("b".into()),
        },
        Phase::Installed {
            target_slot: "b".into(),
        },
        Phase::Reporting {
            success: true,
            details: vec![],
        },
    ] {
        assert!(
            matches!(
                plan_cancel(id, Some(&record(id, phase.clone()))),
                CancelPlan::Reject { .. }
            ),
            "{phase:?}"
        );
    }
}

#[test]
fn after_a_reboot_the_action_ends_in_what_happened() {
    let installed = || {
        record(
            "1",
            Phase::Installed {
                target_slot: "b".into(),
            },
        )
    };
    let cases: Vec<(&str, ActionRecord, BootFacts, Resume)> = vec![
        ("installed, not rebooted yet", installed(), boot("boot-1", "a", "1.0.0", true), Resume::AwaitReboot),
        ("booted into the new slot, apply running", installed(), boot("boot-2", "b", "2.0.0", false), Resume::AwaitGood),
        (
            "booted into the new slot, marked good",
            installed(),
            boot("boot-2", "b", "2.0.0", true),
            Resume::Report { success: true, details: vec!["running build 2.0.0 on slot b, marked good after its config applied".into()] },
        ),
        (
            "fell back",
            installed(),
            boot("boot-5", "a", "1.0.0", true),
            Resume::Report {
                success: false,
                details: vec!["slot b with 2.0.0 did not become good (its boot tries ran out or it was never booted): running build 1.0.0 on slot a again".into()],
            },
        ),
        (
            "power cut while installing",
            record("1", Phase::Installing { target_slot: Some("b".into()) }),
            boot("boot-2", "a", "1.0.0", true),
            Resume::Report {
                success: false,
                details: vec!["the installation of 2.0.0 was interrupted (the device restarted during it); still running build 1.0.0 on slot a".into()],
            },
        ),
        (
            "a record from before the target slot was kept",
            record("1", Phase::Installing { target_slot: None }),
            boot("boot-2", "a", "1.0.0", true),
            Resume::Report {
                success: false,
                details: vec!["the installation of 2.0.0 was interrupted (the device restarted during it); still running build 1.0.0 on slot a".into()],
            },
        ),
        (
            "the service stopped while installing",
            record("1", Phase::Installing { target_slot: Some("b".into()) }),
            boot("boot-1", "a", "1.0.0", true),
            Resume::Report {
                success: false,
                details: vec!["the installation of 2.0.0 was interrupted (the update client stopped during it); still running build 1.0.0 on slot a".into()],
            },
        ),
        (
            "power cut after rauc install, before Installed was saved: the new slot boots",
            record("1", Phase::Installing { target_slot: Some("b".into()) }),
            boot("boot-2", "b", "2.0.0", false),
            Resume::AwaitGood,
        ),
        (
            "... and is marked good",
            record("1", Phase::Installing { target_slot: Some("b".into()) }),
            boot("boot-2", "b", "2.0.0", true),
            Resume::Report { success: true, details: vec!["running build 2.0.0 on slot b, marked good after its config applied".into()] },
        ),
        ("power cut while downloading", record("1", Phase::Downloading), boot("boot-2", "a", "1.0.0", true), Resume::Download),
        (
            "a result not yet acknowledged",
            record("1", Phase::Reporting { success: false, details: vec!["x".into()] }),
            boot("boot-3", "a", "1.0.0", true),
            Resume::Report { success: false, details: vec!["x".into()] },
        ),
    ];
    for (what, r, b, want) in cases {
        assert_eq!(resume(&r, &b), want, "{what}");
    }
}

#[test]
fn feedback_and_attributes_are_what_servers_take() {
    let f = serde_json::to_value(Feedback::proceeding(1, STEPS, "downloading")).unwrap();
    assert_eq!(
        f,
        serde_json::json!({"status":{"execution":"proceeding","result":{"finished":"none","progress":{"cnt":1,"of":4}},"details":["downloading"]}})
    );
    let f = serde_json::to_value(Feedback::closed(false, vec!["fell back".into()])).unwrap();
    assert_eq!(
        f,
        serde_json::json!({"status":{"execution":"closed","result":{"finished":"failure"},"details":["fell back"]}})
    );
    let f = serde_json::to_value(Feedback::cancel_rejected("installing")).unwrap();
    assert_eq!(f["status"]["execution"], "rejected");
    let a = attributes(&DeviceFacts {
        build_id: "1.0.0".into(),
        slot: "a".into(),
        board: "rock64".into(),
        compatible: "atomixos-rock64".into(),
        generation: Some(3),
    });
    assert_eq!(a["hw_boardname"], "atomixos-rock64");
    assert_eq!(a["sw_version"], "1.0.0");
    assert_eq!(a["atomix.generation"], "3");
}

/// An installer that records what it was given and answers as told.
#[derive(Debug, Default)]
struct FakeInstaller {
    installed: Vec<Vec<u8>>,
    fail: Option<String>,
    /// Made a directory during the install (a path the record's save needs free).
    block: Option<std::path::PathBuf>,
}

impl Installer for FakeInstaller {
    fn install(&mut self, bundle: &Path, _: &Downloaded, _: &str) -> Result<String, String> {
        self.installed.push(std::fs::read(bundle).unwrap());
        if let Some(dir) = &self.block {
            std::fs::create_dir_all(dir).unwrap();
        }
        match &self.fail {
            Some(e) => Err(e.clone()),
            None => Ok("b".into()),
        }
    }
}

fn client(data: &Path, ddi: FakeDdi, boot: BootFacts) -> Client<FakeDdi, FakeInstaller> {
    Client {
        ddi,
        installer: FakeInstaller::default(),
        store: RecordStore::new(data),
        downloads: data.join("rauc/hawkbit"),
        base: controller_url("http://127.0.0.1:60053/", "DEFAULT", "edge-043"),
        device: DeviceFacts {
            build_id: boot.build_id.clone(),
            slot: boot.slot.clone(),
            board: "rock64".into(),
            compatible: "atomixos-rock64".into(),
            generation: Some(1),
        },
        boot,
        failures: 0,
        offline: 0,
        now: 1_000_000,
    }
}

/// The goosebit recording, as a scripted server, with the bundle its hash names.
fn goosebit(bundle: &[u8]) -> FakeDdi {
    let mut ddi = FakeDdi::default();
    ddi.ok(
        Method::Get,
        GB_BASE,
        fixture!("goosebit-0.2.12/04-poll-deployment.json"),
    )
    .ok(
        Method::Get,
        GB_DEPLOYMENT,
        fixture!("goosebit-0.2.12/05-deployment-base.json"),
    )
    .ok(
        Method::Post,
        &format!("{GB_DEPLOYMENT}/feedback"),
        r#"{"id":"1"}"#,
    );
    ddi.files.insert(GB_DOWNLOAD.into(), bundle.to_vec());
    ddi
}

fn sent_feedback(ddi: &FakeDdi) -> Vec<(String, String)> {
    ddi.sent_with(Method::Post)
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(s.body.as_deref().unwrap()).unwrap();
            (
                v["status"]["execution"].as_str().unwrap().to_owned(),
                v["status"]["result"]["finished"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// A bundle whose SHA-1 is the one goosebit's recording names is not at hand, so the
/// recorded deployment's hash is replaced by that of the bytes served.
fn served_deployment(bundle: &[u8]) -> String {
    use sha1::Digest as _;
    let sha1 = atomix_api::hex(&sha1::Sha1::digest(bundle));
    fixture!("goosebit-0.2.12/05-deployment-base.json")
        .replace("360d6ca5d055c1b51450900acaad9c09109fd18a", &sha1)
        .replace("75407", &bundle.len().to_string())
}

#[test]
fn a_deployment_is_downloaded_installed_and_reported_after_the_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = b"a RAUC bundle".repeat(100);
    let mut ddi = goosebit(&bundle);
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(Method::Get, GB_DEPLOYMENT, &served_deployment(&bundle));
    // The server offers the action until it has the result, then nothing.
    for _ in 0..2 {
        ddi.ok(
            Method::Get,
            GB_BASE,
            fixture!("goosebit-0.2.12/04-poll-deployment.json"),
        );
    }
    ddi.ok(
        Method::Get,
        GB_BASE,
        fixture!("goosebit-0.2.12/09-poll-after-success.json"),
    );
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));

    let round = c.round(0);
    assert_eq!(round.problems, Vec::<String>::new());
    assert!(round.reboot);
    assert_eq!(round.sleep, Duration::from_secs(30));
    assert_eq!(c.installer.installed, vec![bundle.clone()]);
    assert_eq!(
        sent_feedback(&c.ddi),
        vec![("proceeding".to_owned(), "none".to_owned()); 4]
    );
    let r = c
        .store
        .load()
        .unwrap()
        .expect("kept until the result is known");
    assert_eq!(
        r.phase,
        Phase::Installed {
            target_slot: "b".into()
        }
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("rauc/hawkbit"))
            .unwrap()
            .count(),
        0,
        "the bundle is removed"
    );

    // Still this boot: the server offers the action again; nothing is repeated.
    c.ddi.sent.clear();
    let round = c.round(0);
    assert!(!round.reboot && round.problems.is_empty(), "{round:?}");
    assert_eq!(sent_feedback(&c.ddi), vec![]);

    // The next boot, in slot b, not yet marked good: nothing reported yet.
    c.boot = boot("boot-2", "b", "2.0.0", false);
    c.round(0);
    assert_eq!(sent_feedback(&c.ddi), vec![]);
    // Marked good: success, and the record goes.
    c.boot.slot_good = true;
    c.round(0);
    assert_eq!(
        sent_feedback(&c.ddi),
        vec![("closed".to_owned(), "success".to_owned())]
    );
    assert_eq!(c.store.load().unwrap(), None);
}

#[test]
fn a_fallback_is_reported_as_a_failure_even_when_the_server_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(
        dir.path(),
        FakeDdi::default(),
        boot("boot-4", "a", "1.0.0", true),
    );
    c.store
        .save(&record(
            "1",
            Phase::Installed {
                target_slot: "b".into(),
            },
        ))
        .unwrap();
    // The server is unreachable: the result is kept, and the poll backs off.
    let round = c.round(0);
    assert_eq!(round.sleep, Duration::from_secs(30));
    assert_eq!(c.failures, 1);
    assert!(matches!(
        c.store.load().unwrap().unwrap().phase,
        Phase::Reporting { success: false, .. }
    ));
    let round = c.round(0);
    assert_eq!((round.sleep, c.failures), (Duration::from_secs(60), 2));
    // Back: the failure is reported with its reason, then the poll goes on.
    c.ddi = goosebit(b"");
    c.ddi.answers.remove(&(Method::Get, GB_BASE.to_owned()));
    c.ddi.ok(
        Method::Get,
        GB_BASE,
        fixture!("goosebit-0.2.12/03-poll-no-action.json"),
    );
    let round = c.round(0);
    assert_eq!((round.sleep, c.failures), (Duration::from_secs(30), 0));
    let post = &c.ddi.sent_with(Method::Post)[0];
    assert_eq!(post.url, format!("{GB_DEPLOYMENT}/feedback"));
    assert!(
        post.body
            .as_deref()
            .unwrap()
            .contains("did not become good"),
        "{post:?}"
    );
    assert_eq!(c.store.load().unwrap(), None);
}

#[test]
fn a_bad_hash_fails_the_action_before_anything_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(
        dir.path(),
        goosebit(b"not the bundle the server hashed"),
        boot("boot-1", "a", "1.0.0", true),
    );
    let mut ddi = std::mem::take(&mut c.ddi);
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(
        Method::Get,
        GB_DEPLOYMENT,
        &fixture!("goosebit-0.2.12/05-deployment-base.json").replace("75407", "32"),
    );
    c.ddi = ddi;
    let round = c.round(0);
    assert!(!round.reboot);
    assert!(c.installer.installed.is_empty());
    assert_eq!(
        sent_feedback(&c.ddi).last().unwrap(),
        &("closed".to_owned(), "failure".to_owned())
    );
    let body = c
        .ddi
        .sent_with(Method::Post)
        .last()
        .unwrap()
        .body
        .clone()
        .unwrap();
    assert!(
        body.contains("SHA-1") && body.contains("differs from the server's 360d6ca5"),
        "{body}"
    );
    assert_eq!(c.store.load().unwrap(), None);
}

#[test]
fn server_errors_and_garbage_back_off_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let answers = [
        Scripted::Err(DdiError::Status {
            url: GB_BASE.into(),
            status: 503,
            body: "Service Unavailable".into(),
        }),
        Scripted::Err(DdiError::Transport {
            url: GB_BASE.into(),
            cause: "timed out".into(),
        }),
        Scripted::Ok("<html>502 Bad Gateway</html>".into()),
        Scripted::Ok(fixture!("goosebit-0.2.12/16-unknown-deployment.json").into()),
        Scripted::Ok(fixture!("goosebit-0.2.12/03-poll-no-action.json").into()),
    ];
    let mut ddi = FakeDdi::default();
    for a in answers {
        ddi.answer(Method::Get, GB_BASE, a);
    }
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    let sleeps: Vec<u64> = (0..5).map(|_| c.round(0).sleep.as_secs()).collect();
    assert_eq!(sleeps, [30, 60, 120, 240, 30]);
    assert_eq!(c.failures, 0);
    assert!(c.ddi.sent_with(Method::Post).is_empty());
    assert!(
        !dir.path().join("atomix").exists(),
        "no record for a failed poll"
    );
}

#[test]
fn without_a_route_of_its_own_the_device_retries_soon_and_keeps_the_servers_back_off() {
    // Early in a boot the WAN has no lease yet: the poll cannot leave the device. That
    // is not the server failing: retried in 5 s, doubling to a minute, and the back-off
    // of real failures does not grow, so a result waiting to be told (an update just
    // marked good) reaches the server seconds after the network comes up.
    let dir = tempfile::tempdir().unwrap();
    let offline = || {
        Scripted::Err(DdiError::Offline {
            url: GB_BASE.into(),
            cause: "io: Network is unreachable (os error 101)".into(),
        })
    };
    let mut ddi = FakeDdi::default();
    for a in [
        offline(),
        offline(),
        offline(),
        Scripted::Ok(fixture!("goosebit-0.2.12/03-poll-no-action.json").into()),
        offline(),
    ] {
        ddi.answer(Method::Get, GB_BASE, a);
    }
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    let rounds: Vec<(u64, u32)> = (0..5)
        .map(|_| {
            let r = c.round(0);
            (r.sleep.as_secs(), c.failures)
        })
        .collect();
    // (the fourth: the server's sleep, 30 s in that answer)
    assert_eq!(rounds, [(5, 0), (10, 0), (20, 0), (30, 0), (5, 0)]);
}

#[test]
fn registration_sends_the_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ddi = FakeDdi::default();
    ddi.ok(
        Method::Get,
        GB_BASE,
        fixture!("goosebit-0.2.12/01-poll-register.json"),
    )
    .ok(
        Method::Put,
        &format!("{GB_BASE}/configData"),
        r#"{"success":true,"message":"Updated swupdate data."}"#,
    );
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    let round = c.round(0);
    assert_eq!(
        (round.sleep, round.problems.len()),
        (Duration::from_secs(10), 0)
    );
    let put = &c.ddi.sent_with(Method::Put)[0];
    let body: ConfigData = serde_json::from_str(put.body.as_deref().unwrap()).unwrap();
    assert_eq!(body.mode, ConfigMode::Merge);
    assert_eq!(body.data["sw_version"], "1.0.0");
    assert_eq!(body.data["hw_boardname"], "atomixos-rock64");
}

#[test]
fn a_cancel_stops_a_download_in_progress_and_is_refused_after_install() {
    let dir = tempfile::tempdir().unwrap();
    let cancel_href = format!("{GB_BASE}/cancelAction/1");
    let mut ddi = FakeDdi::default();
    ddi.ok(
        Method::Get,
        GB_BASE,
        &fixture!("hawkbit/poll-cancel.json")
            .replace(&format!("{HB_BASE}/cancelAction/5"), &cancel_href),
    )
    .ok(
        Method::Get,
        &cancel_href,
        &fixture!("hawkbit/cancel-action.json").replace('5', "1"),
    )
    .ok(
        Method::Post,
        &format!("{GB_BASE}/cancelAction/1/feedback"),
        "{}",
    );
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    c.store.save(&record("1", Phase::Downloading)).unwrap();
    c.round(0);
    assert_eq!(
        sent_feedback(&c.ddi),
        vec![("closed".to_owned(), "success".to_owned())]
    );
    assert_eq!(c.store.load().unwrap(), None);

    c.ddi.sent.clear();
    c.store
        .save(&record(
            "1",
            Phase::Installed {
                target_slot: "b".into(),
            },
        ))
        .unwrap();
    c.round(0);
    assert_eq!(
        sent_feedback(&c.ddi),
        vec![("rejected".to_owned(), "success".to_owned())]
    );
    assert!(c.store.load().unwrap().is_some());
}

#[test]
fn a_failed_install_is_reported_with_rauc_s_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = b"bundle".repeat(10);
    let mut ddi = goosebit(&bundle);
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(Method::Get, GB_DEPLOYMENT, &served_deployment(&bundle));
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    c.installer.fail = Some("signature verification failed".into());
    let round = c.round(0);
    assert!(!round.reboot);
    let body = c
        .ddi
        .sent_with(Method::Post)
        .last()
        .unwrap()
        .body
        .clone()
        .unwrap();
    assert!(
        body.contains("\"failure\"")
            && body.contains("rauc install failed: signature verification failed"),
        "{body}"
    );
    assert_eq!(c.store.load().unwrap(), None);
}

fn status(code: u16) -> Scripted {
    Scripted::Err(DdiError::Status {
        url: format!("{GB_DEPLOYMENT}/feedback"),
        status: code,
        body: "Internal Server Error".into(),
    })
}

#[test]
fn a_result_the_server_refuses_does_not_block_the_next_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = b"a RAUC bundle".repeat(10);
    let mut ddi = goosebit(&bundle);
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(Method::Get, GB_DEPLOYMENT, &served_deployment(&bundle));
    // goosebit answers 500 to feedback on an action it has deleted.
    let old_feedback = format!("{GB_BASE}/deploymentBase/7/feedback");
    ddi.answer(Method::Post, &old_feedback, status(500));
    let mut c = client(dir.path(), ddi, boot("boot-3", "a", "1.0.0", true));
    c.store
        .save(&record(
            "7",
            Phase::Reporting {
                success: true,
                details: vec!["done".into()],
            },
        ))
        .unwrap();
    let round = c.round(0);
    assert!(round.reboot, "{round:?}");
    assert_eq!(c.installer.installed.len(), 1);
    // The result was sent first, and its dropping is said.
    assert_eq!(c.ddi.sent_with(Method::Post)[0].url, old_feedback);
    assert!(
        round.problems[0].starts_with("reporting the result of action 7"),
        "{round:?}"
    );
    assert!(
        round.problems[1]
            .starts_with("dropping the result of action 7 (success: done), which the server has not taken, for action 1"),
        "{round:?}"
    );
    let r = c.store.load().unwrap().unwrap();
    assert_eq!(r.action_id, "1");
    assert_eq!(r.server.as_deref(), Some(GB_BASE));
}

#[test]
fn a_result_is_given_up_after_a_lasting_refusal_or_a_week() {
    let week = REPORT_FOR;
    let transport = Scripted::Err(DdiError::Transport {
        url: GB_BASE.into(),
        cause: "timed out".into(),
    });
    // (what, the answer to the feedback, failing since, kept)
    let cases: Vec<(&str, Scripted, Option<u64>, bool)> = vec![
        ("the action is gone (404)", status(404), None, false),
        ("a bad request (400)", status(400), None, false),
        ("a token to fix (401)", status(401), None, true),
        ("forbidden (403)", status(403), None, true),
        ("too many requests (429)", status(429), None, true),
        ("a server error, first time", status(500), None, true),
        (
            "a server error for six days",
            status(500),
            Some(week - 86400),
            true,
        ),
        ("a server error for a week", status(500), Some(week), false),
        ("no answer for a week", transport, Some(week), false),
    ];
    for (what, answer, failing_for, kept) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut ddi = FakeDdi::default();
        ddi.ok(
            Method::Get,
            GB_BASE,
            fixture!("goosebit-0.2.12/03-poll-no-action.json"),
        )
        .answer(Method::Post, &format!("{GB_DEPLOYMENT}/feedback"), answer);
        let mut c = client(dir.path(), ddi, boot("boot-3", "a", "1.0.0", true));
        let mut r = record(
            "1",
            Phase::Reporting {
                success: false,
                details: vec!["fell back".into()],
            },
        );
        r.unreported_since = failing_for.map(|f| c.now - f);
        c.store.save(&r).unwrap();
        let round = c.round(0);
        assert_eq!(c.ddi.sent_with(Method::Post).len(), 1, "{what}");
        let left = c.store.load().unwrap();
        assert_eq!(left.is_some(), kept, "{what}: {round:?}");
        if let Some(left) = left {
            assert_eq!(
                left.unreported_since,
                Some(failing_for.map_or(c.now, |f| c.now - f)),
                "{what}"
            );
        } else {
            assert!(
                round
                    .problems
                    .last()
                    .unwrap()
                    .starts_with("dropping the result of action 1 (failure: fell back): "),
                "{what}: {round:?}"
            );
        }
    }
}

#[test]
fn an_action_of_another_server_or_controller_is_dropped_unreported() {
    let dir = tempfile::tempdir().unwrap();
    let mut ddi = FakeDdi::default();
    ddi.ok(
        Method::Get,
        GB_BASE,
        fixture!("goosebit-0.2.12/03-poll-no-action.json"),
    )
    .ok(Method::Post, &format!("{GB_DEPLOYMENT}/feedback"), "{}");
    let mut c = client(dir.path(), ddi, boot("boot-3", "a", "1.0.0", true));
    for old in [
        "https://old.example.com/DEFAULT/controller/v1/edge-043",
        "http://127.0.0.1:60053/DEFAULT/controller/v1/old-hostname",
        "http://127.0.0.1:60053/other/controller/v1/edge-043",
    ] {
        for phase in [
            Phase::Reporting {
                success: true,
                details: vec![],
            },
            Phase::Installed {
                target_slot: "b".into(),
            },
        ] {
            let mut r = record("1", phase);
            r.server = Some(old.into());
            c.store.save(&r).unwrap();
            let round = c.round(0);
            assert!(c.ddi.sent_with(Method::Post).is_empty(), "{old}");
            assert_eq!(c.store.load().unwrap(), None, "{old}");
            assert!(
                round.problems[0].starts_with("dropping action 1 (2.0.0, ")
                    && round.problems[0]
                        .contains(&format!("it was taken from {old}, not {GB_BASE}")),
                "{round:?}"
            );
        }
    }
    // A record from before the server was kept counts as this server's.
    let mut r = record(
        "1",
        Phase::Reporting {
            success: true,
            details: vec![],
        },
    );
    r.server = None;
    c.store.save(&r).unwrap();
    let round = c.round(0);
    assert!(round.problems.is_empty(), "{round:?}");
    assert_eq!(sent_feedback(&c.ddi), [("closed".into(), "success".into())]);
    assert_eq!(c.store.load().unwrap(), None);
}

#[test]
fn an_install_whose_record_cannot_be_saved_still_reboots_and_is_told_apart_after() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = b"a RAUC bundle".repeat(10);
    let mut ddi = goosebit(&bundle);
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(Method::Get, GB_DEPLOYMENT, &served_deployment(&bundle));
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    // The record's temporary file cannot be made once RAUC has written the slot, as
    // when /data fails or the power goes just then.
    let tmp = c.store.path().with_file_name(".action.json.tmp");
    c.installer.block = Some(tmp.clone());
    let round = c.round(0);
    assert!(round.reboot, "the slot is installed: {round:?}");
    assert!(
        round.problems.iter().any(|p| p.starts_with("saving ")),
        "{round:?}"
    );
    let r = c.store.load().unwrap().unwrap();
    assert_eq!(
        r.phase,
        Phase::Installing {
            target_slot: Some("b".into())
        }
    );
    std::fs::remove_dir(&tmp).unwrap();

    // The next boot runs the new slot: not an interrupted install, an installed one.
    c.ddi.sent.clear();
    c.boot = boot("boot-2", "b", "2.0.0", false);
    let round = c.round(0);
    assert!(
        !round.reboot && sent_feedback(&c.ddi).is_empty(),
        "{round:?}"
    );
    assert_eq!(
        c.store.load().unwrap().unwrap().phase,
        Phase::Installed {
            target_slot: "b".into()
        }
    );
    c.boot.slot_good = true;
    c.round(0);
    assert_eq!(sent_feedback(&c.ddi), [("closed".into(), "success".into())]);
    assert_eq!(c.store.load().unwrap(), None);
}

#[test]
fn hostile_text_in_answers_is_refused_at_parse_naming_the_member() {
    let dep: serde_json::Value =
        serde_json::from_str(fixture!("hawkbit/deployment-base.json")).unwrap();
    let filename = "/deployment/chunks/0/artifacts/0/filename";
    let link = "/deployment/chunks/0/artifacts/0/_links/download/href";
    let long = "9".repeat(100_000);
    let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
        ("a long id", "/id", long.as_str().into(), "id: \"9999"),
        (
            "an id with a slash",
            "/id",
            "../5".into(),
            "id: \"../5\" is not an id",
        ),
        ("an empty id", "/id", "".into(), "id: \"\" is not an id"),
        (
            "a long version",
            "/deployment/chunks/0/version",
            "v".repeat(257).into(),
            "is longer than 256 characters",
        ),
        (
            "a version with a newline",
            "/deployment/chunks/0/version",
            "1.0\nFAKE LOG LINE".into(),
            "version: \"1.0\\nFAKE LOG LINE\" holds control characters",
        ),
        (
            "a file name with an escape",
            filename,
            "x\u{1b}[2J.raucb".into(),
            "filename: ",
        ),
        (
            "a long link",
            link,
            format!("https://hawkbit.example.com/{long}").into(),
            "href: ",
        ),
    ];
    for (what, at, value, want) in cases {
        let mut v = dep.clone();
        *v.pointer_mut(at).unwrap() = value;
        let text = v.to_string();
        let e = serde_json::from_str::<DeploymentBase>(&text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains(" at line 1 column "),
            "{what}: {e}"
        );
        assert!(
            e.len() < 300,
            "{what}: the error quotes a bounded start: {e}"
        );
    }
    // At the limits, taken.
    let mut v = dep.clone();
    v["id"] = "a".repeat(MAX_ID).into();
    *v.pointer_mut("/deployment/chunks/0/version").unwrap() = "é".repeat(MAX_NAME).into();
    assert!(serde_json::from_value::<DeploymentBase>(v).is_ok());
    // Cancels: the cancel's id and the action it stops.
    for bad in [
        r#"{"id":"5/x","cancelAction":{"stopId":"5"}}"#,
        r#"{"id":"6","cancelAction":{"stopId":"5\u0000"}}"#,
    ] {
        assert!(serde_json::from_str::<CancelAnswer>(bad).is_err(), "{bad}");
    }
    let e = serde_json::from_str::<CancelAnswer>(r#"{"id":"6","cancelAction":{"stopId":"a b"}}"#)
        .unwrap_err();
    assert!(e.to_string().starts_with("stopId: "), "{e}");
}

#[test]
fn a_hostile_deployment_leaves_no_record_and_a_short_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut ddi = goosebit(b"");
    ddi.answers.remove(&(Method::Get, GB_DEPLOYMENT.to_owned()));
    ddi.ok(
        Method::Get,
        GB_DEPLOYMENT,
        &fixture!("goosebit-0.2.12/05-deployment-base.json")
            .replace("\"2.0.0\"", &format!("\"{}\"", "\\u0007".repeat(50_000))),
    );
    let mut c = client(dir.path(), ddi, boot("boot-1", "a", "1.0.0", true));
    let round = c.round(0);
    assert_eq!(round.problems.len(), 1, "{round:?}");
    assert!(
        round.problems[0].contains("not a DDI deployment: version: ")
            && round.problems[0].len() < 1024,
        "{round:?}"
    );
    assert_eq!(c.store.load().unwrap(), None);
    assert!(c.ddi.sent_with(Method::Post).is_empty());
}

#[test]
fn a_token_quoted_back_is_redacted_before_the_quote_is_cut() {
    use super::transport::{status_error, Auth, QUOTED_BODY};
    let token = "T".repeat(1000);
    let auth = Auth(Some(format!("TargetToken {token}")));
    assert_eq!(auth.secret(), Some(token.as_str()));
    let secret = auth.secret();
    // The token starts inside the part quoted and ends far past it.
    for prefix in ["", "x", &"y".repeat(QUOTED_BODY - 10)] {
        let body = format!("{prefix}{{\"detail\":\"bad TargetToken {token}\"}}");
        let e = status_error(GB_BASE, 401, None, body.as_bytes(), secret).to_string();
        assert!(!e.contains("TTTT"), "{e}");
        assert!(e.len() <= GB_BASE.len() + QUOTED_BODY + 20, "{}", e.len());
    }
    let e = status_error(
        GB_BASE,
        401,
        None,
        format!("bad {token}").as_bytes(),
        secret,
    );
    assert!(e.to_string().ends_with("HTTP 401: bad <token>"), "{e}");
    let location = format!("http://elsewhere/?t={token}");
    let e = status_error(GB_BASE, 302, Some(&location), b"", secret).to_string();
    assert!(
        !e.contains("TTTT")
            && e.contains("a redirect to http://elsewhere/?t=<token>, not followed"),
        "{e}"
    );
}

#[test]
fn no_route_from_the_device_is_told_apart_from_a_server_that_does_not_answer() {
    use std::io::{Error, ErrorKind};
    let offline = UreqDdi::request_error(
        GB_BASE,
        ureq::Error::Io(Error::from(ErrorKind::NetworkUnreachable)),
    );
    assert!(matches!(offline, DdiError::Offline { .. }), "{offline:?}");
    for kind in [
        ErrorKind::ConnectionRefused,
        ErrorKind::TimedOut,
        ErrorKind::HostUnreachable,
    ] {
        let e = UreqDdi::request_error(GB_BASE, ureq::Error::Io(Error::from(kind)));
        assert!(matches!(e, DdiError::Transport { .. }), "{kind:?}: {e:?}");
    }
}
