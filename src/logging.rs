//! Where log lines go: journald when its socket exists, else syslog, else stderr (or a file
//! the operator names). A logging failure never fails the container: sinks that cannot be
//! opened fall back, and write errors are dropped.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::{Log, LogTarget};

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
const SYSLOG_SOCKET: &str = "/dev/log";

/// The sink chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Syslog,
    Stderr,
    File,
    None,
}

/// Installs the global subscriber for binary `bin`; returns the sink in use.
pub fn init(log: &Log, bin: &'static str) -> Sink {
    let level = LevelFilter::from_str(&log.level).unwrap_or(LevelFilter::INFO);
    let want = match log.target {
        LogTarget::Auto => auto_target(),
        t => t,
    };
    let fmt = || {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
    };
    let registry = tracing_subscriber::registry();
    match want {
        LogTarget::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let _ = registry
                    .with(layer.with_syslog_identifier(bin.into()).with_filter(level))
                    .try_init();
                Sink::Journald
            }
            Err(_) => init(
                &Log {
                    target: LogTarget::Syslog,
                    ..log.clone()
                },
                bin,
            ),
        },
        LogTarget::Syslog => match Syslog::connect(bin, Path::new(SYSLOG_SOCKET)) {
            Ok(writer) => {
                let _ = registry
                    .with(
                        fmt()
                            .without_time()
                            .with_level(false)
                            .with_writer(writer)
                            .with_filter(level),
                    )
                    .try_init();
                Sink::Syslog
            }
            Err(_) => init(
                &Log {
                    target: LogTarget::Stderr,
                    ..log.clone()
                },
                bin,
            ),
        },
        LogTarget::File => {
            let file = log
                .file
                .as_deref()
                .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
            match file {
                Some(f) => {
                    let _ = registry
                        .with(fmt().with_writer(Mutex::new(f)).with_filter(level))
                        .try_init();
                    Sink::File
                }
                None => init(
                    &Log {
                        target: LogTarget::Stderr,
                        ..log.clone()
                    },
                    bin,
                ),
            }
        }
        LogTarget::Stderr => {
            let _ = registry
                .with(fmt().with_writer(io::stderr).with_filter(level))
                .try_init();
            Sink::Stderr
        }
        LogTarget::None | LogTarget::Auto => Sink::None,
    }
}

/// What `auto` means on this machine: journald, else syslog, else stderr.
pub fn auto_target() -> LogTarget {
    if Path::new(JOURNALD_SOCKET).exists() {
        LogTarget::Journald
    } else if Path::new(SYSLOG_SOCKET).exists() {
        LogTarget::Syslog
    } else {
        LogTarget::Stderr
    }
}

/// Reports the error that ends the run: one line on stderr starting with the binary's name,
/// and the same message in the log (once, when the log is stderr itself).
pub fn report_failure(sink: Sink, bin: &str, err: &anyhow::Error) {
    let msg = one_line(&format!("{err:#}"));
    if sink != Sink::Stderr {
        tracing::error!("{msg}");
    }
    let _ = writeln!(io::stderr(), "{bin}: {msg}");
}

/// Folds a message onto one line.
pub fn one_line(msg: &str) -> String {
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// RFC 3164 datagrams to `/dev/log`, one per event.
struct Syslog {
    socket: UnixDatagram,
    tag: String,
}

impl Syslog {
    fn connect(bin: &str, path: &Path) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Syslog {
            socket,
            tag: format!("{bin}[{}]", std::process::id()),
        })
    }
}

struct SyslogLine<'a> {
    syslog: &'a Syslog,
    priority: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf);
        let msg = format!(
            "<{}>{}: {}",
            self.priority,
            self.syslog.tag,
            line.trim_end()
        );
        let _ = self.syslog.socket.send(msg.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            syslog: self,
            priority: 8 + 6,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        // facility user (1), severity by level
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        SyslogLine {
            syslog: self,
            priority: 8 + severity,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_priority_tag_and_message() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::connect("oci-volume-hook", &path).unwrap();
        let mut w = SyslogLine {
            syslog: &syslog,
            priority: 8 + 3,
            buf: Vec::new(),
        };
        w.write_all(b"mount /x: refused\n").unwrap();
        drop(w);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(
            line,
            format!(
                "<11>oci-volume-hook[{}]: mount /x: refused",
                std::process::id()
            )
        );
    }

    #[test]
    fn errors_are_folded_onto_one_line() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
    }
}
