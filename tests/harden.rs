//! Planted attacks from the adversarial review (issue 17) and a tenant's first container
//! (issue 9), through the binaries as root. Each was shown to fail against the code before
//! the fix (run with OCI_VOLUME_HOOK_BIN_DIR pointing at the old binaries).

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn precreate(f: &Fixture, doc: &Value) -> Output {
    f.hook(&["precreate"], &serde_json::to_vec(doc).unwrap())
}

fn doc_for(bundle: &Path, mounts: Vec<Value>, userns: Option<u32>) -> Value {
    let mut d = runc_config("true", mounts, userns);
    d["root"]["path"] = json!(bundle.join("rootfs"));
    d
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `cmd`, killing it after `secs` (it would block forever on a FIFO).
fn with_deadline(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{cmd:?} blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

// Item 1: `<chroot>/..` is the chroot base, every tenant in it.
#[test]
fn dotdot_out_of_a_chroot_and_chroot_bases_are_refused() {
    if !root_or_skip("dotdot_base") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-dd");
    let titi = f.tenant("user-titi");
    std::fs::write(titi.join("secret"), "titi's").unwrap();
    let b = f.bundle("b");
    let base = f.base();
    let cases = [
        (format!("{}/..", t.display()), "`..`"),
        (format!("{}/../", t.display()), "`..`"),
        (format!("{}/a/../../user-titi", t.display()), "`..`"),
        (format!("{}/", base.display()), "refuse_chroot_bases"),
        (base.display().to_string(), "refuse_chroot_bases"),
    ];
    for (source, why) in &cases {
        let doc = doc_for(
            &b,
            vec![
                json!({"destination": "/x", "type": "bind", "source": source, "options": ["rbind"]}),
            ],
            Some(100000),
        );
        let before = snapshot(&base);
        let o = precreate(&f, &doc);
        assert_one_line_error(&o, "oci-volume-hook", &["mount /x", why]);
        assert_unchanged(&before, &snapshot(&base), source);
    }
    // The operator may allow a base (not `..` out of a chroot).
    f.write_config("refuse_chroot_bases = false");
    let doc = doc_for(&b, vec![bind(&base, "/x", false)], Some(100000));
    assert!(precreate(&f, &doc).status.success());
    let dd = json!({"destination": "/x", "type": "bind", "source": format!("{}/..", t.display()), "options": ["rbind"]});
    let o = precreate(&f, &doc_for(&b, vec![dd], Some(100000)));
    assert_one_line_error(&o, "oci-volume-hook", &["mount /x", "`..`"]);
}

#[test]
fn dotdot_out_of_a_chroot_is_refused_through_runc() {
    let Some(runc) = engine("dotdot_runc", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-dd");
    std::fs::write(f.tenant("user-titi").join("secret"), "titi's").unwrap();
    let b = f.bundle("b");
    let src = format!("{}/..", t.display());
    write_config_json(
        &b,
        &runc_config(
            "cat /x/user-titi/secret",
            vec![
                json!({"destination": "/x", "type": "bind", "source": src, "options": ["rbind", "ro"]}),
            ],
            None,
        ),
    );
    // Plain runc hands out the base, and another tenant's file with it.
    let o = runc_run(&runc, &b, "ovh-dd-plain");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "titi's");
    let state = b.join("state");
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(["--root", state.to_str().unwrap(), "run", "ovh-dd"])
        .current_dir(&b)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_one_line_error(&o, "oci-volume-runtime", &["mount /x", "`..`"]);
    assert!(o.stdout.is_empty(), "the container never ran");
}

// Item 4: the hook mode must not tell whether, or where, a host path exists.
#[test]
fn hook_refusals_say_nothing_about_the_host() {
    if !root_or_skip("hook_leak") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![bind(&t.join("probe"), "/probe", false)],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let state = json!({"ociVersion": "1.0.2", "id": "leak", "status": "creating", "bundle": b});
    let mut lines = Vec::new();
    // A host path that exists, one that does not, one under /root.
    for target in ["/usr/bin", "/no/such/host/path", "/root"] {
        let _ = std::fs::remove_file(t.join("probe"));
        symlink(target, t.join("probe")).unwrap();
        std::fs::create_dir_all(t.join(&target[1..])).unwrap();
        let o = f.hook(&["hook"], &serde_json::to_vec(&state).unwrap());
        let line = assert_one_line_error(&o, "oci-volume-hook", &["mount /probe", "symlink"]);
        assert!(!line.contains("host resolves"), "{line}");
        assert!(!line.contains("nothing"), "{line}");
        lines.push(line.replace(target, "TARGET"));
    }
    assert_eq!(
        lines[0], lines[1],
        "existing and missing host paths look alike"
    );
    assert_eq!(lines[0], lines[2]);
}

// Item 5: hard-linked non-files and a bind mount of the same filesystem inside a volume.
#[test]
fn recursive_ownership_skips_hard_links_of_every_kind_and_bind_mounts() {
    if !root_or_skip("recursive_hardening") {
        return;
    }
    let f = Fixture::new();
    f.write_config("ownership = \"recursive-on-mismatch\"");
    let t = f.tenant("user-toto");
    let host = f.path().join("host");
    std::fs::create_dir_all(host.join("shared")).unwrap();
    std::fs::write(host.join("shared/file"), "host").unwrap();
    nix::unistd::mkfifo(
        &host.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    symlink("/etc/shadow", host.join("link")).unwrap();
    let vol = t.join("vol");
    std::fs::create_dir_all(vol.join("sub/mnt")).unwrap();
    std::fs::write(vol.join("sub/own"), "tenant").unwrap();
    // Hard links of a FIFO and of a symlink (linkat never follows) into the volume.
    std::fs::hard_link(host.join("fifo"), vol.join("sub/fifo")).unwrap();
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        &host.join("link"),
        nix::fcntl::AT_FDCWD,
        &vol.join("sub/link"),
        nix::fcntl::AtFlags::empty(),
    )
    .unwrap();
    // An operator's bind mount of a host directory (same filesystem) inside the volume.
    nix::mount::mount(
        Some(&host.join("shared")),
        &vol.join("sub/mnt"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let before = snapshot(&host);
    let b = f.bundle("b");
    let o = precreate(
        &f,
        &doc_for(&b, vec![bind(&vol, "/data", false)], Some(100000)),
    );
    let _ = nix::mount::umount2(&vol.join("sub/mnt"), nix::mount::MntFlags::MNT_DETACH);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_unchanged(
        &before,
        &snapshot(&host),
        "host entries linked or mounted in a volume",
    );
    assert_eq!(owner_of(&vol.join("sub/own")), (100000, 100000));
    assert_eq!(owner_of(&vol), (100000, 100000));
    assert_eq!(
        owner_of(&vol.join("sub/mnt")),
        (0, 0),
        "the mount point itself"
    );
}

// Item 6: engines' directories on another disk, reached through a symlink.
#[test]
fn a_bundle_reached_through_a_symlink_works_with_runc_and_the_hook() {
    let Some(runc) = engine("bundle_symlink", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    let real = f.path().join("disk2/lib");
    std::fs::create_dir_all(&real).unwrap();
    let lib = f.path().join("varlib");
    symlink(&real, &lib).unwrap();
    make_rootfs(&real.join("b/rootfs"));
    let b = lib.join("b"); // /var/lib/... -> another disk
    let src = t.join("etc/localtime");
    write_config_json(
        &b,
        &runc_config(
            "test -f /etc/localtime && echo started",
            vec![bind(&src, "/etc/localtime", true)],
            Some(100000),
        ),
    );
    let state = f.path().join("state");
    let o = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args([
            "--root",
            state.to_str().unwrap(),
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "ovh-bl",
        ])
        .current_dir(f.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert!(is_file(&src));
    assert_eq!(owner_of(&src), (100000, 100000));
    // The OCI hook, given the same bundle path in the state.
    std::os::unix::fs::chown(&src, Some(0), Some(0)).unwrap();
    let st = json!({"ociVersion": "1.0.2", "id": "bl", "status": "creating", "bundle": b});
    let o = f.hook(&["hook"], &serde_json::to_vec(&st).unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(owner_of(&src), (100000, 100000));
}

// Item 7: a FIFO for config.json, long paths, the descriptor limit.
#[test]
fn a_fifo_config_json_is_refused_without_blocking() {
    if !root_or_skip("fifo_config") {
        return;
    }
    let f = Fixture::new();
    let b = f.path().join("fifo-bundle");
    std::fs::create_dir_all(&b).unwrap();
    nix::unistd::mkfifo(
        &b.join("config.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let o = with_deadline(
        Command::new(hook_bin())
            .args([
                "--config",
                f.config_path().to_str().unwrap(),
                "plan",
                "--bundle",
            ])
            .arg(&b),
        20,
    );
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["config.json", "not a regular file"],
    );
    let o = with_deadline(
        Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .args(["create", "--bundle", b.to_str().unwrap(), "ovh-fifo"]),
        20,
    );
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &["config.json", "not a regular file"],
    );
}

#[test]
fn long_and_deep_sources_are_bounded() {
    if !root_or_skip("long_paths") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    // 2,000 one-letter components: more than the 256 allowed, refused at once.
    let deep = t.join("a/".repeat(2000));
    let huge = t.join("x".repeat(1 << 20)); // a 1 MiB name
    for (src, why) in [(&deep, "components"), (&huge, "PATH_MAX")] {
        let start = Instant::now();
        let before = snapshot(&t);
        let o = precreate(&f, &doc_for(&b, vec![bind(src, "/data", false)], None));
        let line = assert_one_line_error(&o, "oci-volume-hook", &["mount /data", why]);
        assert!(
            line.len() < 8192,
            "the message is bounded: {} bytes",
            line.len()
        );
        assert_unchanged(&before, &snapshot(&t), why);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
    // 256 missing components (the most allowed) are created in one walk.
    let ok = t.join("d/".repeat(256));
    let start = Instant::now();
    let o = precreate(&f, &doc_for(&b, vec![bind(&ok, "/data", false)], None));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_dir(&ok));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn too_many_mounts_for_the_descriptor_limit_change_nothing() {
    if !root_or_skip("nofile") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    let b = f.bundle("b");
    let mounts: Vec<Value> = (0..10_000)
        .map(|i| bind(&t.join(format!("v{i}")), &format!("/v/{i}"), false))
        .collect();
    let input = serde_json::to_vec(&doc_for(&b, mounts, Some(100000))).unwrap();
    let before = snapshot(&t);
    let mut cmd = Command::new(hook_bin());
    cmd.args(["--config", f.config_path().to_str().unwrap(), "precreate"]);
    // SAFETY: only setrlimit between fork and exec (`ulimit -n 1024`: soft and hard).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 1024)
                .map_err(std::io::Error::from)
        });
    }
    let o = run_with_stdin(&mut cmd, &input);
    assert_one_line_error(&o, "oci-volume-hook", &["10000 mounts", "ulimit -n"]);
    assert_unchanged(&before, &snapshot(&t), "refused for the descriptor limit");
}

// Minor items.
#[test]
fn invalid_owners_and_half_mappings_are_refused() {
    if !root_or_skip("owners") {
        return;
    }
    let f = Fixture::new();
    f.write_config("owner = \"process-user\"");
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("home")).unwrap();
    let b = f.bundle("b");
    let mut doc = doc_for(&b, vec![bind(&t.join("home"), "/home", false)], None);
    doc["process"]["user"] = json!({"uid": 4294967295u32, "gid": 4294967295u32});
    let o = precreate(&f, &doc);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /home", "4294967295", "not a valid owner"],
    );
    assert!(
        !f.log().contains("gave "),
        "no chown is logged: {}",
        f.log()
    );

    f.write_config("");
    let mut doc = doc_for(
        &b,
        vec![bind(&t.join("home"), "/home", false)],
        Some(100000),
    );
    doc["linux"].as_object_mut().unwrap().remove("gidMappings");
    let o = precreate(&f, &doc);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["mount /home", "no linux.gidMappings"],
    );
    assert_eq!(owner_of(&t.join("home")), (0, 0));
}

#[test]
fn a_missing_source_is_named_whole() {
    if !root_or_skip("missing_whole") {
        return;
    }
    let f = Fixture::new();
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("srv")).unwrap();
    let b = f.bundle("b");
    let mut doc = runc_config(
        "true",
        vec![bind(&t.join("srv/www/site/data"), "/data", false)],
        None,
    );
    doc["root"]["path"] = json!("rootfs");
    write_config_json(&b, &doc);
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v["mounts"].as_array().unwrap().last().unwrap().clone();
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("missing from {} on", t.join("srv/www").display()))
            && reason.contains(&t.join("srv/www/site/data").display().to_string()),
        "{reason}"
    );
}

