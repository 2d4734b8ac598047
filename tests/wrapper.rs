//! `oci-volume-runtime` over the real runc, and its argv and error contracts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn wrapper(f: &Fixture, cwd: &Path, args: &[&str]) -> Output {
    Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What `runc run ID` alone prints in bundle `b` (it must succeed).
fn runc_alone_prints(runc: &Path, b: &Path, id: &str, want: &str) {
    let o = runc_run(runc, b, id);
    assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{}", stderr(&o));
}

#[test]
fn run_through_the_wrapper_with_plain_runc() {
    let Some(runc) = engine("wrapper_run", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime")).unwrap();
    std::fs::create_dir_all(t.join("releases/v2")).unwrap();
    std::fs::write(t.join("releases/v2/VERSION"), "v2\n").unwrap();
    std::os::unix::fs::symlink("/releases/v2", t.join("current")).unwrap();
    // The tenant owns its chroot (so it could swap entries): sources are pinned.
    std::os::unix::fs::chown(&t, Some(100000), Some(100000)).unwrap();
    let b = f.bundle("b");
    let doc = runc_config(
        "test -f /etc/localtime && cat /data/VERSION",
        vec![
            bind(&t.join("etc/localtime"), "/etc/localtime", true),
            bind(&t.join("current"), "/data", true),
        ],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-wrapped-1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "v2\n");
    assert!(is_file(&t.join("etc/localtime")));
    assert_eq!(owner_of(&t.join("etc/localtime")), (100000, 100000));
    // runc read a config.json pointing at staging mounts; afterwards the bundle's is the
    // original again (every field), and no staging mount or directory is left.
    let after: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(after, doc);
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

#[test]
fn a_failed_preparation_never_calls_runc_and_says_why_in_runcs_log() {
    let Some(runc) = engine("wrapper_failure", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("etc/localtime/keep")).unwrap();
    let b = f.bundle("b");
    write_config_json(
        &b,
        &runc_config(
            "true",
            vec![bind(&t.join("etc/localtime"), "/etc/localtime", true)],
            None,
        ),
    );
    let state = b.join("state");
    let log = b.join("log.json");
    let args = [
        "--root",
        state.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        "/nonexistent/pid",
        "ovh-fail-1",
    ];
    let o = wrapper(&f, Path::new("/"), &args);
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &["mount /etc/localtime", "non-empty directory"],
    );
    let last = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["level"], "error");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("oci-volume-runtime: mount /etc/localtime")
            && msg.contains("non-empty directory"),
        "{msg}"
    );
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert!(!state.join("ovh-fail-1").exists(), "runc was not called");
    assert!(t.join("etc/localtime/keep").is_dir());
    assert!(
        f.log().contains("non-empty directory"),
        "and the tool's own log has it: {}",
        f.log()
    );

    // Without --log-format json, runc's text format.
    let log2 = b.join("log.txt");
    let o = wrapper(
        &f,
        &b,
        &["--log", log2.to_str().unwrap(), "run", "ovh-fail-2"],
    );
    assert!(!o.status.success());
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(
        text.starts_with("time=\"")
            && text.contains("level=error msg=\"oci-volume-runtime: mount /etc/localtime"),
        "{text}"
    );
}

#[test]
fn other_subcommands_pass_straight_through() {
    let Some(runc) = engine("wrapper_passthrough", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let o = wrapper(&f, Path::new("/"), &["--version"]);
    let plain = Command::new(&runc).arg("--version").output().unwrap();
    assert!(o.status.success());
    // runc's lines first, byte for byte (CRI-O and runc's own tests parse them), then the
    // wrapper's own line.
    let want = format!(
        "{}oci-volume-runtime version {}\n",
        String::from_utf8_lossy(&plain.stdout),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    assert!(o.stdout.starts_with(&plain.stdout));
    assert_eq!(o.stderr, plain.stderr);

    // A bundle with a broken config.json: not read for anything but create/run.
    let b = f.path().join("broken");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("config.json"), "{not json").unwrap();
    let state = b.join("state");
    let o = wrapper(
        &f,
        &b,
        &["--root", state.to_str().unwrap(), "state", "no-such-ctr"],
    );
    let plain = Command::new(&runc)
        .args(["--root", state.to_str().unwrap(), "state", "no-such-ctr"])
        .current_dir(&b)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), plain.status.code());
    assert!(
        stderr(&o).contains("does not exist") || stderr(&o).contains("not exist"),
        "{}",
        stderr(&o)
    );
    let o = wrapper(&f, &b, &["--root", state.to_str().unwrap(), "create", "x"]);
    assert_one_line_error(&o, "oci-volume-runtime", &["not valid JSON"]);
}

