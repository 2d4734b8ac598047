//! The wrapper on a live node: a broken configuration never stops containers from being
//! stopped and removed, a stalled log never slows a start, a missing runtime is named, a
//! tenant's first container starts, and the container's output is the app's alone.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use daemons::Daemons;

fn docker_setup(test: &str) -> Option<(Fixture, Daemons)> {
    let f = Fixture::new();
    f.write_config("runtime = \"runc\"");
    let d = daemons::docker_with_wrapper(test, &f.path().join("d"), &f.config_path())?;
    let rootfs = f.bundle("img").join("rootfs");
    d.import(&rootfs, "ovh-test:latest");
    Some((f, d))
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_broken_config_never_stops_containers_from_stopping_and_going_away() {
    let Some((f, d)) = docker_setup("broken_config") else {
        return;
    };
    let t = f.tenant("user-toto");
    let volume = format!("{}:/data", t.join("data").display());
    let good = std::fs::read_to_string(f.config_path()).unwrap();
    type Breaks<'a> = &'a dyn Fn(&Path);
    let breakages: [(&str, Breaks); 4] = [
        ("unknown key", &|p| {
            std::fs::write(p, format!("{good}\nchroot = []\n")).unwrap()
        }),
        ("invalid TOML", &|p| {
            std::fs::write(p, "chroots = [\n").unwrap()
        }),
        ("file removed", &|p| std::fs::remove_file(p).unwrap()),
        ("mode 000", &|p| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap()
        }),
    ];
    for (what, breaks) in breakages {
        std::fs::write(f.config_path(), &good).unwrap();
        let o = d.docker(&[
            "run",
            "-d",
            "--name",
            "victim",
            "--network",
            "none",
            "--runtime",
            "ovh",
            "-v",
            &volume,
            "ovh-test:latest",
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ]);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        breaks(&f.config_path());
        let start = Instant::now();
        let o = d.docker(&["stop", "-t", "2", "victim"]);
        let took = start.elapsed();
        assert!(o.status.success(), "{what}: docker stop: {}", stderr(&o));
        assert!(
            took < Duration::from_secs(3),
            "{what}: docker stop took {took:?}"
        );
        let o = d.docker(&["rm", "victim"]);
        assert!(o.status.success(), "{what}: docker rm: {}", stderr(&o));
        for kind in ["tasks", "containers"] {
            let o = d.ctr(&["-n", "moby", kind, "ls", "-q"]);
            assert_eq!(out(&o).trim(), "", "{what}: containerd keeps {kind}");
        }
        // A new container is refused (fail closed) with the one line, naming the problem;
        // root reads a mode-000 file, so that one still works.
        let o = d.docker_sh("ovh", &volume, "ovh-test:latest", "true");
        if what == "mode 000" {
            assert!(o.status.success(), "{what}: {}", stderr(&o));
        } else {
            assert!(
                !o.status.success(),
                "{what}: a broken config must refuse a create"
            );
            let e = stderr(&o);
            assert!(e.contains("oci-volume-runtime: config"), "{what}: {e}");
        }
    }
}

#[test]
fn a_missing_runtime_is_named_in_one_line() {
    let Some((f, d)) = docker_setup("missing_runtime") else {
        return;
    };
    f.write_config("runtime = \"/nonexistent/runc-gone\"");
    let t = f.tenant("user-toto");
    let volume = format!("{}:/data", t.join("data").display());
    let o = d.docker_sh("ovh", &volume, "ovh-test:latest", "true");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("oci-volume-runtime: ") && e.contains("/nonexistent/runc-gone"),
        "{e}"
    );
    assert_eq!(
        out(&d.ctr(&["-n", "moby", "containers", "ls", "-q"])).trim(),
        ""
    );
    assert_eq!(f.staging_left(), (vec![], vec![]));
    // Every other subcommand says the same, in one line.
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(["state", "x"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "oci-volume-runtime", &["/nonexistent/runc-gone"]);
}

#[test]
fn a_first_container_of_a_new_tenant_starts_and_its_output_is_the_apps() {
    let Some((f, d)) = docker_setup("first_container") else {
        return;
    };
    // dockerd itself creates a missing `-v` source path (the chroot included) as
    // directories: the tool then repairs the one the image has as a file.
    // auto logging on a host without journald or syslog (sockets that do not exist), as CI.
    std::fs::write(
        f.config_path(),
        format!(
            "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\n[log]\ntarget = \"auto\"\nlevel = \"debug\"\njournald_socket = \"{2}/none\"\nsyslog_socket = \"{2}/none\"\nfile = \"{3}\"\n",
            f.base().display(),
            f.staging().display(),
            f.path().display(),
            f.log_path().display()
        ),
    )
    .unwrap();
    let chroot = f.base().join("user-tata");
    assert!(!chroot.exists());
    let lt = chroot.join("etc/localtime");
    let volume = format!("{}:/etc/localtime", lt.display());
    let app = "echo app-line-1; test -f /etc/localtime && echo app-line-2";
    let o = d.docker_sh("ovh", &volume, "ovh-test:latest", app);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        out(&o),
        "app-line-1\napp-line-2\n",
        "docker run shows only the app"
    );
    assert_eq!(stderr(&o), "", "and nothing on stderr");
    assert!(is_file(&lt));
    let remapped = daemons::dockremap_root();
    assert_eq!(owner_of(&lt), (remapped, remapped));
    assert!(
        f.log().contains("created file"),
        "the log has the lines: {}",
        f.log()
    );
    // docker logs of a detached container: the app's lines, nothing else.
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        "logs",
        "--network",
        "none",
        "--runtime",
        "ovh",
        "-v",
        &volume,
        "ovh-test:latest",
        "/bin/sh",
        "-c",
        app,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = d.docker(&["wait", "logs"]);
    let o = d.docker(&["logs", "logs"]);
    assert_eq!(out(&o), "app-line-1\napp-line-2\n");
    assert_eq!(stderr(&o), "");
    let _ = d.docker(&["rm", "-f", "logs"]);
}