// Issue 9, part 1: a tenant's first container.
#[test]
fn a_missing_chroot_is_created_for_the_platform_then_prepared() {
    if !root_or_skip("create_chroot") {
        return;
    }
    let f = Fixture::new();
    let t = f.base().join("user-tata"); // a new tenant: not there yet
    let b = f.bundle("b");
    let doc = doc_for(
        &b,
        vec![
            bind(&t.join("etc/localtime"), "/etc/localtime", true),
            bind(&t.join("data"), "/data", false),
        ],
        Some(100000),
    );
    // Under a restrictive umask the chroot is 0755 all the same.
    let mut cmd = Command::new(hook_bin());
    cmd.args(["--config", f.config_path().to_str().unwrap(), "precreate"]);
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
    let o = run_with_stdin(&mut cmd, &serde_json::to_vec(&doc).unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_dir(&t));
    assert_eq!(owner_of(&t), (0, 0), "the chroot is the platform's");
    assert_eq!(mode_of(&t), 0o755);
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (100000, 100000));
    assert_eq!(owner_of(&t.join("data")), (100000, 100000));
    assert!(f.log().contains("created the chroot"), "{}", f.log());
}

#[test]
fn with_create_chroots_off_a_missing_chroot_is_refused_once() {
    if !root_or_skip("no_create_chroot") {
        return;
    }
    let f = Fixture::new();
    f.write_config("create_chroots = false");
    let t = f.base().join("user-tata");
    let b = f.bundle("b");
    let mounts: Vec<Value> = (0..32)
        .map(|i| bind(&t.join(format!("v{i}")), &format!("/v{i}"), false))
        .collect();
    let before = snapshot(&f.base());
    let o = precreate(&f, &doc_for(&b, mounts, Some(100000)));
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[
            "mount /v0",
            "does not exist",
            "create_chroots = false",
            "31 other mounts",
        ],
    );
    assert_unchanged(&before, &snapshot(&f.base()), "refused");
    let errors = f.log().lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "one line for one cause: {}", f.log());
    // A parent that fails the checks is never created into.
    f.write_config("");
    std::fs::set_permissions(f.base(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = precreate(
        &f,
        &doc_for(&b, vec![bind(&t.join("v"), "/v", false)], Some(100000)),
    );
    assert_one_line_error(&o, "oci-volume-hook", &["mount /v", "writable by others"]);
    assert!(!t.exists());
}