#[test]
fn argv_stdio_and_exit_status_are_the_runtimes() {
    if !root_or_skip("wrapper_argv") {
        return;
    }
    let f = Fixture::new();
    // A stand-in runtime that reports what it was given (argv handling, not an end-to-end test).
    let fake = f.path().join("fake-runtime");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\"\nread line; echo \"stdin:$line\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.write_config(&format!("runtime = \"{}\"", fake.display()));
    let mut child = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(["--root", "/r", "kill", "--all", "id with space", "KILL"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7));
    let out = String::from_utf8_lossy(&o.stdout);
    let expected = format!(
        "{}\n--root\n/r\nkill\n--all\nid with space\nKILL\nstdin:hello\n",
        fake.display()
    );
    assert_eq!(out, expected);

    // A wrapper configured to run itself refuses, rather than looping.
    f.write_config(&format!("runtime = \"{}\"", wrapper_bin()));
    let o = wrapper(&f, Path::new("/"), &["--version"]);
    assert_one_line_error(&o, "oci-volume-runtime", &["itself"]);
}

/// A stand-in runtime exec'd by the wrapper after staging a pinned source: it is the
/// wrapper's very process (same pid, the engine's signals reach it directly) and starts with
/// no signal blocked.
#[test]
fn the_runtime_is_the_wrappers_own_process_with_no_signal_blocked() {
    if !root_or_skip("wrapper_sigmask") {
        return;
    }
    let f = Fixture::new();
    let fake = f.path().join("fake-runtime");
    std::fs::write(
        &fake,
        "#!/bin/sh\ngrep -c /staging/ config.json\ncat /proc/$PPID/comm\nexec grep '^SigBlk:' /proc/self/status\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.write_config(&format!("runtime = \"{}\"", fake.display()));
    let t = f.tenant("user-mask");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    let b = f.bundle("b");
    let doc = runc_config("true", vec![bind(&t.join("vol"), "/v", true)], None);
    write_config_json(&b, &doc);
    // Through sh: the runtime's parent must be sh itself, not a wrapper left in between.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("{} run ovh-mask; :", wrapper_bin()))
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .current_dir(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The runtime read a config.json pointing at the staging mount; its parent is the
    // shell; then (exec keeps the mask) its own mask.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "1\nsh\nSigBlk:\t0000000000000000\n"
    );
    let after: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(after, doc);
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