/// A bound datagram socket nobody reads: a stalled journald or syslog.
fn stalled_socket(path: &Path) -> UnixDatagram {
    UnixDatagram::bind(path).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_stalled_journald_or_syslog_never_slows_a_start() {
    let Some(runc) = engine("stalled_log", "runc") else {
        return;
    };
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let mounts = (0..4)
        .map(|i| {
            std::fs::create_dir_all(t.join(format!("v{i}"))).unwrap();
            bind(&t.join(format!("v{i}")), &format!("/v{i}"), false)
        })
        .collect();
    write_config_json(&b, &runc_config("true", mounts, None));
    let run = |bin: &Path, id: &str| -> (Duration, Output) {
        let mut cmd = Command::new(bin);
        cmd.env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .arg("--root")
            .arg(b.join("state"))
            .args(["run", id])
            .current_dir(&b)
            .stdin(Stdio::null());
        let start = Instant::now();
        let o = cmd.output().unwrap();
        (start.elapsed(), o)
    };
    for target in ["journald", "syslog"] {
        let sock = f.path().join(format!("{target}.sock"));
        let _stalled = stalled_socket(&sock);
        std::fs::write(
            f.config_path(),
            format!(
                "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\nruntime = \"{}\"\n[log]\ntarget = \"{target}\"\nlevel = \"debug\"\n{target}_socket = \"{}\"\n",
                f.base().display(),
                f.staging().display(),
                runc.display(),
                sock.display()
            ),
        )
        .unwrap();
        let (mut plain, mut wrapped) = (Vec::new(), Vec::new());
        for i in 0..50 {
            let (d, o) = run(&runc, &format!("ovh-plain-{target}-{i}"));
            assert!(o.status.success(), "{}", stderr(&o));
            plain.push(d);
            let (d, o) = run(Path::new(wrapper_bin()), &format!("ovh-wrap-{target}-{i}"));
            assert!(o.status.success(), "{target} {i}: {}", stderr(&o));
            assert_eq!(stderr(&o), "", "nothing on the container's stderr");
            assert!(d < Duration::from_secs(5), "{target}: start {i} took {d:?}");
            wrapped.push(d);
        }
        let (p, w) = (median(plain), median(wrapped));
        assert!(
            w <= p + Duration::from_millis(50),
            "{target}: median start {w:?} against plain runc {p:?}"
        );
        std::fs::remove_file(&sock).unwrap();
    }
}

#[test]
fn podman_starts_failing_after_precreate_leave_no_staging() {
    let Some(podman) = engine("podman_failed_starts", "podman") else {
        return;
    };
    let f = Fixture::new();
    // No poststop hook: the staging must go without it (shown to stay without the reaper).
    let hooks = podman_hooks(&f, false);
    let t = f.tenant("user-pf");
    std::fs::create_dir_all(t.join("data")).unwrap();
    let rootfs = f.bundle("img").join("rootfs");
    chown_tree(&rootfs, 200000);
    let volume = format!("{}:/data", t.join("data").display());
    for i in 0..20 {
        // The command is not in the image: runc fails after precreate staged the source,
        // and podman runs no poststop.
        let o = podman_run(&podman, &f, &hooks, &volume, &rootfs, "x");
        assert!(!o.status.success(), "start {i} was meant to fail");
    }
    let o = podman_run(&podman, &f, &hooks, &volume, &rootfs, "echo ran");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        f.log().contains("pinned under"),
        "sources were staged: {}",
        f.log()
    );
    // The reapers are detached processes: give the last one a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.staging_left() != (vec![], vec![]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        f.staging_left(),
        (vec![], vec![]),
        "staging left by failed starts"
    );
}

#[test]
fn a_podman_refusal_is_findable_without_journald_or_syslog() {
    let Some(podman) = engine("podman_refusal_log", "podman") else {
        return;
    };
    let f = Fixture::new();
    std::fs::write(
        f.config_path(),
        format!(
            "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\nlog.journald_socket = \"{2}/none\"\nlog.syslog_socket = \"{2}/none\"\nlog.file = \"{3}\"\n",
            f.base().display(),
            f.staging().display(),
            f.path().display(),
            f.log_path().display()
        ),
    )
    .unwrap();
    let hooks = podman_hooks(&f, false);
    let t = f.tenant("user-pr");
    std::fs::create_dir_all(t.join("zone/keep")).unwrap();
    let rootfs = f.bundle("img").join("rootfs");
    chown_tree(&rootfs, 200000);
    // A non-empty directory where the image has a file: refused.
    let volume = format!("{}:/etc/localtime", t.join("zone").display());
    let o = podman_run(&podman, &f, &hooks, &volume, &rootfs, "true");
    assert!(!o.status.success());
    let log = f.log();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no refusal in the log file: {log:?}"));
    assert!(
        line.contains("mount /etc/localtime") && line.contains("non-empty directory"),
        "{line}"
    );
}
