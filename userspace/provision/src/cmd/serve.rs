//! `serve`: the long-lived service of `first-boot.service`: finish jobs a crash cut
//! off, start the listeners, run the boot flow and the hawkBit client, serve until
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use atomix_provision::announce::{Announcer, MdnsAnnouncer, RecordAnnouncer};
use atomix_provision::apply::{Admin, Applier};
use atomix_provision::paths::Paths;
use atomix_provision::service::Service;
use atomix_provision::system::{RealSystem, RecordSystem, System};
use atomix_provision::{api, boot_flow, hawkbit, listen};
use failpoints::Failpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemKind {
    /// Run systemctl, networkctl, nft, hostnamectl, rauc (mark-good, install), mount;
    /// answer multicast DNS.
    Real,
    /// Append each action to ROOT/run/atomix/actions.log instead; write what would be
    /// announced over multicast DNS to ROOT/run/atomix/announcement.json.
    Record,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix of every path read or written (data/, boot/, etc/, run/, usr/share/atomix/).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Listen here instead of the derived addresses (repeatable; never narrowed).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// How system actions are performed.
    #[arg(long, value_enum, default_value_t = SystemKind::Real)]
    pub system: SystemKind,
    /// Trusted provisioning keys, authorized_keys format
    /// [default: ROOT/usr/share/atomix/provisioning-keys].
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// The port of the derived addresses (unprovisioned 0.0.0.0, provisioned the LAN
    /// address).
    #[arg(long, default_value_t = atomix_provision::service::PORT)]
    pub port: u16,
    /// Search this directory for a seed instead of USB block devices.
    #[arg(long, value_name = "DIR")]
    pub usb_dir: Option<PathBuf>,
    /// Also write error lines to this kernel log device (e.g. /dev/kmsg).
    #[arg(long, value_name = "PATH")]
    pub kmsg: Option<PathBuf>,
}

/// How long SIGTERM waits for a running apply job.
const JOB_GRACE: Duration = Duration::from_secs(60);

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut paths = Paths::new(&args.root);
    if let Some(k) = &args.keys {
        paths.keys = k.clone();
    }
    // atomix-restore.service has done this before on a device; not under tests.
    super::restore::complete_factory_reset(&paths);
    let failpoints = Failpoints::from_env()?;
    let system: Arc<dyn System> = match args.system {
        SystemKind::Real => Arc::new(RealSystem),
        SystemKind::Record => Arc::new(RecordSystem::new(paths.actions_log())),
    };
    let passwd = std::fs::read_to_string(paths.passwd()).unwrap_or_default();
    let applier = Applier {
        paths: paths.clone(),
        system,
        failpoints,
        admin: Admin::from_passwd(&passwd),
    };
    // The multicast DNS responder is a side effect like the others: recorded instead
    // under `--system record`.
    let announcer: Arc<dyn Announcer> = match args.system {
        SystemKind::Real => Arc::new(MdnsAnnouncer::new()),
        SystemKind::Record => Arc::new(RecordAnnouncer::new(&paths)),
    };
    let fixed = (!args.listen.is_empty()).then(|| args.listen.clone());
    let svc = Service::with_port(applier, announcer, fixed, args.usb_dir.clone(), args.port);
    svc.applier.recover(&svc.tracker);
    // No upload or update job survives a restart: what they left is garbage.
    atomix_provision::update::clear_leftovers(&svc.paths.uploads());
    svc.refresh_listen();
    svc.announce_in_background();

    // Blocking threads: uploads being written, validations (at most api::VALIDATIONS).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(svc))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(svc: Arc<Service>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        log::info!("stopping");
        let _ = stop_tx.send(true);
    });

    let flow = Arc::clone(&svc);
    std::thread::Builder::new()
        .name("boot-flow".into())
        .spawn(move || boot_flow::run(&flow))
        .context("cannot start the boot flow")?;
    // Idle until a current config has [update.hawkbit]; off the request path.
    hawkbit::poller::spawn(&svc).context("cannot start the hawkBit client")?;

    listen::run(api::app(Arc::clone(&svc)), Arc::clone(&svc), stop_rx).await;

    // An apply job is not cut off by a stop: it ends (or rolls back) first.
    let deadline = tokio::time::Instant::now() + JOB_GRACE;
    while let Some(id) = svc.tracker.running() {
        if tokio::time::Instant::now() > deadline {
            log::error!("job {id} still running at exit");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Goodbye packets: browsers forget the device now rather than when the TTL ends.
    svc.withdraw();
    Ok(())
}
