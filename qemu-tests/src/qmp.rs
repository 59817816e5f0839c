//! QEMU's machine protocol (QMP) over its unix socket: commands (buttons, `cont`) and
//! events (a watchdog reset, a power-off).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A connection to QEMU's QMP socket (`-qmp unix:...`).
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after it starts) and leaves the
    /// capabilities negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Qmp {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    panic!("no QMP socket at {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qmp.read_message();
        assert!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities");
        qmp
    }

    fn read_message(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("QMP: QEMU closed the connection"),
            Ok(_) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("QMP: bad message {line:?}: {e}")),
            Err(e) => panic!("QMP: {e}"),
        }
    }

    /// Waits for the QMP event `name` (e.g. `WATCHDOG`) and returns its `data`; `None`
    /// when QEMU ends or `timeout` passes first. Events are queued on the socket from the
    /// moment of connecting, so one that came before this call is found too.
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        // A line cut by a read timeout is kept and completed by the next read.
        let mut line = String::new();
        while Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {
                    let message: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("QMP: bad message {line:?}: {e}"));
                    line.clear();
                    if message["event"] == name {
                        return Some(message["data"].clone());
                    }
                }
                // The read timeout of the socket: look at the deadline, read on.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("QMP: {e}"),
            }
        }
        None
    }

    /// Runs a command without arguments and returns its `return` value (events that
    /// arrive meanwhile are skipped); panics on an error answer.
    pub fn execute(&mut self, command: &str) -> Value {
        self.try_execute(command)
            .unwrap_or_else(|e| panic!("QMP {command}: {e}"))
    }

    /// Like [`Qmp::execute`], but a closed connection (QEMU ended) is an `Err`.
    pub fn try_execute(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.writer, "{{\"execute\": \"{command}\"}}").map_err(|e| e.to_string())?;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("QEMU closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let message: Value =
                serde_json::from_str(&line).map_err(|e| format!("bad message {line:?}: {e}"))?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(format!("error {error}"));
            }
        }
    }
}
