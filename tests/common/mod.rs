//! Test fixtures: tenant chroots, busybox rootfs, bundles, engines, and snapshots of host
//! paths that must not change.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The binaries under test: cargo's, or the installed ones when OCI_VOLUME_HOOK_BIN_DIR says
/// where (tests/package.sh runs the end-to-end tests against the installed package so).
pub fn hook_bin() -> &'static str {
    installed("oci-volume-hook").unwrap_or(env!("CARGO_BIN_EXE_oci-volume-hook"))
}

pub fn wrapper_bin() -> &'static str {
    installed("oci-volume-runtime").unwrap_or(env!("CARGO_BIN_EXE_oci-volume-runtime"))
}

fn installed(name: &str) -> Option<&'static str> {
    let dir = std::env::var_os("OCI_VOLUME_HOOK_BIN_DIR")?;
    let p = Path::new(&dir).join(name);
    assert!(p.exists(), "{} is not installed", p.display());
    Some(Box::leak(
        p.into_os_string().into_string().ok()?.into_boxed_str(),
    ))
}

/// Whether a missing engine or missing root must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var_os("OCI_VOLUME_HOOK_REQUIRE_E2E").is_some()
}

/// `true` when running as root; otherwise skips (or fails in CI).
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !required(),
        "{test}: needs root, and CI requires every test to run"
    );
    eprintln!("SKIP {test}: needs root");
    false
}

/// The path of an engine binary; skips (or fails in CI) when it is not installed.
pub fn engine(test: &str, name: &str) -> Option<PathBuf> {
    if !root_or_skip(test) {
        return None;
    }
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    assert!(
        !required(),
        "{test}: {name} is not installed, and CI requires end-to-end tests to run"
    );
    eprintln!("SKIP {test}: {name} is not installed");
    None
}

/// A scratch area: `base/<tenant>` chroots, a config file, a log file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        // Under /var/tmp rather than /tmp: some engines refuse tmpfs quirks, and a tmpfs /tmp
        // would put chroot and host on different filesystems than in production.
        let dir = tempfile::Builder::new()
            .prefix("ovh-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = Fixture { dir };
        std::fs::create_dir_all(f.base()).unwrap();
        f.write_config("");
        f
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The directory whose children are tenant chroots.
    pub fn base(&self) -> PathBuf {
        self.path().join("containerdata")
    }
    pub fn tenant(&self, name: &str) -> PathBuf {
        let p = self.base().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.path().join("hook.log")
    }
    /// Writes config.toml: the chroot pattern and a log file, plus `extra` lines.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\n{extra}\n[log]\nlevel = \"debug\"\ntarget = \"file\"\nfile = \"{}\"\n",
            self.base().display(),
            self.staging().display(),
            self.log_path().display()
        );
        std::fs::write(self.config_path(), text).unwrap();
    }
    /// The staging directory for pinned sources (private to this fixture).
    pub fn staging(&self) -> PathBuf {
        self.path().join("staging")
    }
    /// What is left under the staging directory: (entries, mounts). The wrapper's slots
    /// (`@slots`) are kept between starts: they count as left unless each is an empty
    /// directory or empty file of root's.
    pub fn staging_left(&self) -> (Vec<PathBuf>, Vec<String>) {
        let entries = std::fs::read_dir(self.staging())
            .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !(p.ends_with("@slots") && only_placeholders(p)))
            .collect();
        (
            entries,
            mounts_below(&self.staging())
                .into_iter()
                .filter(|m| Path::new(m) != self.staging())
                .collect(),
        )
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// A bundle directory with a busybox rootfs.
    pub fn bundle(&self, name: &str) -> PathBuf {
        let b = self.path().join(name);
        make_rootfs(&b.join("rootfs"));
        b
    }
    /// Runs the hook binary with this fixture's config.
    pub fn hook(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(
            Command::new(hook_bin())
                .arg("--config")
                .arg(self.config_path())
                .args(args),
            stdin,
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unmount_below(self.path());
    }
}

/// Mount points at or below `dir`, deepest first.
/// The names in `dir`, sorted.
pub fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether `dir` holds nothing but empty directories and empty files of root's.
pub fn only_placeholders(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let empty = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(md) if md.uid() != 0 => false,
        Ok(md) if md.is_file() => md.len() == 0,
        Ok(md) if md.is_dir() => std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()),
        _ => false,
    };
    std::fs::read_dir(dir).is_ok_and(|mut d| d.all(|e| empty(&e.unwrap().path())))
}

