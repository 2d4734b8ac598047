//! Where log lines go, and the rule that they never go where they would hurt.
//!
//! Under Docker, containerd and Kubernetes the runtime's stdout and stderr are the
//! container's own streams, so the tool never logs there unless the operator asks for it
//! (`log.target = "stderr"`). `auto` picks journald, else syslog, else the log file
//! (`log.file`, default [`DEFAULT_FILE`]), else — for the wrapper — the runtime's `--log` file
//! in runc's format, else nothing.
//!
//! Logging never blocks and never fails a container: sockets are non-blocking, a line that
//! cannot be sent is dropped and counted (the count rides on the next line that gets through),
//! and a destination that cannot be opened is skipped.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::{Log, LogTarget};

/// Where `auto` writes when neither journald nor syslog answers.
pub const DEFAULT_FILE: &str = "/var/log/oci-volume-hook.log";

/// Lines dropped since the last line that got through.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The sink chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Syslog,
    File,
    /// The runtime's `--log` file, in runc's format.
    RuntimeLog,
    Stderr,
    None,
}

/// The runtime's `--log` file and format, as the engine passed them to the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLog {
    pub path: PathBuf,
    pub json: bool,
}

/// Installs the global subscriber for binary `bin`; returns the sink in use.
pub fn init(log: &Log, bin: &'static str, runtime_log: Option<&RuntimeLog>) -> Sink {
    let level = LevelFilter::from_str(&log.level).unwrap_or(LevelFilter::INFO);
    let Some(dest) = choose(log, bin, runtime_log) else {
        return Sink::None;
    };
    let sink = dest.sink();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_level(false)
        .with_writer(Out(dest))
        .with_filter(level);
    let _ = tracing_subscriber::registry().with(layer).try_init();
    sink
}

fn choose(log: &Log, bin: &str, runtime_log: Option<&RuntimeLog>) -> Option<Dest> {
    let journald = || connect(&log.journald_socket).map(|s| Dest::Journald(s, bin.into()));
    let syslog = || connect(&log.syslog_socket).map(|s| Dest::Syslog(s, syslog_tag(bin)));
    let default_file = PathBuf::from(DEFAULT_FILE);
    let file = || open_append(log.file.as_ref().unwrap_or(&default_file)).map(Dest::File);
    let runtime =
        || runtime_log.and_then(|r| open_append(&r.path).map(|f| Dest::Runtime(f, r.json)));
    match log.target {
        LogTarget::Auto => journald().or_else(syslog).or_else(file).or_else(runtime),
        LogTarget::Journald => journald().or_else(runtime),
        LogTarget::Syslog => syslog().or_else(runtime),
        LogTarget::File => file().or_else(runtime),
        LogTarget::Stderr => Some(Dest::Stderr),
        LogTarget::None => None,
    }
}

fn connect(path: &Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// Appends; `O_NONBLOCK` so that a FIFO nobody reads cannot hang the tool.
fn open_append(path: &Path) -> Option<Mutex<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .ok()
        .map(Mutex::new)
}

fn syslog_tag(bin: &str) -> String {
    format!("{bin}[{}]", std::process::id())
}

enum Dest {
    Journald(UnixDatagram, String),
    Syslog(UnixDatagram, String),
    File(Mutex<File>),
    Runtime(Mutex<File>, bool),
    Stderr,
}

impl Dest {
    fn sink(&self) -> Sink {
        match self {
            Dest::Journald(..) => Sink::Journald,
            Dest::Syslog(..) => Sink::Syslog,
            Dest::File(_) => Sink::File,
            Dest::Runtime(..) => Sink::RuntimeLog,
            Dest::Stderr => Sink::Stderr,
        }
    }

    /// Sends one formatted line; false if it could not go out now.
    fn emit(&self, level: Level, line: &str) -> bool {
        let line = &one_line(line);
        let now = SystemTime::now();
        match self {
            Dest::Journald(s, id) => s.send(&journald_datagram(id, level, line)).is_ok(),
            Dest::Syslog(s, tag) => {
                let msg = format!("<{}>{tag}: {line}", 8 + severity(level));
                s.send(msg.as_bytes()).is_ok()
            }
            Dest::File(f) => {
                let text = format!("{} {:>5} {line}\n", rfc3339(now), level);
                write_locked(f, &text)
            }
            Dest::Runtime(f, json) => {
                let text = runtime_log_line(*json, level, line, now) + "\n";
                write_locked(f, &text)
            }
            Dest::Stderr => writeln!(io::stderr(), "{level} {line}").is_ok(),
        }
    }
}

fn write_locked(f: &Mutex<File>, text: &str) -> bool {
    f.lock()
        .map(|mut f| f.write_all(text.as_bytes()).is_ok())
        .unwrap_or(false)
}

