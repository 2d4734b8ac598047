//! The wrapper's reading of runc's argv against the real runc's: for each spelling, what runc
//! does with it (the bundle it changes into, its help, a usage error) must be what
//! `runc_args::parse` says it will do.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use oci_volume_hook::runc_args::{self, Action};

/// What runc did with an argv, seen from outside.
#[derive(Debug, PartialEq)]
enum Runc {
    /// Printed help or its version, exit 0.
    Help,
    /// Changed into this bundle (`None`: stayed in the working directory) to read config.json.
    Bundle(Option<PathBuf>),
    /// A usage error: nothing read.
    Rejected,
}

/// Bundles that do not exist, so runc says which one it tried: `/x` in a spelling stands for
/// `/nonexistent-ovh-argv/x`.
const MISSING: &str = "/nonexistent-ovh-argv";

fn argv(spelling: &str) -> Vec<String> {
    spelling
        .split_whitespace()
        .map(|a| {
            a.replace("=/", &format!("={MISSING}/"))
                .replace("''", "")
                .to_string()
        })
        .map(|a| {
            if a.starts_with('/') {
                format!("{MISSING}{a}")
            } else {
                a
            }
        })
        .collect()
}

fn what_runc_does(runc: &Path, cwd: &Path, args: &[String]) -> Runc {
    let o = Command::new(runc)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    if o.status.success() && (out.starts_with("NAME:") || out.starts_with("runc version")) {
        return Runc::Help;
    }
    assert!(!o.status.success(), "{args:?}: {out} {err}");
    if let Some(rest) = err.split("chdir ").nth(1) {
        let dir = rest.split(": no such file").next().unwrap();
        return Runc::Bundle(Some(PathBuf::from(dir)));
    }
    if err.contains("JSON specification file config.json not found") {
        return Runc::Bundle(None);
    }
    Runc::Rejected
}

#[test]
fn the_wrapper_reads_every_spelling_as_runc_does() {
    let Some(runc) = engine("runc_argv", "runc") else {
        return;
    };
    let f = Fixture::new();
    let cwd = f.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let state = f.path().join("state");
    let spellings = [
        "create --bundle=/x id",
        "create -b /x id",
        "create -b=/x id",
        "create -bundle /x id",
        "run --console-socket /s -b /x id",
        "--debug run --bundle /x -d id",
        "run -d=true --bundle /x id",
        "run --detach=false --keep -b /x id",
        "create -b /y -b /x id",
        "create --bundle /x -- id",
        "run id",
        "run --bundle= id",
        "run id --bundle /x",
        "run id -b /x",
        "run id --bundle=/x",
        "create id -b=/x --pid-file /p",
        "run id -d --bundle /x",
        "run id --keep --bundle /x --no-pivot",
        "create --pid-file /p id --bundle /x",
        "run --pid-file -b id",
        "run --bundle -- id",
        "run -d id --bundle /x",
        "run id1 id2",
        "run id -- --bundle /x",
        "run -- id --bundle /x",
        "run id - --bundle /x",
        "run id --pid-file --bundle /x",
        "create --pidfd-socket /s --bundle /x id",
        "create id --pidfd-socket /s",
        "run id --pidfd-socket=/s -b /x",
        "run --pidfd-socket /s id --bundle=/x",
        "run --pid-file /p --pidfd-socket id --bundle /x",
        "run --pid-file --pidfd-socket id --bundle /x",
        "restore -b /x id",
        "restore id --bundle=/x",
        "restore --image-path img id -b /x",
        "restore -d --work-path w --bundle /x id",
        "restore id --empty-ns network -b /x",
        "restore id",
        "restore -h",
        "restore id1 id2",
        "restore --pidfd-socket /s id",
        "run id --foo",
        "create -b /x --bundle /y id",
        "run --detach=maybe id",
        "create --bundle",
        "create -=x id",
        "create ---bundle /x id",
        "run id ---bundle /x",
        "run id -h --help",
        "run -h",
        "create -h",
        "run --help",
        "create id -h",
        "run id --help",
        "run -h=true id",
        "run --bundle /x -h id",
        "create id --bundle /x --help=1",
        "--help run id",
        "-h create --bundle /x id",
        "-v run id",
        "--version create id",
        "help run",
        "h create",
        "run -h=false id",
        "run --help=f id",
        "run",
        "create -b /x",
        "--foo create id",
        "--foo list",
        "run id --root /r",
        "--systemd-cgroup=false run id",
        "--log-format text run id -b /x",
        "-- create -b /x id",
        "--debug -- run id",
        "-debug=false run -b /x id",
    ];
    // runc 1.2+ has --pidfd-socket, 1.1.5 rejects it.
    let help = Command::new(&runc)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let knows_pidfd = String::from_utf8_lossy(&help.stdout).contains("--pidfd-socket");
    let mut wrong = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in spellings {
        let args = argv(s);
        let mut full = vec!["--root".to_string(), state.display().to_string()];
        full.extend(args.iter().cloned());
        let runc_did = what_runc_does(&runc, &cwd, &full);
        seen.insert(match &runc_did {
            Runc::Help => "help",
            Runc::Bundle(Some(_)) => "bundle",
            Runc::Bundle(None) => "cwd",
            Runc::Rejected => "rejected",
        });
        let ours = runc_args::parse(&full.iter().map(OsString::from).collect::<Vec<_>>()).action;
        let agree = match (&ours, &runc_did) {
            (Action::Prepare { bundle, .. }, Runc::Bundle(b)) => bundle == b,
            // The wrapper reads runc 1.1.5's and 1.2+'s argv: a spelling only one of them
            // accepts is prepared, and the other runc rejects it itself, mounting nothing.
            // (1.2+ rejects only where --pidfd-socket takes the id along when reordered.)
            (Action::Prepare { .. }, Runc::Rejected) => {
                s.contains("pidfd-socket")
                    && (!knows_pidfd || s.contains("--pid-file --pidfd-socket id"))
            }
            (Action::PassThrough, Runc::Help | Runc::Rejected) => true,
            (Action::Refuse(_), Runc::Rejected) => true,
            _ => false,
        };
        if !agree {
            wrong.push(format!("{s}: runc {runc_did:?}, wrapper {ours:?}"));
        }
    }
    assert!(wrong.is_empty(), "read differently:\n{}", wrong.join("\n"));
    assert_eq!(
        seen.len(),
        4,
        "every outcome of runc's is covered: {seen:?}"
    );
}