pub fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

pub fn unmount_below(dir: &Path) {
    for p in mounts_below(dir) {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the failure contract: non-zero exit, exactly one stderr line, starting with the
/// binary's name and containing every `needles` part.
pub fn assert_one_line_error(o: &Output, bin: &str, needles: &[&str]) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {}",
        stderr(o)
    );
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(lines[0].starts_with(&format!("{bin}: ")), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {err:?}");
    }
    lines[0].to_string()
}

/// A minimal rootfs: busybox-static, `/etc/localtime -> /usr/share/zoneinfo/UTC` (a file).
pub fn make_rootfs(rootfs: &Path) {
    for d in [
        "bin",
        "etc",
        "usr/share/zoneinfo",
        "data",
        "proc",
        "dev",
        "sys",
        "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(bb) = busybox {
        std::fs::copy(bb, rootfs.join("bin/busybox")).unwrap();
        // Executable by any mapped uid, whatever mode the host's copy was left in.
        std::fs::set_permissions(
            rootfs.join("bin/busybox"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"));
    }
    std::fs::write(rootfs.join("usr/share/zoneinfo/UTC"), b"TZif2-image-UTC\n").unwrap();
    let _ = std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", rootfs.join("etc/localtime"));
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
}

/// A bind mount entry for config.json.
pub fn bind(source: &Path, destination: &str, ro: bool) -> Value {
    let mut opts = vec!["rbind"];
    if ro {
        opts.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": opts})
}

/// A runc-ready config.json running `script` with `sh -c`.
pub fn runc_config(script: &str, mounts: Vec<Value>, userns: Option<u32>) -> Value {
    let mut all = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
    ];
    all.extend(mounts);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "network"}),
    ];
    let mut linux = json!({
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
    });
    if let Some(host) = userns {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": host, "size": 65536}]);
    }
    linux["namespaces"] = Value::Array(namespaces);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
            },
            "noNewPrivileges": true,
            "x-unknown-field": {"kept": [1, 2, 3]}
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "ovh-test",
        "mounts": all,
        "linux": linux,
        "annotations": {"org.example.kept": "yes"}
    })
}

pub fn write_config_json(bundle: &Path, doc: &Value) {
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(doc).unwrap(),
    )
    .unwrap();
}

/// `run ID` through the wrapper in `bundle` with this fixture's config, runc's state under
/// `bundle/state`; returns the output.
pub fn wrapper_run(f: &Fixture, bundle: &Path, id: &str) -> Output {
    let state = bundle.join("state");
    Command::new(wrapper_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", f.config_path())
        .args(["--root", state.to_str().unwrap(), "run", id])
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `runc run` in `bundle` with a private state root; returns the output.
pub fn runc_run(runc: &Path, bundle: &Path, id: &str) -> Output {
    let state = bundle.join("runc-state");
    Command::new(runc)
        .arg("--root")
        .arg(&state)
        .args(["run", id])
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Everything below `root`, without following symlinks: kind, mode, owner, mtime, size,
/// link target. Two snapshots differ if anything was created, removed, changed or chowned.
pub type Snapshot = BTreeMap<PathBuf, String>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

fn walk(p: &Path, out: &mut Snapshot) {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    let target = if md.file_type().is_symlink() {
        std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    out.insert(
        p.to_path_buf(),
        format!(
            "mode={:o} uid={} gid={} mtime={}.{} size={} nlink={} -> {}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.mtime_nsec(),
            md.size(),
            md.nlink(),
            target
        ),
    );
    if md.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            walk(&e, out);
        }
    }
}

pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    if before != after {
        let mut diff = Vec::new();
        for (k, v) in before {
            match after.get(k) {
                None => diff.push(format!("removed {}", k.display())),
                Some(w) if w != v => diff.push(format!("changed {}: {v} => {w}", k.display())),
                _ => {}
            }
        }
        for k in after.keys().filter(|k| !before.contains_key(*k)) {
            diff.push(format!("created {}", k.display()));
        }
        panic!(
            "{what}: host paths outside the chroot changed:\n{}",
            diff.join("\n")
        );
    }
}

pub fn owner_of(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

pub fn is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_file())
        .unwrap_or(false)
}

pub fn is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_dir())
        .unwrap_or(false)
}

