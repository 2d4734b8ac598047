//! Tenant-chosen names in every log sink: a `\r` or a U+2028 in a source path must never
//! start a line of its own (a forged log line). Through the real binaries, each sink in turn:
//! journald and syslog (sockets this test binds), the log file, stderr, runc's `--log` file
//! in both formats.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// The tenant's directory name: a carriage return, then a forged line, then U+2028.
const NAME: &str = "x\r2026-12-01T00:00:00Z  INFO forged\u{2028}y";
/// How it shows in every sink.
const SHOWN: &str = "x\\r2026-12-01T00:00:00Z  INFO forged\\u{2028}y";

fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` is lines of which none holds a raw control character or line separator, and the
/// name is among them, escaped.
fn assert_clean(what: &str, text: &str) {
    assert!(text.contains(SHOWN), "{what}: {text:?}");
    for line in text.split('\n') {
        assert!(!line.chars().any(breaks_lines), "{what}: {line:?}");
    }
}

struct Scene {
    f: Fixture,
    /// A mount refused (`..` in a chroot), and one prepared; both through `NAME`.
    refused: Vec<u8>,
    prepared: Vec<u8>,
}

fn scene() -> Scene {
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join(NAME)).unwrap();
    let b = f.bundle("b");
    let doc = |source: &Path| {
        let mut doc = runc_config("true", vec![bind(source, "/data", false)], None);
        doc["root"]["path"] = serde_json::json!(b.join("rootfs"));
        serde_json::to_vec(&doc).unwrap()
    };
    let refused = doc(&t.join(NAME).join("../vol"));
    let prepared = doc(&t.join(NAME).join("vol"));
    Scene {
        f,
        refused,
        prepared,
    }
}

impl Scene {
    fn configure(&self, top: &str, log: &str) {
        let text = format!(
            "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\npin_sources = false\n{top}\n[log]\nlevel = \"debug\"\n{log}\n",
            self.f.base().display(),
            self.f.staging().display(),
        );
        std::fs::write(self.f.config_path(), text).unwrap();
    }

    /// precreate on both documents: the refusal is one line on stderr, the other succeeds.
    fn precreate(&self) -> Output {
        let o = self.f.hook(&["precreate"], &self.prepared);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = self.f.hook(&["precreate"], &self.refused);
        assert_one_line_error(&o, "oci-volume-hook", &["contains `..`"]);
        assert_clean("stderr", &stderr(&o));
        o
    }
}

#[test]
fn journald_and_syslog_get_tenant_names_escaped() {
    if !root_or_skip("log_sockets") {
        return;
    }
    let s = scene();
    for target in ["journald", "syslog"] {
        let socket = s.f.path().join(format!("{target}.sock"));
        let server = UnixDatagram::bind(&socket).unwrap();
        server.set_nonblocking(true).unwrap();
        s.configure(
            "",
            &format!(
                "target = \"{target}\"\n{target}_socket = \"{}\"",
                socket.display()
            ),
        );
        s.precreate();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = server.recv(&mut buf) {
            let d = String::from_utf8_lossy(&buf[..n]).into_owned();
            // journald: one `KEY=value` per line, the message last; syslog: one datagram.
            let msg = match target {
                "journald" => d.rsplit_once("\nMESSAGE=").unwrap().1.to_string(),
                _ => d,
            };
            got.push(msg.trim_end_matches('\n').to_string());
        }
        assert!(got.len() >= 2, "{target}: {got:?}");
        assert_clean(target, &got.join("\n"));
        assert!(
            got.iter().any(|l| l.contains("contains `..`")),
            "{target}: {got:?}"
        );
    }
}

#[test]
fn the_log_file_and_stderr_get_tenant_names_escaped() {
    if !root_or_skip("log_file") {
        return;
    }
    let s = scene();
    let file = format!("target = \"file\"\nfile = \"{}\"", s.f.log_path().display());
    s.configure("", &file);
    s.precreate();
    let log = s.f.log();
    assert_clean("log file", &log);
    assert!(log.lines().count() >= 2, "{log}");

    // target = "stderr": every line the tool writes there.
    s.configure("", "target = \"stderr\"");
    let o = s.f.hook(&["precreate"], &s.prepared);
    assert!(o.status.success());
    assert!(!stderr(&o).chars().any(|c| c != '\n' && breaks_lines(c)));
    let o = s.f.hook(&["precreate"], &s.refused);
    assert!(!o.status.success());
    assert_clean("stderr", &stderr(&o));
}

#[test]
fn runcs_log_file_gets_tenant_names_escaped() {
    let Some(runc) = engine("log_runc", "runc") else {
        return;
    };
    let s = scene();
    let b = s.f.path().join("b");
    std::fs::write(b.join("config.json"), &s.refused).unwrap();
    // No journald, no syslog, no file: the tool's own lines go to runc's --log file too.
    let none = s.f.path().join("none");
    let none = none.display();
    s.configure(
        &format!("runtime = \"{}\"", runc.display()),
        &format!(
            "target = \"auto\"\njournald_socket = \"{none}\"\nsyslog_socket = \"{none}\"\nfile = \"{none}/x\""
        ),
    );
    for format in ["json", "text"] {
        let log = b.join(format!("log.{format}"));
        let o = Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", s.f.config_path())
            .arg("--root")
            .arg(b.join("state"))
            .arg("--log")
            .arg(&log)
            .args(["--log-format", format, "create", "--bundle"])
            .arg(&b)
            .arg(format!("ovh-log-{format}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_one_line_error(&o, "oci-volume-runtime", &["contains `..`"]);
        assert_clean("stderr", &stderr(&o));
        let text = std::fs::read_to_string(&log).unwrap();
        for line in text.lines() {
            assert!(!line.chars().any(breaks_lines), "{format}: {line:?}");
        }
        let msgs: Vec<String> = match format {
            "json" => text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["msg"].as_str().unwrap().to_string()
                })
                .collect(),
            // logrus text quotes the message: the escapes show with doubled backslashes.
            _ => text.lines().map(|l| l.replace("\\\\", "\\")).collect(),
        };
        assert_clean(format, &msgs.join("\n"));
    }
}
