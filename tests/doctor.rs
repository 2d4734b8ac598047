//! `oci-volume-hook doctor`: each engine's configuration present, absent, broken; chroot
//! bases; the runtime; log destinations; staging leftovers; a real dockerd answering with
//! and without the runtime; the `--json` document; and that it changes nothing.

mod common;
#[path = "common/daemons.rs"]
#[allow(dead_code)]
mod daemons;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use daemons::Daemons;
use serde_json::{Value, json};

/// A fixture (config, chroots) and a host root holding the engines' files.
struct Node {
    f: Fixture,
    root: PathBuf,
}

impl Node {
    fn new() -> Node {
        let f = Fixture::new();
        f.tenant("user-toto");
        f.tenant("user-titi");
        let root = f.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        Node { f, root }
    }

    /// A node where every engine is registered the way the README says.
    fn configured() -> Node {
        let n = Node::new();
        let w = wrapper_bin();
        n.write(
            "etc/docker/daemon.json",
            &json!({"runtimes": {"oci-volume": {"path": w}}}).to_string(),
        );
        n.write(
            "etc/containers/containers.conf.d/50-oci-volume-hook.conf",
            &std::fs::read_to_string("packaging/containers.conf.d/50-oci-volume-hook.conf")
                .unwrap(),
        );
        n.write(
            "usr/share/oci-volume-hook/hooks.d/oci-volume-hook-precreate.json",
            &std::fs::read_to_string("hooks.d/oci-volume-hook-precreate.json").unwrap(),
        );
        n.write(
            "etc/containerd/config.toml",
            &containerd_v2(&format!("BinaryName = \"{w}\"")),
        );
        n.write(
            "etc/crio/crio.conf.d/50-oci-volume.conf",
            &format!("[crio.runtime.runtimes.oci-volume]\nruntime_path = \"{w}\"\nruntime_type = \"oci\"\n"),
        );
        n
    }

    /// The fixture's config with other chroot patterns.
    fn chroots(&self, patterns: &[String]) {
        let text = std::fs::read_to_string(self.f.config_path()).unwrap();
        let rest: Vec<&str> = text.lines().filter(|l| !l.starts_with("chroots")).collect();
        let list = serde_json::to_string(patterns).unwrap();
        let text = format!("chroots = {list}\n{}\n", rest.join("\n"));
        std::fs::write(self.f.config_path(), text).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn doctor(&self, args: &[&str]) -> Output {
        Command::new(hook_bin())
            .arg("--config")
            .arg(self.f.config_path())
            .args(["doctor", "--wrapper", wrapper_bin(), "--host-root"])
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self) -> Value {
        let o = self.doctor(&["--json"]);
        let v: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        assert_eq!(v["ok"], o.status.success(), "exit status and \"ok\" agree");
        v
    }

    /// (verdict, summary, fix) of one check.
    fn check(&self, id: &str) -> (String, String, String) {
        let v = self.json();
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}: {v:#}"))
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("verdict"), s("summary"), s("fix"))
    }
}