/// (device, inode) of what `p` names, following symlinks and mounts.
pub fn inode(p: &Path) -> (u64, u64) {
    let md = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.dev(), md.ino())
}

/// Where below `tree` the inode `id` is (symlinks not followed).
pub fn find_inode(tree: &Path, id: (u64, u64)) -> Option<PathBuf> {
    let md = std::fs::symlink_metadata(tree).ok()?;
    if (md.dev(), md.ino()) == id {
        return Some(tree.to_path_buf());
    }
    if md.is_dir() {
        for e in std::fs::read_dir(tree).ok()? {
            if let Some(p) = find_inode(&e.ok()?.path(), id) {
                return Some(p);
            }
        }
    }
    None
}

/// Checks that `out` is `doc` but for mount sources moved under `staging`, and returns, for
/// each moved mount, its index and staging path.
pub fn pinned_sources(out: &Value, doc: &Value, staging: &Path) -> Vec<(usize, PathBuf)> {
    let mut back = out.clone();
    let mut moved = Vec::new();
    for (i, m) in out["mounts"].as_array().unwrap().iter().enumerate() {
        let src = m["source"].as_str().unwrap_or_default();
        if src != doc["mounts"][i]["source"].as_str().unwrap_or_default() {
            assert!(
                Path::new(src).starts_with(staging),
                "mount {i}: source {src} is not pinned under {}",
                staging.display()
            );
            moved.push((i, PathBuf::from(src)));
            back["mounts"][i]["source"] = doc["mounts"][i]["source"].clone();
        }
    }
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(doc).unwrap(),
        "only mount sources change"
    );
    moved
}

/// chown -h -R, as the tests need it (podman's --uidmap with --rootfs wants the rootfs owned
/// by the mapped root).
pub fn chown_tree(p: &Path, id: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        Some(id.into()),
        Some(id.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), id);
        }
    }
}

/// podman with private storage, state and temp dirs below the fixture (its configuration is
/// the machine's unless the caller says otherwise).
pub fn podman_command(bin: &Path, f: &Fixture) -> Command {
    let p = f.path();
    let mut c = Command::new(bin);
    c.arg("--root").arg(p.join("podman/root"));
    c.arg("--runroot").arg(p.join("podman/run"));
    c.arg("--tmpdir").arg(p.join("podman/tmp"));
    c.args([
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--runtime",
        "runc",
    ]);
    c.stdin(Stdio::null());
    c
}

/// `podman run` of `script` in `rootfs` (owned by host uid 200000, container root's) with
/// one volume, as the tests use it; the ulimits fit this host's hard limit.
pub fn podman_run_args(volume: &str, rootfs: &Path, script: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--uidmap",
        "0:200000:65536",
        "--gidmap",
        "0:200000:65536",
        "-v",
        volume,
        "--rootfs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(rootfs.to_string_lossy().into_owned());
    a.extend(["/bin/sh", "-c", script].iter().map(|s| s.to_string()));
    a
}

/// A hooks directory with the precreate stage and, optionally, the poststop cleanup.
pub fn podman_hooks(f: &Fixture, poststop: bool) -> PathBuf {
    let d = f.path().join("hooks.d");
    std::fs::create_dir_all(&d).unwrap();
    let hook = |stage: &str, cmd: &str| {
        json!({"version": "1.0.0",
               "hook": {"path": hook_bin(), "args": ["oci-volume-hook", "--config", f.config_path(), cmd]},
               "when": {"always": true}, "stages": [stage]})
        .to_string()
    };
    std::fs::write(d.join("50-ovh.json"), hook("precreate", "precreate")).unwrap();
    if poststop {
        std::fs::write(d.join("60-ovh.json"), hook("poststop", "cleanup")).unwrap();
    }
    d
}

/// `podman run` with `hooks` as its only hooks directory and an empty containers.conf.
pub fn podman_run(
    podman: &Path,
    f: &Fixture,
    hooks: &Path,
    volume: &str,
    rootfs: &Path,
    cmd: &str,
) -> Output {
    let conf = f.path().join("containers.conf");
    std::fs::write(&conf, "").unwrap();
    podman_command(podman, f)
        .env("CONTAINERS_CONF", &conf)
        .arg("--hooks-dir")
        .arg(hooks)
        .args(podman_run_args(volume, rootfs, cmd))
        .output()
        .unwrap()
}
