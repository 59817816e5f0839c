//! What the test suites of this workspace share to set up what they test: free TCP ports
//! for services under test ([`ports`]) and waiting until one listens ([`service`]), SSH
//! key pairs from the real `ssh-keygen` ([`keys`]) and the example config with a test's
//! own admin key ([`config`]), other packages' binaries built for a test ([`bins`]). A
//! dev-only crate, never part of a shipped binary.

pub mod bins;
pub mod config;
pub mod keys;
pub mod ports;
pub mod service;

pub use bins::workspace_bin;
pub use config::{config_with_admin, EXAMPLE};
pub use keys::{keygen, Key};
pub use ports::free_port;
pub use service::wait_until_listening;