fn containerd_v2(options: &str) -> String {
    format!(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.oci-volume]\nruntime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.oci-volume.options]\n{options}\n"
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_node_set_up_for_every_engine_passes() {
    if !root_or_skip("a_node_set_up_for_every_engine_passes") {
        return;
    }
    let n = Node::configured();
    let o = n.doctor(&[]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    for (id, needle) in [
        ("engine.docker ", "runtime oci-volume runs"),
        (
            "engine.podman ",
            "/usr/share/oci-volume-hook/hooks.d: precreate hook",
        ),
        ("engine.containerd ", "handler oci-volume runs"),
        ("engine.crio ", "runtime oci-volume runs"),
        ("chroot:", "2 chroot(s) match now"),
        ("runtime ", "runc version"),
        ("log ", "file "),
    ] {
        let line = out
            .lines()
            .find(|l| l[5..].starts_with(id))
            .unwrap_or_else(|| panic!("no {id}: {out}"));
        assert!(line.starts_with("ok   ") && line.contains(needle), "{line}");
    }
    // dockerd is configured but not running here.
    assert!(
        out.lines()
            .any(|l| l.starts_with("skip engine.docker.live")),
        "{out}"
    );
}

#[test]
fn engines_that_are_absent_are_skipped() {
    if !root_or_skip("engines_that_are_absent_are_skipped") {
        return;
    }
    let n = Node::new();
    for id in [
        "engine.docker",
        "engine.podman",
        "engine.containerd",
        "engine.crio",
    ] {
        let (verdict, summary, _) = n.check(id);
        assert_eq!(verdict, "skip", "{id}: {summary}");
        assert!(summary.contains("not installed"), "{summary}");
    }
    assert!(n.doctor(&[]).status.success());
}

#[test]
fn broken_engine_configurations_fail_naming_the_file() {
    if !root_or_skip("broken_engine_configurations_fail_naming_the_file") {
        return;
    }
    for (id, file, text, says) in [
        (
            "engine.docker",
            "etc/docker/daemon.json",
            "{\"runtimes\": ",
            "invalid JSON",
        ),
        (
            "engine.podman",
            "etc/containers/containers.conf.d/60-x.conf",
            "[engine\nhooks_dir = 1",
            "invalid TOML",
        ),
        (
            "engine.containerd",
            "etc/containerd/config.toml",
            "version = 2\n[plugins\n",
            "invalid TOML",
        ),
        (
            "engine.crio",
            "etc/crio/crio.conf.d/10-x.conf",
            "[crio.runtime\n",
            "invalid TOML",
        ),
    ] {
        let n = Node::configured();
        n.write(file, text);
        let (verdict, summary, fix) = n.check(id);
        assert_eq!(verdict, "fail", "{id}: {summary}");
        assert!(
            summary.contains(n.root.join(file).to_str().unwrap()) && summary.contains(says),
            "{summary}"
        );
        assert!(!fix.is_empty());
        let o = n.doctor(&[]);
        assert_eq!(o.status.code(), Some(1));
        let line = stdout(&o)
            .lines()
            .find(|l| l.contains(id))
            .unwrap()
            .to_string();
        assert!(
            line.starts_with("FAIL") && line.contains("; fix: "),
            "{line}"
        );
    }
}

#[test]
fn engines_without_the_wrapper_fail_with_the_command_that_fixes_it() {
    if !root_or_skip("engines_without_the_wrapper_fail_with_the_command_that_fixes_it") {
        return;
    }
    for (id, file, text, fix_says) in [
        (
            "engine.docker",
            "etc/docker/daemon.json",
            "{\"runtimes\": {\"x\": {\"path\": \"/usr/bin/runc\"}}}",
            "oci-volume-hook configure docker",
        ),
        (
            "engine.docker",
            "etc/docker/daemon.json",
            "",
            "oci-volume-hook configure docker",
        ),
        (
            "engine.podman",
            "etc/containers/containers.conf.d/50-oci-volume-hook.conf",
            "[engine]\n",
            "hooks_dir",
        ),
        (
            "engine.containerd",
            "etc/containerd/config.toml",
            &containerd_v2("BinaryName = \"/usr/bin/runc\""),
            "oci-volume-hook configure containerd",
        ),
        (
            "engine.crio",
            "etc/crio/crio.conf.d/50-oci-volume.conf",
            "[crio.runtime]\n",
            "oci-volume-hook configure crio",
        ),
    ] {
        let n = Node::configured();
        n.write(file, text);
        let (verdict, summary, fix) = n.check(id);
        assert_eq!(verdict, "fail", "{id} with {text:?}: {summary}");
        assert!(fix.contains(fix_says), "{fix}");
    }
}

#[test]
fn containerd_imports_are_merged_as_containerd_does() {
    if !root_or_skip("containerd_imports_are_merged_as_containerd_does") {
        return;
    }
    let w = wrapper_bin();
    let n = Node::configured();
    // The handler in a drop-in, imported by glob.
    n.write(
        "etc/containerd/config.toml",
        "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    );
    n.write(
        "etc/containerd/conf.d/50-oci-volume.toml",
        &containerd_v2(&format!("BinaryName = \"{w}\"")),
    );
    let (verdict, summary, _) = n.check("engine.containerd");
    assert_eq!(verdict, "ok", "{summary}");
    assert!(summary.contains("conf.d/50-oci-volume.toml"), "{summary}");
    // containerd 1.x: a later import's CRI section replaces the whole section.
    n.write(
        "etc/containerd/conf.d/60-other.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"pause\"\n",
    );
    assert_eq!(n.check("engine.containerd").0, "fail");
    // containerd 2.x (version 3) merges tables: the handler survives.
    n.write(
        "etc/containerd/config.toml",
        "version = 3\nimports = [\"conf.d/*.toml\"]\n",
    );
    n.write(
        "etc/containerd/conf.d/50-oci-volume.toml",
        &format!("version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.oci-volume.options]\nBinaryName = \"{w}\"\n"),
    );
    n.write(
        "etc/containerd/conf.d/60-other.toml",
        "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\nenable_selinux = false\n",
    );
    let (verdict, summary, _) = n.check("engine.containerd");
    assert_eq!(verdict, "ok", "{summary}");
}

#[test]
fn podman_uses_the_last_hooks_dir_set() {
    if !root_or_skip("podman_uses_the_last_hooks_dir_set") {
        return;
    }
    let n = Node::configured();
    let later = "etc/containers/containers.conf.d/90-site.conf";
    n.write(later, "[engine]\nhooks_dir = [\"/etc/site/hooks.d\"]\n");
    let (verdict, summary, _) = n.check("engine.podman");
    assert_eq!(verdict, "fail", "{summary}");
    assert!(
        summary.contains(n.root.join(later).to_str().unwrap()),
        "names the file that set it: {summary}"
    );
    n.write(
        later,
        "[engine]\nhooks_dir = [\"/etc/site/hooks.d\", {append = true}]\n",
    );
    assert_eq!(n.check("engine.podman").0, "ok");
}

#[test]
fn a_precreate_hook_where_crio_reads_hooks_fails() {
    if !root_or_skip("a_precreate_hook_where_crio_reads_hooks_fails") {
        return;
    }
    let n = Node::configured();
    let bad = "usr/share/containers/oci/hooks.d/oci-volume-hook-precreate.json";
    n.write(
        bad,
        &std::fs::read_to_string("hooks.d/oci-volume-hook-precreate.json").unwrap(),
    );
    let (verdict, summary, fix) = n.check("engine.crio");
    assert_eq!(verdict, "fail", "{summary}");
    assert!(
        summary.contains("CRI-O rejects") && fix.starts_with("rm "),
        "{summary} / {fix}"
    );
}

#[test]
fn chroot_bases_must_be_roots_and_not_writable_by_others() {
    if !root_or_skip("chroot_bases_must_be_roots_and_not_writable_by_others") {
        return;
    }
    let n = Node::configured();
    let base = n.f.base();
    let id = format!("chroot:{}/*", base.display());
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (verdict, summary, fix) = n.check(&id);
    assert_eq!(verdict, "fail", "{summary}");
    assert_eq!(fix, format!("chmod go-w {}", base.display()));
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&base, Some(1000), None).unwrap();
    assert_eq!(
        n.check(&id).2,
        format!("chown root:root {}", base.display())
    );
    std::os::unix::fs::chown(&base, Some(0), None).unwrap();
    // A symlink on the way, and a symlink matched as a chroot.
    let link = n.f.path().join("via-link");
    std::os::unix::fs::symlink(&base, &link).unwrap();
    std::os::unix::fs::symlink("/etc", base.join("user-evil")).unwrap();
    n.chroots(&[
        format!("{}/*", base.display()),
        format!("{}/*", link.display()),
    ]);
    let (verdict, summary, _) = n.check(&format!("chroot:{}/*", link.display()));
    assert_eq!(verdict, "fail", "{summary}");
    assert!(summary.contains("symlink"), "{summary}");
    let (verdict, summary, _) = n.check(&id);
    assert_eq!(verdict, "warn", "{summary}");
    assert!(
        summary.contains("2 chroot(s)") && summary.contains("1 symlink(s)"),
        "{summary}"
    );
    // A base that does not exist.
    n.chroots(&[format!("{}/nowhere/*", n.f.path().display())]);
    let (verdict, _, fix) = n.check(&format!("chroot:{}/nowhere/*", n.f.path().display()));
    assert_eq!(
        (verdict.as_str(), fix.starts_with("mkdir -p")),
        ("fail", true)
    );
}

#[test]
fn the_runtime_must_exist_and_not_be_the_wrapper() {
    if !root_or_skip("the_runtime_must_exist_and_not_be_the_wrapper") {
        return;
    }
    let n = Node::configured();
    n.f.write_config("runtime = \"no-such-runtime\"");
    let (verdict, summary, _) = n.check("runtime");
    assert_eq!(verdict, "fail", "{summary}");
    assert!(summary.contains("no-such-runtime"));
    n.f.write_config(&format!("runtime = \"{}\"", wrapper_bin()));
    let (verdict, summary, _) = n.check("runtime");
    assert_eq!(verdict, "fail", "{summary}");
    assert!(summary.contains("is the wrapper itself"), "{summary}");
    // A wrapper that is not installed.
    let o = Command::new(hook_bin())
        .arg("--config")
        .arg(n.f.config_path())
        .args([
            "doctor",
            "--wrapper",
            "/nonexistent/oci-volume-runtime",
            "--host-root",
        ])
        .arg(&n.root)
        .output()
        .unwrap();
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("FAIL wrapper")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn log_lines_must_not_go_to_a_containers_stdio() {
    if !root_or_skip("log_lines_must_not_go_to_a_containers_stdio") {
        return;
    }
    let n = Node::configured();
    let cfg = n.f.config_path();
    let with_log = |log: &str| {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let head = text.split("[log]").next().unwrap().to_string();
        std::fs::write(&cfg, format!("{head}[log]\n{log}\n")).unwrap();
        n.check("log")
    };
    assert_eq!(with_log("target = \"stderr\"").0, "fail");
    // No journald, no /dev/log under the host root: auto writes the log file, never stderr.
    let file = n.f.path().join("ovh.log");
    let (verdict, summary, _) =
        with_log(&format!("target = \"auto\"\nfile = \"{}\"", file.display()));
    assert_eq!(verdict, "ok", "{summary}");
    assert!(
        summary.contains(&format!("file {}", file.display())),
        "{summary}"
    );
    let (verdict, summary, fix) = with_log("target = \"auto\"\nfile = \"/nonexistent/dir/x.log\"");
    assert_eq!(verdict, "warn", "{summary}");
    assert!(
        summary.contains("runtime --log") && fix.contains("target = \"file\""),
        "{summary}"
    );
    std::fs::create_dir_all(n.root.join("dev")).unwrap();
    let _syslog = std::os::unix::net::UnixDatagram::bind(n.root.join("dev/log")).unwrap();
    let (verdict, summary, _) = with_log("target = \"auto\"");
    assert_eq!(
        (verdict.as_str(), summary.contains("syslog")),
        ("ok", true),
        "{summary}"
    );
    assert_eq!(
        with_log("target = \"file\"\nfile = \"/dev/stderr\"").0,
        "fail"
    );
    assert_eq!(with_log("target = \"none\"").0, "warn");
}

#[test]
fn staging_leftovers_are_reported_with_the_command_that_sweeps_them() {
    if !root_or_skip("staging_leftovers_are_reported_with_the_command_that_sweeps_them") {
        return;
    }
    let n = Node::configured();
    let staging = n.f.staging();
    std::fs::create_dir(&staging).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = staging.join("killed-1");
    std::fs::create_dir(&key).unwrap();
    std::fs::create_dir(key.join("3")).unwrap();
    // The tool's own lasting entries are no leftovers, however old.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for own in ["@slots", "@runtime-features"] {
        std::fs::create_dir(staging.join(own)).unwrap();
        let dir = std::fs::File::open(staging.join(own)).unwrap();
        dir.set_modified(old).unwrap();
    }
    assert_eq!(
        n.check("staging").0,
        "ok",
        "a fresh key may be a create in progress"
    );
    std::fs::File::open(&key)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (verdict, summary, fix) = n.check("staging");
    assert_eq!(verdict, "warn", "{summary}");
    assert!(summary.contains("killed-1"), "{summary}");
    assert!(!summary.contains('@'), "{summary}");
    // The command it prints does sweep them.
    let fix = fix.replace(
        "oci-volume-hook --config",
        &format!("{} --config", hook_bin()),
    );
    let o = Command::new("sh").args(["-c", &fix]).output().unwrap();
    assert!(o.status.success(), "{fix}: {}", stderr(&o));
    assert!(!key.exists(), "{fix}");
    assert_eq!(n.check("staging").0, "ok");
    // Shared or loose staging directories fail.
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(n.check("staging").0, "fail");
}

#[test]
fn the_json_document_is_stable() {
    if !root_or_skip("the_json_document_is_stable") {
        return;
    }
    let n = Node::configured();
    let v = n.json();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&v),
        ["version", "ok", "host_root", "wrapper", "checks"]
    );
    assert_eq!(v["version"], 1);
    let ids: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        // One per chroot base, only where the runtime can idmap at all.
        .filter(|id| !id.starts_with("idmap:"))
        .collect();
    let chroot = format!("chroot:{}/*", n.f.base().display());
    assert_eq!(
        ids,
        [
            "config",
            &chroot,
            "runtime",
            "wrapper",
            "engine.docker",
            "engine.docker.live",
            "engine.podman",
            "engine.containerd",
            "host_sources",
            "engine.crio",
            "log",
            "kernel",
            "idmap",
            "staging"
        ]
    );
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(keys(c), ["id", "verdict", "summary", "fix"]);
        assert!(
            ["ok", "warn", "fail", "skip"].contains(&c["verdict"].as_str().unwrap()),
            "{c}"
        );
        assert_eq!(
            c["fix"].is_string(),
            ["warn", "fail"].contains(&c["verdict"].as_str().unwrap()),
            "a fix for each problem: {c}"
        );
    }
}