/// syslog severities (RFC 5424).
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// journald's native protocol: `KEY=value` lines; a value holding a newline is sent as
/// `KEY\n<u64 LE length><value>\n`.
pub fn journald_datagram(identifier: &str, level: Level, message: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(message.len() + 96);
    let mut field = |key: &str, value: &str| {
        if value.contains('\n') {
            d.extend_from_slice(key.as_bytes());
            d.push(b'\n');
            d.extend_from_slice(&(value.len() as u64).to_le_bytes());
            d.extend_from_slice(value.as_bytes());
        } else {
            d.extend_from_slice(key.as_bytes());
            d.push(b'=');
            d.extend_from_slice(value.as_bytes());
        }
        d.push(b'\n');
    };
    field("PRIORITY", &severity(level).to_string());
    field("SYSLOG_IDENTIFIER", identifier);
    field("SYSLOG_PID", &std::process::id().to_string());
    field("MESSAGE", message);
    d
}

/// The writer tracing's formatter writes each event into; the line goes out when dropped.
struct Out(Dest);

struct Line<'a> {
    out: &'a Dest,
    level: Level,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        // `emit` folds and escapes it.
        let text = String::from_utf8_lossy(&self.buf);
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        let line = match dropped {
            0 => text.into_owned(),
            n => format!("({n} earlier log lines dropped) {text}"),
        };
        if !self.out.emit(self.level, &line) {
            DROPPED.fetch_add(dropped + 1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for Out {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Line {
            out: &self.0,
            level: Level::INFO,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            out: &self.0,
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// How many lines were dropped and not yet reported.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Reports the error that ends the run: one line on stderr starting with the binary's name,
/// and the same message in the log.
pub fn report_failure(sink: Sink, bin: &str, err: &anyhow::Error) {
    let msg = one_line(&format!("{err:#}"));
    if !matches!(sink, Sink::Stderr | Sink::None) {
        tracing::error!("{msg}");
    }
    let _ = writeln!(io::stderr(), "{bin}: {msg}");
}

/// Folds a message onto one line, escaping every control character (C0, DEL, C1 such as
/// U+0085) and U+2028/U+2029 that remains: tenant-chosen names (paths, annotations, ids) are
/// in messages, and none may start a forged line in any sink. Applying it twice changes
/// nothing more.
pub fn one_line(msg: &str) -> String {
    let folded = msg
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !folded.chars().any(breaks_lines) {
        return folded;
    }
    let mut out = String::with_capacity(folded.len() + 16);
    for c in folded.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if breaks_lines(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` may not appear raw in a log line.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// One line in runc's log format: JSON (`--log-format json`) or logrus text.
pub fn runtime_log_line(json: bool, level: Level, msg: &str, now: SystemTime) -> String {
    let time = rfc3339(now);
    let level = level.as_str().to_ascii_lowercase();
    if json {
        serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
    } else {
        format!("time={time:?} level={level} msg={msg:?}")
    }
}

/// Appends one error line to the runtime's `--log` file, where containerd looks for the
/// reason a `create` failed. Never blocks, never fails the caller.
pub fn append_runtime_error(log: &RuntimeLog, msg: &str) {
    if let Some(f) = open_append(&log.path) {
        let msg = one_line(msg);
        let line = runtime_log_line(log.json, Level::ERROR, &msg, SystemTime::now()) + "\n";
        write_locked(&f, &line);
    }
}

/// UTC RFC 3339 with seconds, e.g. 2026-11-24T02:03:04Z.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn syslog_lines_carry_priority_tag_and_message() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let dest = Dest::Syslog(connect(&path).unwrap(), syslog_tag("oci-volume-hook"));
        assert!(dest.emit(Level::ERROR, "mount /x: refused"));
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!(
                "<11>oci-volume-hook[{}]: mount /x: refused",
                std::process::id()
            )
        );
    }

    #[test]
    fn journald_fields_and_binary_values() {
        let d = journald_datagram("oci-volume-runtime", Level::WARN, "a=b");
        let text = String::from_utf8(d).unwrap();
        assert!(text.starts_with("PRIORITY=4\nSYSLOG_IDENTIFIER=oci-volume-runtime\n"));
        assert!(text.ends_with("MESSAGE=a=b\n"), "{text}");
        let d = journald_datagram("x", Level::INFO, "two\nlines");
        let at = d.windows(8).position(|w| w == b"MESSAGE\n").unwrap() + 8;
        assert_eq!(&d[at..at + 8], &9u64.to_le_bytes());
        assert_eq!(&d[at + 8..], b"two\nlines\n");
    }

    #[test]
    fn a_receiver_that_never_reads_costs_nothing() {
        // A stalled journald: a bound socket nobody reads (its queue fills after a few).
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("journal");
        let _server = UnixDatagram::bind(&path).unwrap();
        let dest = Dest::Journald(connect(&path).unwrap(), "x".into());
        let start = Instant::now();
        let sent = (0..2000)
            .filter(|i| dest.emit(Level::INFO, &format!("line {i}")))
            .count();
        assert!(sent < 2000, "the receiver's buffer filled up");
        assert!(start.elapsed() < Duration::from_secs(2), "never blocks");
    }

    #[test]
    fn runtime_log_lines() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_485_784);
        let line = runtime_log_line(true, Level::ERROR, "oci-volume-runtime: mount /x: bad", t);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "oci-volume-runtime: mount /x: bad");
        assert_eq!(v["time"], "2026-11-24T02:03:04Z");
        let text = runtime_log_line(false, Level::INFO, "a \"q\"", t);
        assert_eq!(
            text,
            "time=\"2026-11-24T02:03:04Z\" level=info msg=\"a \\\"q\\\"\""
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn auto_never_picks_stderr() {
        let t = tempfile::tempdir().unwrap();
        let log = Log {
            journald_socket: t.path().join("none"),
            syslog_socket: t.path().join("none"),
            file: Some(t.path().join("no/such/dir/x.log")),
            ..Log::default()
        };
        assert!(choose(&log, "x", None).is_none());
        let rl = RuntimeLog {
            path: t.path().join("log.json"),
            json: true,
        };
        assert_eq!(
            choose(&log, "x", Some(&rl)).unwrap().sink(),
            Sink::RuntimeLog
        );
    }

    #[test]
    fn errors_are_folded_onto_one_line() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
    }

    /// A tenant's name holding CR, LS, PS, NEL, DEL, ESC and a C1 control.
    const FORGED: &str = "/c/t/x\r2026 ERROR forged\u{2028}y\u{2029}\u{85}\u{7f}\u{1b}[2J\u{9b}\tz";
    const ESCAPED: &str =
        "/c/t/x\\r2026 ERROR forged\\u{2028}y\\u{2029}\\u{85}\\u{7f}\\u{1b}[2J\\u{9b}\\tz";

    #[test]
    fn control_characters_and_line_separators_are_escaped() {
        assert_eq!(one_line(FORGED), ESCAPED);
        assert_eq!(one_line(&one_line(FORGED)), ESCAPED, "idempotent");
        assert!(!one_line(FORGED).chars().any(breaks_lines));
        assert_eq!(
            one_line("caf\u{e9} \u{a0}ok"),
            "caf\u{e9} \u{a0}ok",
            "printable text kept"
        );
    }

    /// What a sink received holds no raw line break of any kind, and the escaped name.
    fn assert_escaped(received: &str) {
        assert!(received.contains(ESCAPED), "{received:?}");
        let body = received.trim_end_matches('\n');
        assert!(!body.chars().any(breaks_lines), "{received:?}");
    }

    /// Sends one tracing line holding `FORGED` through `dest`, as the subscriber does.
    fn log_through(dest: &Dest) {
        let mut line = Line {
            out: dest,
            level: Level::WARN,
            buf: Vec::new(),
        };
        writeln!(line, "mount /data: source {FORGED} refused").unwrap();
    }

    #[test]
    fn every_sink_gets_tenant_names_escaped() {
        let t = tempfile::tempdir().unwrap();
        let mut buf = [0u8; 4096];
        for journald in [true, false] {
            let path = t.path().join(format!("sock-{journald}"));
            let server = UnixDatagram::bind(&path).unwrap();
            let socket = connect(&path).unwrap();
            let dest = match journald {
                true => Dest::Journald(socket, "x".into()),
                false => Dest::Syslog(socket, syslog_tag("x")),
            };
            log_through(&dest);
            let n = server.recv(&mut buf).unwrap();
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            if journald {
                // One `KEY=value` line per field: the message went as text, not binary.
                assert!(got.contains("\nMESSAGE=mount /data"), "{got:?}");
                assert_escaped(got.rsplit("\nMESSAGE=").next().unwrap());
            } else {
                assert_escaped(&got);
            }
        }
        for (name, json) in [
            ("file", None),
            ("log.json", Some(true)),
            ("log.txt", Some(false)),
        ] {
            let path = t.path().join(name);
            let file = open_append(&path).unwrap();
            let dest = match json {
                None => Dest::File(file),
                Some(json) => Dest::Runtime(file, json),
            };
            log_through(&dest);
            if let Some(json) = json {
                let rl = RuntimeLog {
                    path: path.clone(),
                    json,
                };
                append_runtime_error(&rl, &format!("refused {FORGED}"));
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 1 + json.is_some() as usize, "{name}: {text:?}");
            for line in lines {
                if json == Some(true) {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_escaped(v["msg"].as_str().unwrap());
                    assert!(!line.chars().any(breaks_lines), "{line:?}");
                } else if json == Some(false) {
                    // logrus quotes the message: escapes show doubled.
                    assert!(!line.chars().any(breaks_lines), "{line:?}");
                    assert!(
                        line.contains("\\\\r2026 ERROR forged\\\\u{2028}"),
                        "{line:?}"
                    );
                } else {
                    assert_escaped(line);
                }
            }
        }
    }
}