/// runc reads `run ID --bundle B` as `run --bundle B ID`. A wrapper that stopped reading at the
/// id prepared the working directory's config.json and let runc mount B's sources as they
/// were: here a tenant's symlink to a host file.
#[test]
fn a_bundle_given_after_the_id_is_the_one_prepared() {
    let Some(runc) = engine("runc_argv_bundle_after_id", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let host = f.path().join("host-secret");
    std::fs::write(&host, "HOST-SECRET\n").unwrap();
    let t = f.tenant("user-toto");
    // Inside the chroot the link names the tenant's own file; on the host, the host's.
    let inside = t.join(host.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::write(&inside, "TENANT\n").unwrap();
    std::os::unix::fs::symlink(&host, t.join("secret")).unwrap();
    // The working directory holds an innocent bundle; the one runc uses comes after the id.
    let decoy = f.bundle("decoy");
    write_config_json(&decoy, &runc_config("echo decoy", vec![], None));
    let b = f.bundle("b");
    let doc = runc_config(
        "cat /secret",
        vec![bind(&t.join("secret"), "/secret", true)],
        None,
    );
    write_config_json(&b, &doc);
    let state = f.path().join("state");
    let before = snapshot(&host);
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(&state)
        .args(["run", "ovh-argv-after-id", "--bundle"])
        .arg(&b)
        .current_dir(&decoy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("HOST-SECRET"),
        "the host file was mounted: {out}"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(out, "TENANT\n", "the link resolved inside the chroot");
    assert_unchanged(&before, &snapshot(&host), "run ID --bundle B");
    // B was the bundle prepared (its source pinned, its config.json put back as it was); the
    // decoy's config.json was not read for anything.
    assert!(f.log().contains("pinned under"), "{}", f.log());
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(after, doc);
    let decoy_doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(decoy.join("config.json")).unwrap()).unwrap();
    assert_eq!(decoy_doc, runc_config("echo decoy", vec![], None));
}

/// `-h`/`--help` prints runc's help wherever it stands; the wrapper prepares nothing, not even
/// in a working directory whose config.json it cannot read.
#[test]
fn help_is_runcs_for_every_subcommand() {
    let Some(runc) = engine("runc_argv_help", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let cwd = f.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("config.json"), "{not json").unwrap();
    for args in [
        &["run", "-h"][..],
        &["create", "-h"],
        &["run", "--help"],
        &["create", "id", "--help"],
        &["delete", "-h"],
        &["--help"],
        &["run", "id", "-h=true"],
    ] {
        let o = Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .args(args)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let plain = Command::new(&runc)
            .args(args)
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(o.stdout, plain.stdout, "{args:?}: runc's own help");
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("NAME:"));
        assert_eq!(o.stderr, b"", "{args:?}");
    }
    assert_eq!(f.log(), "", "nothing prepared, nothing logged");
}

/// What runc might read differently is refused with one line, and runc is not called.
#[test]
fn an_uncertain_argv_is_refused_in_one_line() {
    let Some(runc) = engine("runc_argv_refused", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let b = f.bundle("b");
    write_config_json(&b, &runc_config("true", vec![], None));
    let state = f.path().join("state");
    let log = f.path().join("runc-log.json");
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(&state)
        .arg("--log")
        .arg(&log)
        .args([
            "--log-format",
            "json",
            "create",
            "ovh-argv-x",
            "--no-such-flag",
            "/s",
        ])
        .current_dir(&b)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &["runc create", "3 arguments", "not certain"],
    );
    assert!(!state.join("ovh-argv-x").exists(), "runc was not called");
    assert!(f.log().contains("not certain"), "{}", f.log());
    let last = std::fs::read_to_string(&log).unwrap();
    assert!(last.contains("\"level\":\"error\""), "{last}");
}