/// Every entry below `dir`: path, mode, owner, size, mtime.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        out.push((
            p.clone(),
            md.mode(),
            md.uid(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
        ));
        if md.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn the_doctor_changes_nothing() {
    if !root_or_skip("the_doctor_changes_nothing") {
        return;
    }
    let n = Node::configured();
    n.write("etc/docker/daemon.json", "{broken");
    let before = snapshot(n.f.path());
    n.doctor(&[]);
    n.doctor(&["--json"]);
    assert_eq!(snapshot(n.f.path()), before);
}

/// A real dockerd on the host root's /run/docker.sock: listing the runtime, then one started
/// without it while daemon.json has it (restart needed).
#[test]
fn a_running_dockerd_is_asked_for_its_runtimes() {
    let test = "a_running_dockerd_is_asked_for_its_runtimes";
    let Some(bins) = ["containerd", "dockerd", "docker", "ctr"]
        .iter()
        .map(|b| engine(test, b))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let bins = [
        bins[0].clone(),
        bins[1].clone(),
        bins[2].clone(),
        bins[3].clone(),
    ];
    let runtime = json!({"runtimes": {"oci-volume": {"path": wrapper_bin()}}});
    for (live, verdict, says) in [
        (runtime.clone(), "ok", "lists runtime oci-volume"),
        (json!({}), "fail", "lists no runtime running"),
    ] {
        let n = Node::configured();
        let d = Daemons::start(&n.root.join("run"), &[], Some(live), bins.clone());
        let (v, summary, fix) = n.check("engine.docker.live");
        assert_eq!(v, verdict, "{summary}");
        assert!(
            summary.contains(says) && summary.contains("docker.sock"),
            "{summary}"
        );
        if verdict == "fail" {
            assert!(fix.starts_with("systemctl restart docker"), "{fix}");
        }
        drop(d);
    }
}

