//! What the test suites of this workspace share to set up what they test: free TCP ports
//! for services under test ([`ports`]). A dev-only crate, never part of a shipped binary.

pub mod ports;

pub use ports::free_port;