/// An engine's SIGTERM to the wrapper's pid reaches `runc run` (the wrapper exec'd it after
/// staging): the container's process gets it (its trap runs), runc exits as the container
/// did, and config.json is as it was.
#[test]
fn a_sigterm_to_the_wrapper_reaches_the_container() {
    let Some(runc) = engine("wrapper_sigterm", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-term");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    let b = f.bundle("b");
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let doc = runc_config(script, vec![bind(&t.join("vol"), "/v", true)], None);
    write_config_json(&b, &doc);
    let mut child = Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .arg("--root")
        .arg(b.join("state"))
        .args(["run", "ovh-term"])
        .current_dir(&b)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "the container started");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(line, "got TERM\n");
    assert_eq!(status.code(), Some(3));
    let after: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(after, doc);
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

/// An engine's SIGTERM at any moment of a pinned `create` never leaves the staged
/// config.json in the bundle (it once could: between the replacement and the handlers, or
/// when runc died of the forwarded signal and the wrapper died like it before putting the
/// original back).
#[test]
fn a_sigterm_during_create_never_leaves_the_staged_config_behind() {
    let Some(runc) = engine("wrapper_sigterm_create", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-tc");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    let b = f.bundle("b");
    write_config_json(
        &b,
        &runc_config("sleep 10", vec![bind(&t.join("vol"), "/v", true)], None),
    );
    let original = std::fs::read(b.join("config.json")).unwrap();
    let root = b.join("state");
    let mut signalled = 0;
    for i in 0..40u64 {
        let id = format!("ovh-tc-{i}");
        let child = Command::new(wrapper_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
            .arg("--root")
            .arg(&root)
            .args(["create", "--bundle"])
            .arg(&b)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros((i * 7919) % 60_000));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let o = child.wait_with_output().unwrap();
        signalled += (!o.status.success()) as u32;
        let now = std::fs::read(b.join("config.json")).unwrap();
        assert!(
            now == original,
            "run {i}: the bundle kept the staged config.json: {}",
            String::from_utf8_lossy(&now)
        );
        let _ = Command::new(&runc)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id])
            .stderr(Stdio::null())
            .status();
    }
    assert!(signalled > 0, "no SIGTERM ever cut a create short");
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

/// runc joins a relative bind source to the bundle: one that reaches a chroot is judged like
/// an absolute one (here refused for its `..`), never mounted unchecked; a relative source
/// elsewhere is mounted as runc mounts it.
#[test]
fn a_relative_source_reaching_a_chroot_is_judged_not_mounted_unchecked() {
    let Some(runc) = engine("wrapper_relative", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-rel");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    std::fs::write(t.join("vol/f"), "tenant\n").unwrap();
    std::fs::create_dir_all(f.path().join("plain")).unwrap();
    std::fs::write(f.path().join("plain/f"), "plain\n").unwrap();
    let b = f.bundle("b");
    let (state, bundle) = (b.join("state"), b.to_str().unwrap().to_string());
    let run = |source: &str, id: &str| {
        let mounts = vec![bind(Path::new(source), "/m", true)];
        write_config_json(&b, &runc_config("cat /m/f", mounts, None));
        let root = state.to_str().unwrap();
        wrapper(
            &f,
            Path::new("/"),
            &["--root", root, "run", "--bundle", &bundle, id],
        )
    };
    let o = run("../plain", "ovh-rel-1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "plain\n");
    let o = run("../containerdata/user-rel/vol", "ovh-rel-2");
    let err = stderr(&o);
    assert!(!o.status.success(), "runc mounted it: {err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("oci-volume-runtime: mount /m (source ") && err.contains("contains `..`"),
        "{err}"
    );
}

/// runc reads config.json as Go does: `"Source"` fills the field `source` names, and the last
/// of the two wins. A mount holding both would have the tool check and pin the first while
/// runc mounts the second, a host directory. Refused, with one line naming the key (fails on
/// the code that parsed with serde_json alone: the container printed `host`).
#[test]
fn a_source_spelled_twice_is_refused_since_runc_would_mount_the_other() {
    let Some(runc) = engine("wrapper_source_twice", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("vol")).unwrap();
    std::fs::write(t.join("vol/WHO"), "tenant\n").unwrap();
    let host = f.path().join("host-dir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("WHO"), "host\n").unwrap();
    let b = f.bundle("b");
    let doc = runc_config(
        "cat /data/WHO",
        vec![bind(&t.join("vol"), "/data", true)],
        None,
    );
    let json = |p: &Path| serde_json::to_string(p).unwrap();
    let text = serde_json::to_string(&doc).unwrap();
    let checked = format!("\"source\":{}", json(&t.join("vol")));
    assert!(text.contains(&checked), "{text}");
    let text = text.replace(&checked, &format!("{checked},\"Source\":{}", json(&host)));
    std::fs::write(b.join("config.json"), &text).unwrap();

    // What runc alone does with it: mounts the host directory.
    runc_alone_prints(&runc, &b, "ovh-twice-0", "host\n");

    let o = wrapper_run(&f, &b, "ovh-twice-1");
    let printed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        printed, "",
        "the container never ran (it printed the host's file)"
    );
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &[
            "config.json: key mounts[3].\"Source\" is not spelled as the OCI field \"source\"",
            "runc would read it as mounts[3].source",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(b.join("config.json")).unwrap(),
        text
    );
    assert!(!b.join("state/ovh-twice-1").exists(), "runc was not called");

    // The same document on podman's precreate stdin.
    let o = f.hook(&["precreate"], text.as_bytes());
    assert!(o.stdout.is_empty());
    assert_one_line_error(&o, "oci-volume-hook", &["mounts[3].\"Source\""]);
}

/// A configuration TOML cannot read still names the operator's runtime: kill, delete and
/// state reach it, not `runc` from PATH (containers stay stoppable with the right runc).
/// Fails on the code before (the defaults' `runc` was used).
#[test]
fn a_config_that_is_not_toml_still_sends_kill_to_its_runtime() {
    if !root_or_skip("wrapper_broken_config") {
        return;
    }
    let f = Fixture::new();
    let fake = f.path().join("operators-runc");
    std::fs::write(&fake, "#!/bin/sh\necho \"operator's runc: $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        f.config_path(),
        format!(
            "runtime = \"{}\"\nchroots = [\"/srv/*\"\n[log]\ntarget = \"none\"\n",
            fake.display()
        ),
    )
    .unwrap();
    for call in [
        &["kill", "c1", "KILL"][..],
        &["delete", "--force", "c1"],
        &["state", "c1"],
    ] {
        let o = wrapper(&f, Path::new("/"), call);
        assert!(o.status.success(), "{call:?}: {}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("operator's runc: {}\n", call.join(" "))
        );
    }
}

/// `runc restore` mounts the bundle's sources too (CRIU restores the mounts config.json
/// names): the wrapper prepares and pins them as for create. There is no checkpoint here, so
/// runc fails; what is asserted is what the wrapper did before: the missing source created in
/// the chroot with the mapped owner, the tenant's symlink to a host directory resolved inside
/// the chroot and never on the host, config.json put back. Before restore was read, the
/// wrapper exec'd runc at once and created nothing.
#[test]
fn restore_is_prepared_and_pinned_like_create() {
    let Some(runc) = engine("wrapper_restore", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let host = f.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    let t = f.tenant("user-toto");
    std::os::unix::fs::symlink(&host, t.join("vol")).unwrap();
    std::os::unix::fs::chown(&t, Some(100000), Some(100000)).unwrap();
    let before = snapshot(&host);
    let b = f.bundle("b");
    let doc = runc_config(
        "true",
        vec![
            bind(&t.join("etc/localtime"), "/etc/localtime", true),
            bind(&t.join("vol/data"), "/data", false),
        ],
        Some(100000),
    );
    write_config_json(&b, &doc);
    let state = b.join("state");
    let work = f.path().join("criu-work");
    let o = wrapper(
        &f,
        &b,
        &[
            "--root",
            state.to_str().unwrap(),
            "restore",
            "--image-path",
            work.join("no-checkpoint").to_str().unwrap(),
            "--work-path",
            work.to_str().unwrap(),
            "ovh-restore-1",
            "--bundle",
            b.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success(), "no checkpoint: runc restore fails");
    assert!(
        is_file(&t.join("etc/localtime")),
        "the missing source was prepared as the image's file: {}",
        f.log()
    );
    assert_eq!(owner_of(&t.join("etc/localtime")), (100000, 100000));
    let inside = t.join(host.strip_prefix("/").unwrap()).join("data");
    assert!(is_dir(&inside), "vol/data made inside the chroot");
    assert_eq!(owner_of(&inside), (100000, 100000));
    assert_unchanged(
        &before,
        &snapshot(&host),
        "restore through <chroot>/vol -> host",
    );
    assert!(f.log().contains("pinned under"), "{}", f.log());
    let after: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(after, doc);
    assert_eq!(f.staging_left(), (vec![], vec![]));
}

/// A source in the rootfs below an earlier mount's destination names the container's mount
/// tree: runc resolves it after that mount is made (runc 1.3's mounts.bats builds trees this
/// way), so it mounts what the earlier mount shows there. The host path is not what runc
/// mounts; creating and pinning it handed the container an empty directory instead (fails on
/// the code before: the wrapper made `rootfs/mnt/x` on the host and `cat` found nothing).
/// Refused in one line, nothing created.
#[test]
fn a_source_below_an_earlier_mount_in_the_rootfs_is_refused_not_replaced() {
    let Some(runc) = engine("wrapper_mount_order", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-order");
    std::fs::create_dir_all(t.join("vol/x")).unwrap();
    std::fs::write(t.join("vol/x/FILE"), "from vol\n").unwrap();
    // The bundle (and so the rootfs) lies in the chroot, as with runc's own suite under a
    // chroot pattern covering its temp directories.
    let b = f.bundle("containerdata/user-order/b");
    let rootfs = b.join("rootfs");
    let doc = runc_config(
        "cat /final/FILE",
        vec![
            bind(&t.join("vol"), "/mnt", true),
            bind(&rootfs.join("mnt/x"), "/final", true),
        ],
        None,
    );
    write_config_json(&b, &doc);

    // runc alone: the second source is read through the first mount.
    runc_alone_prints(&runc, &b, "ovh-order-0", "from vol\n");

    let o = wrapper_run(&f, &b, "ovh-order-1");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &[
            "mount /final (source ",
            "below the destination of an earlier mount (/mnt)",
        ],
    );
    assert!(!rootfs.join("mnt/x").exists(), "the wrapper created it");
    assert!(!b.join("state/ovh-order-1").exists(), "runc was not called");
}

/// The wrapper's placeholders (`<staging>/@slots`) outlive a start, empty and unmounted on
/// the host; the next start reuses them (no new entry); a slot root replaced by a symlink to
/// a host directory is never followed: the start fails naming the slot, and the directory
/// gets no mount and no change.
#[test]
fn slots_stay_empty_on_the_host_and_a_planted_link_is_not_followed() {
    let Some(runc) = engine("wrapper_slots", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("data")).unwrap();
    std::fs::write(t.join("data/hello"), "hi\n").unwrap();
    std::fs::write(t.join("zone"), "UTC\n").unwrap();
    let b = f.bundle("b");
    let doc = runc_config(
        "cat /data/hello /etc/zone",
        vec![
            bind(&t.join("data"), "/data", false),
            bind(&t.join("zone"), "/etc/zone", true),
        ],
        None,
    );
    write_config_json(&b, &doc);
    let slots = f.staging().join("@slots");
    for id in ["ovh-slots-1", "ovh-slots-2"] {
        let o = wrapper_run(&f, &b, id);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\nUTC\n");
        assert_eq!(entry_names(&slots), ["config", "d0", "f1"]);
        assert!(
            only_placeholders(&slots),
            "a slot is not an empty placeholder"
        );
        assert_eq!(f.staging_left(), (vec![], vec![]));
    }
    // Root's own directory: only root could plant this, and it still must not be followed.
    let victim = f.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::remove_dir(slots.join("d0")).unwrap();
    std::os::unix::fs::symlink(&victim, slots.join("d0")).unwrap();
    let before = snapshot(&victim);
    let o = wrapper_run(&f, &b, "ovh-slots-3");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("oci-volume-runtime: ")
            && err.trim_end().lines().count() == 1
            && err.contains("@slots/d0")
            && err.contains("mount /data (source "),
        "{err}"
    );
    assert_eq!(snapshot(&victim), before);
    assert!(mounts_below(&victim).is_empty());
    assert!(
        mounts_below(&f.staging())
            .iter()
            .all(|m| Path::new(m) == f.staging())
    );
}

/// With nothing pinned (`when-changeable`, every directory root's), a source reached through
/// a tenant's absolute symlink is still handed to runc as its path inside the chroot: the
/// wrapper shows runc the edited document although it stages nothing.
#[test]
fn an_unpinned_source_through_a_link_reaches_runc_rewritten() {
    let Some(runc) = engine("wrapper_rewrite", "runc") else {
        return;
    };
    let f = Fixture::new();
    f.write_config(&format!(
        "runtime = \"{}\"\npin_sources = \"when-changeable\"",
        runc.display()
    ));
    let t = f.tenant("user-toto");
    std::fs::create_dir_all(t.join("releases/v2")).unwrap();
    std::fs::write(t.join("releases/v2/VERSION"), "v2 in the chroot\n").unwrap();
    // On the host this link names /releases/v2, which is not the tenant's.
    std::os::unix::fs::symlink("/releases/v2", t.join("current")).unwrap();
    let b = f.bundle("b");
    let doc = runc_config(
        "cat /data/VERSION",
        vec![bind(&t.join("current"), "/data", true)],
        None,
    );
    write_config_json(&b, &doc);
    let o = wrapper_run(&f, &b, "ovh-rewrite-1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "v2 in the chroot\n");
    assert!(f.log().contains("source rewritten to"), "{}", f.log());
    // Nothing pinned: the only slot is the edited document's.
    assert_eq!(entry_names(&f.staging().join("@slots")), ["config"]);
    assert_eq!(f.staging_left(), (vec![], vec![]));
}