#[test]
fn doctor_says_whether_idmapped_ownership_can_be_used() {
    let n = Node::configured();
    let runtime = |name: &str, features: &str| {
        let p = n.f.path().join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n[ \"$1\" = features ] && exec echo '{features}'\necho {name} version 9\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    // runc 1.1.5's features list no mountExtensions.
    let old = runtime("runc-old", r#"{"linux": {"namespaces": ["user"]}}"#);
    n.f.write_config(&format!("runtime = \"{}\"", old.display()));
    let (verdict, summary, fix) = n.check("idmap");
    assert_eq!(verdict, "skip", "{summary}");
    assert!(summary.contains("would fall back to chown"), "{summary}");
    assert!(
        summary.contains("features do not list idmapped mounts"),
        "{summary}"
    );
    assert_eq!(fix, "", "a skip is no problem to fix");
    n.f.write_config(&format!(
        "ownership = \"idmap\"\nruntime = \"{}\"",
        old.display()
    ));
    let (verdict, summary, fix) = n.check("idmap");
    assert_eq!(verdict, "warn", "{summary}");
    assert!(fix.contains("runc >= 1.2"), "{fix}");
    assert!(
        summary.contains("falls back to chown (recursive-on-mismatch)"),
        "{summary}"
    );

    let new = runtime(
        "runc-new",
        r#"{"linux": {"mountExtensions": {"idmap": {"enabled": true}}}}"#,
    );
    n.f.write_config(&format!(
        "ownership = \"idmap\"\nruntime = \"{}\"",
        new.display()
    ));
    let (verdict, summary, _) = n.check("idmap");
    assert_eq!(verdict, "ok", "{summary}");
    // The fixture's chroots live under /var/tmp: what its filesystem allows, said per base.
    let base = n.f.base();
    let fs = oci_volume_hook::idmap::filesystem_support(std::fs::File::open(&base).unwrap());
    let (verdict, summary, _) = n.check(&format!("idmap:{}/*", base.display()));
    match fs {
        Ok(()) => assert_eq!(verdict, "ok", "{summary}"),
        Err(why) => {
            assert_eq!(verdict, "warn", "{summary}: ownership = idmap chosen");
            assert!(summary.contains(&why), "{summary}");
        }
    }
}

#[test]
fn a_cri_node_without_host_sources_is_warned_in_one_line() {
    if !root_or_skip("cri_host_sources") {
        return;
    }
    let n = Node::configured();
    let (verdict, summary, fix) = n.check("host_sources");
    assert_eq!(verdict, "warn", "{summary}");
    assert!(
        summary.contains("host_sources is unset")
            && summary.contains("hostPath symlinks containerd resolves itself are unchecked"),
        "{summary}"
    );
    assert!(fix.contains("host_sources") && fix.contains(&n.f.config_path().display().to_string()));
    let out = stdout(&n.doctor(&[]));
    let lines: Vec<_> = out.lines().filter(|l| l.contains("host_sources")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("WARN host_sources "), "{out}");
    assert!(n.doctor(&[]).status.success(), "a warning, not a failure");

    // Set (even empty: every host source refused), it is fine.
    let text = std::fs::read_to_string(n.f.config_path()).unwrap();
    let set = format!("host_sources = [\"/var/lib/kubelet/pods/*/volumes/**\"]\n{text}");
    std::fs::write(n.f.config_path(), set).unwrap();
    let (verdict, summary, _) = n.check("host_sources");
    assert_eq!(verdict, "ok", "{summary}");
    assert!(summary.contains("1 host_sources entries"), "{summary}");

    // No CRI (containerd only under Docker): nothing to say.
    std::fs::write(n.f.config_path(), text).unwrap();
    n.write(
        "etc/containerd/config.toml",
        &format!(
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n{}",
            containerd_v2(&format!("BinaryName = \"{}\"", wrapper_bin()))
        ),
    );
    let v = n.json();
    let ids: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert!(!ids.contains(&json!("host_sources")), "{v:#}");
}
