//! Kubernetes' path, end to end: containerd's CRI plugin driven as kubelet drives it
//! (RunPodSandbox with a runtime handler, CreateContainer with hostPath mounts, StartContainer,
//! ExecSync, ContainerStatus), with the handler `configure containerd` registered; and the
//! node installer image run as a CRI container against a fake host root.

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::path::{Path, PathBuf};

use common::*;
use cri::{Cri, HANDLER};
use serde_json::{Value, json};

fn mount(host: &Path, container: &str) -> Value {
    json!({"container_path": container, "host_path": host, "readonly": false})
}

/// Engines, the CRI client, a fixture and containerd with the busybox image imported as
/// `ovh-test` (and `ovh-pause`, the sandbox image). Bound as `(f, c)`, containerd stops
/// before the fixture goes.
fn setup(test: &str, log_target: &str) -> Option<(Fixture, Cri)> {
    setup_with(test, log_target, &|_| String::new())
}

/// [`setup`], with `extra` top-level lines in the tool's configuration.
fn setup_with(
    test: &str,
    log_target: &str,
    extra: &dyn Fn(&Fixture) -> String,
) -> Option<(Fixture, Cri)> {
    let containerd = engine(test, "containerd")?;
    let ctr = engine(test, "ctr")?;
    engine(test, "runc")?;
    let python = cri::python(test)?;
    let f = Fixture::new();
    let config = format!(
        "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\nruntime = \"runc\"\n{}\n[log]\nlevel = \"debug\"\ntarget = \"{log_target}\"\nfile = \"{}\"\n",
        f.base().display(),
        f.staging().display(),
        extra(&f),
        f.log_path().display()
    );
    std::fs::write(f.config_path(), config).unwrap();
    let c = Cri::start(
        &f.path().join("ctd"),
        &f.config_path(),
        &containerd,
        &ctr,
        python,
    );
    let rootfs = f.path().join("img/rootfs");
    make_rootfs(&rootfs);
    let tar = f.path().join("img/image.tar");
    cri::image_tar(
        &rootfs,
        &tar,
        &[
            ("ovh-test:latest", json!(["/bin/sh"])),
            (
                "ovh-pause:latest",
                json!(["/bin/busybox", "sleep", "2147483"]),
            ),
        ],
    );
    c.import(&tar);
    Some((f, c))
}

#[test]
fn cri_pods_with_the_handler_get_prepared_volumes() {
    // `auto` logging: no journald or syslog here, so a wrapper that fell back to stderr
    // would write into the pod's log.
    let Some((f, c)) = setup("cri", "auto") else {
        return;
    };
    let t = f.tenant("user-toto");
    let lt = t.join("etc/localtime");

    // 1. The seed failure under the default handler: CreateContainer makes the missing
    // hostPath a directory, StartContainer fails in runc.
    let plain = c.run_pod("plain", "runc", json!({}));
    let (_, r) = c.run(
        &plain,
        "app",
        "ovh-test:latest",
        "cat /etc/localtime",
        json!([mount(&lt, "/etc/localtime")]),
    );
    let e = r.expect_err("plain runc cannot mount a directory onto the image's file");
    assert!(e.contains("not a directory"), "{e}");
    assert!(is_dir(&lt), "containerd left a directory behind");

    // 2. The same engine-made empty directory, under the handler: repaired into a file; the
    // pod log holds the app's lines and nothing else.
    let pod = c.run_pod("ovh", HANDLER, json!({}));
    let (id, r) = c.run(
        &pod,
        "app",
        "ovh-test:latest",
        "test -f /etc/localtime && echo file-mounted; echo second-line",
        json!([mount(&lt, "/etc/localtime")]),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));
    let s = c.wait_exit(&id.unwrap());
    assert_eq!(s["exit_code"].as_i64().unwrap_or(0), 0, "{s}");
    assert!(is_file(&lt), "the directory became a file");
    assert_eq!(c.log_lines("ovh", "app"), ["file-mounted", "second-line"]);

    // 3. A missing file target in another chroot: the container starts, the source is a file.
    let u = f.tenant("user-titi");
    let (id, r) = c.run(
        &pod,
        "keep",
        "ovh-test:latest",
        "exec sleep 1000",
        json!([mount(&u.join("etc/localtime"), "/etc/localtime")]),
    );
    r.unwrap_or_else(|e| panic!("{e}"));
    let id = id.unwrap();
    assert_eq!(
        c.exec(&id, "test -f /etc/localtime && echo file"),
        (0, "file\n".into())
    );
    assert!(is_file(&u.join("etc/localtime")));
    assert_eq!(owner_of(&u.join("etc/localtime")), (0, 0));

    // 4. A versioned release behind a relative `current` symlink, the usual deploy layout.
    for v in ["v1", "v2"] {
        let d = t.join("srv/releases").join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("data.txt"), format!("{v}\n")).unwrap();
    }
    std::os::unix::fs::symlink("releases/v2", t.join("srv/current")).unwrap();
    let (id, r) = c.run(
        &pod,
        "release",
        "ovh-test:latest",
        "cat /srv/app/data.txt",
        json!([mount(&t.join("srv/current"), "/srv/app")]),
    );
    r.unwrap_or_else(|e| panic!("{e}"));
    let s = c.wait_exit(&id.unwrap());
    assert_eq!(s["exit_code"].as_i64().unwrap_or(0), 0, "{s}");
    assert_eq!(c.log_lines("ovh", "release"), ["v2"]);

    // 5. A mount that cannot be fixed: refused; the reason is in the container's status,
    // the tenant's data untouched.
    let zone = t.join("zone");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("keep"), "data").unwrap();
    let (id, r) = c.run(
        &pod,
        "refused",
        "ovh-test:latest",
        "cat /etc/localtime",
        json!([mount(&zone, "/etc/localtime")]),
    );
    let e = r.expect_err("a non-empty directory onto a file is refused");
    assert!(
        e.contains("oci-volume-runtime: ") && e.contains("non-empty directory"),
        "{e}"
    );
    let s = c.status(&id.unwrap());
    let msg = s["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("non-empty directory") && msg.contains("/etc/localtime"),
        "{s}"
    );
    assert_eq!(std::fs::read_to_string(zone.join("keep")).unwrap(), "data");

    // 6. Pod annotations reach the wrapper (the handler lets the allowed keys through), and
    // can only narrow. containerd resolves a hostPath's symlinks itself at CreateContainer,
    // so the tenant swaps its directory for a symlink to a host directory between
    // CreateContainer and StartContainer (where runc runs): with `enabled: "false"` the
    // source is still resolved inside the chroot, never followed by runc to the host.
    let off = c.run_pod(
        "off",
        HANDLER,
        json!({"io.oci-volume-hook.enabled": "false"}),
    );
    let host = f.path().join("host-private");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host-secret\n").unwrap();
    let v = f.tenant("user-tutu");
    let vol = v.join("vol");
    let swapped = |name: &str| {
        std::fs::create_dir_all(&vol).unwrap();
        let config = json!({
            "metadata": {"name": name},
            "image": {"image": "ovh-test:latest"},
            "command": ["/bin/sh", "-c", "cat /data/secret"],
            "log_path": format!("{name}.log"),
            "mounts": [mount(&vol, "/data")],
        });
        let id = c.create(&off, config).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_dir(&vol).unwrap();
        std::os::unix::fs::symlink(&host, &vol).unwrap();
        let started = c.start_container(&id);
        std::fs::remove_file(&vol).unwrap();
        (id, started)
    };
    // Nothing at that path inside the chroot, and creating it is off: refused.
    let (_, r) = swapped("trap");
    let e = r.expect_err("nothing there inside the chroot, and creating it is off");
    assert!(
        e.contains("oci-volume-runtime: ") && e.contains("io.oci-volume-hook.enabled"),
        "{e}"
    );
    assert!(!e.contains("host-secret"), "{e}");
    assert!(c.log_lines("off", "trap").is_empty());
    // The same path inside the chroot: that is what the pod reads, left as it is.
    let inside = v.join(host.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("secret"), "tenant-file\n").unwrap();
    let (id, r) = swapped("inside");
    r.unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));
    let s = c.wait_exit(&id);
    assert_eq!(s["exit_code"].as_i64().unwrap_or(0), 0, "{s}");
    assert_eq!(c.log_lines("off", "inside"), ["tenant-file"]);
    assert_eq!(owner_of(&inside), (0, 0));
}

/// The harness's `host_sources`: the Kubernetes list of the ConfigMap, with kubelet's and
/// containerd's directories at this fixture's private roots (`kubelet/` stands in for
/// /var/lib/kubelet, `ctd/root` and `ctd/state` are containerd's root and state), each pod
/// tied to its own directories by containerd's annotations.
fn harness_host_sources(f: &Fixture) -> String {
    let root = std::fs::canonicalize(f.path()).unwrap();
    let (kubelet, ctd) = (root.join("kubelet"), root.join("ctd"));
    let pod = format!(
        "{}/pods/{{io.kubernetes.cri.sandbox-uid}}",
        kubelet.display()
    );
    let cri = "io.containerd.grpc.v1.cri/sandboxes/{io.kubernetes.cri.sandbox-id}/**";
    let list = [
        format!("{pod}/volumes/**"),
        format!("{pod}/volume-subpaths/**"),
        format!("{pod}/etc-hosts"),
        format!("{pod}/containers/**"),
        format!("{}/root/{cri}", ctd.display()),
        format!("{}/state/{cri}", ctd.display()),
    ];
    format!("host_sources = {}", json!(list))
}

#[test]
fn cri_host_sources_refuse_a_hostpath_containerd_resolved_to_the_host() {
    let Some((f, c)) = setup_with("cri_host_sources", "file", &harness_host_sources) else {
        return;
    };
    let root = std::fs::canonicalize(f.path()).unwrap();
    let t = f.tenant("user-toto");

    // A normal pod: the sandbox's hostname, resolv.conf and shm (containerd's, added to every
    // container), and what kubelet would pass: an emptyDir, etc-hosts, a termination log;
    // beside them a hostPath in the tenant's chroot.
    let pod = c.run_pod("hs", HANDLER, json!({}));
    let kpod = root.join("kubelet/pods/uid-hs");
    let scratch = kpod.join("volumes/kubernetes.io~empty-dir/scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("f"), "pod-volume\n").unwrap();
    std::fs::write(kpod.join("etc-hosts"), "127.0.0.1 kubelet-hosts\n").unwrap();
    let term = kpod.join("containers/app/0001");
    std::fs::create_dir_all(term.parent().unwrap()).unwrap();
    std::fs::write(&term, "").unwrap();
    let (id, r) = c.run(
        &pod,
        "app",
        "ovh-test:latest",
        "cat /scratch/f /etc/hosts; test -d /srv/data && echo chroot-ok; test -d /dev/shm && echo shm; echo done > /dev/termination-log",
        json!([
            mount(&scratch, "/scratch"),
            mount(&kpod.join("etc-hosts"), "/etc/hosts"),
            mount(&term, "/dev/termination-log"),
            mount(&t.join("data"), "/srv/data"),
        ]),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}\n{}", f.log(), c.log_tail()));
    let s = c.wait_exit(&id.unwrap());
    assert_eq!(s["exit_code"].as_i64().unwrap_or(0), 0, "{s}");
    assert_eq!(
        c.log_lines("hs", "app"),
        ["pod-volume", "127.0.0.1 kubelet-hosts", "chroot-ok", "shm"]
    );
    assert_eq!(std::fs::read_to_string(&term).unwrap(), "done\n");
    assert!(is_dir(&t.join("data")));

    // The tenant made its hostPath a link to a host directory before the pod was created:
    // containerd resolves it at CreateContainer and config.json names the host directory,
    // in no chroot and not listed. Refused at StartContainer (on the previous code the pod
    // printed "host-secret"), the line in the container's status, the host dir untouched.
    let host = f.path().join("host-private");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host-secret\n").unwrap();
    let before = snapshot(&host);
    std::os::unix::fs::symlink(&host, t.join("vol")).unwrap();
    let (id, r) = c.run(
        &pod,
        "trap",
        "ovh-test:latest",
        "cat /data/secret",
        json!([mount(&t.join("vol"), "/data")]),
    );
    let e = r.expect_err("the host directory is not in host_sources");
    assert!(
        e.contains("oci-volume-runtime: ") && e.contains("host_sources"),
        "{e}"
    );
    assert!(!e.contains("host-secret"), "{e}");
    let s = c.status(&id.unwrap());
    let msg = s["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("mount /data") && msg.contains("in no chroot") && msg.contains("host_sources"),
        "{s}"
    );
    assert!(c.log_lines("hs", "trap").is_empty());
    assert_unchanged(&before, &snapshot(&host), "the host directory");

    // The same trick aimed at another pod's secret volume, a path the list holds for that
    // pod only (`{io.kubernetes.cri.sandbox-uid}`): refused; `*` there would have let it in.
    let token = root.join("kubelet/pods/uid-victim/volumes/kubernetes.io~secret/token");
    std::fs::create_dir_all(&token).unwrap();
    std::fs::write(token.join("token"), "victim-token\n").unwrap();
    std::os::unix::fs::symlink(&token, t.join("steal")).unwrap();
    let (_, r) = c.run(
        &pod,
        "steal",
        "ovh-test:latest",
        "cat /data/token",
        json!([mount(&t.join("steal"), "/data")]),
    );
    let e = r.expect_err("another pod's volume is not this pod's to mount");
    assert!(
        e.contains("oci-volume-runtime: ") && e.contains("host_sources"),
        "{e}"
    );
    assert!(c.log_lines("hs", "steal").is_empty());
}

/// The static binaries and the installer image (deploy/kubernetes/build-image.sh).
fn node_image(test: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oci-volume-hook-node.tar");
    if p.exists() {
        return Some(p);
    }
    assert!(
        !required(),
        "{test}: {} is missing: run deploy/kubernetes/build-image.sh (tests/run.sh does)",
        p.display()
    );
    eprintln!("SKIP {test}: no installer image; run deploy/kubernetes/build-image.sh");
    None
}

/// The ConfigMap's config.toml, as shipped in deploy/kubernetes/configmap.yaml.
fn configmap_config() -> String {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/configmap.yaml"),
    )
    .unwrap();
    let body = yaml
        .split("config.toml: |\n")
        .nth(1)
        .expect("config.toml in the ConfigMap");
    body.lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// A node as the installer sees it: containerd's config (SystemdCgroup on runc), systemd
/// running, and a systemctl that records what it was asked (run chrooted, with busybox).
fn fake_host(dir: &Path) -> String {
    make_rootfs(dir);
    let node_config = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n    SystemdCgroup = true  # as kubeadm sets it\n";
    std::fs::create_dir_all(dir.join("etc/containerd")).unwrap();
    std::fs::write(dir.join("etc/containerd/config.toml"), node_config).unwrap();
    std::fs::create_dir_all(dir.join("run/systemd/system")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("var/log")).unwrap();
    let systemctl = dir.join("usr/bin/systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho \"$*\" >> /var/log/systemctl.calls\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    node_config.to_string()
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn node_installer_image_registers_then_unregisters_on_sigterm() {
    let Some(image) = node_image("installer") else {
        return;
    };
    let Some((f, c)) = setup("installer", "file") else {
        return;
    };
    c.import(&image);
    let host = f.path().join("host");
    let original = fake_host(&host);
    let cm = f.path().join("configmap");
    std::fs::create_dir_all(&cm).unwrap();
    std::fs::write(cm.join("config.toml"), configmap_config()).unwrap();

    // As the DaemonSet runs it: the image's entry point and arguments, / of the host at /host.
    let pod = c.run_pod("node", "runc", json!({}));
    let version = env!("CARGO_PKG_VERSION");
    let (id, r) = c.run_config(
        &pod,
        json!({
            "metadata": {"name": "installer"},
            "image": {"image": format!("oci-volume-hook-node:{version}")},
            "log_path": "installer.log",
            "mounts": [
                {"container_path": "/host", "host_path": host},
                {"container_path": "/etc/oci-volume-hook-node", "host_path": cm, "readonly": true},
            ],
        }),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));
    let id = id.unwrap();
    let calls = host.join("var/log/systemctl.calls");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for("the installer to restart containerd", || {
        read(&calls).lines().count() == 1
    });

    // Binaries, configuration, registration, restart.
    let bin = host.join("opt/oci-volume-hook/bin");
    let built =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/x86_64-unknown-linux-gnu/release");
    for b in ["oci-volume-hook", "oci-volume-runtime"] {
        assert_eq!(
            std::fs::read(bin.join(b)).unwrap(),
            std::fs::read(built.join(b)).unwrap(),
            "{b}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(bin.join(b)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "{b}");
    }
    let cfg = read(&host.join("etc/oci-volume-hook/config.toml"));
    assert!(
        cfg.ends_with(&configmap_config()),
        "the ConfigMap's file: {cfg}"
    );
    let ctd: toml::Value = toml::from_str(&read(&host.join("etc/containerd/config.toml"))).unwrap();
    let handler =
        &ctd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["oci-volume"];
    assert_eq!(
        handler["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        handler["options"]["BinaryName"].as_str(),
        Some("/opt/oci-volume-hook/bin/oci-volume-runtime")
    );
    assert_eq!(
        handler["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "runc's options kept"
    );
    // The ConfigMap lets pods only narrow: those keys alone are passed to the wrapper.
    let narrow = ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"];
    for key in ["pod_annotations", "container_annotations"] {
        let passed: Vec<&str> = handler[key]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(passed, narrow, "{key}");
    }
    assert_eq!(read(&calls), "restart containerd\n");
    assert!(
        c.log_lines("node", "installer")
            .iter()
            .any(|l| l.contains("waiting for SIGTERM"))
    );

    // Pod deleted: SIGTERM; the registration goes, the node's file is as it was.
    c.call("StopContainer", json!({"container_id": id, "timeout": 30}))
        .unwrap();
    let s = c.wait_exit(&id);
    assert_eq!(s["exit_code"].as_i64().unwrap_or(0), 0, "{s}");
    assert_eq!(read(&host.join("etc/containerd/config.toml")), original);
    assert_eq!(read(&calls), "restart containerd\nrestart containerd\n");
    assert!(
        bin.join("oci-volume-runtime").exists(),
        "running containers still need it"
    );
}

/// The pod's user namespace as kubelet asks for it with `hostUsers: false`: mode POD, one
/// 65536-id range per pod (kubelet hands out multiples of 65536).
const USERNS_HOST_ID: u32 = 3 * 65536;

fn userns_range() -> Value {
    json!([{"host_id": USERNS_HOST_ID, "container_id": 0, "length": 65536}])
}

fn userns_linux() -> Value {
    json!({"security_context": {"namespace_options": {
        "network": "POD",
        "userns_options": {"mode": "POD", "uids": userns_range(), "gids": userns_range()},
    }}})
}

/// A hostPath as kubelet passes it to a user-namespaced pod: with the pod's mappings on the
/// mount, which containerd turns into an idmapped bind mount.
fn idmapped_mount(host: &Path, container: &str) -> Value {
    let mut m = mount(host, container);
    m["uidMappings"] = userns_range();
    m["gidMappings"] = userns_range();
    m
}

/// Kubernetes' user-namespaced pods (#23, #24) through containerd 2.x, the wrapper and
/// runc >= 1.2: containerd turns them on only when the handler's `<BinaryName> features`
/// says idmapped mounts work (the wrapper passes `features` through), and hands the hostPath
/// volumes to the runtime as idmapped mounts. In a tenant's chroot: the pod starts, its root
/// writes its volume and the root-owned file already there as its own (through a mount that
/// is still idmapped: unmapped, on-disk root would show as 65534), the file the image has
/// is created as a file, nothing is chowned to the pod's range, nothing outside the chroot
/// changes.
#[test]
fn cri_user_namespaced_pod_writes_its_hostpath_in_a_chroot() {
    let test = "cri_userns";
    let Some(containerd) = engine(test, "containerd") else {
        return;
    };
    let major = cri::major_version(&containerd);
    if major < 2 {
        // containerd 1.x has no user-namespaced pods: tests/e2e.sh's sid stage runs this.
        assert!(
            std::env::var("OCI_VOLUME_HOOK_ENGINES").as_deref() != Ok("sid"),
            "{test}: the sid stage runs containerd {major}.x, not 2.x"
        );
        eprintln!("SKIP {test}: containerd {major}.x has no user-namespaced pods");
        return;
    }
    if !cri::cni_plugins() {
        assert!(
            !required(),
            "{test}: no CNI plugins in {} (containernetworking-plugins)",
            cri::CNI_PLUGINS
        );
        eprintln!("SKIP {test}: no CNI plugins");
        return;
    }
    let Some((f, c)) = setup(test, "file") else {
        return;
    };
    let t = f.tenant("user-toto");
    let data = t.join("srv/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("seed"), "platform\n").unwrap();
    let lt = t.join("etc/localtime");
    let other = f.tenant("user-titi");
    std::fs::write(other.join("keep"), "other tenant\n").unwrap();
    let host = f.path().join("host-private");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host-secret\n").unwrap();
    let (before_other, before_host) = (snapshot(&other), snapshot(&host));

    let pod = c.run_pod_linux("userns", HANDLER, json!({}), userns_linux());
    let script = "cat /proc/self/uid_map; echo pod >> /data/seed; echo written > /data/out; \
                  stat -L -c '%n %u:%g %F' /data /data/seed /data/out /etc/localtime /etc/hosts; \
                  echo done; exec sleep 1000";
    let config = json!({
        "metadata": {"name": "app"},
        "image": {"image": "ovh-test:latest"},
        "command": ["/bin/sh", "-c", script],
        "log_path": "app.log",
        "mounts": [idmapped_mount(&data, "/data"), idmapped_mount(&lt, "/etc/localtime")],
        "linux": userns_linux(),
    });
    let (id, r) = c.run_config(&pod, config);
    let id = id.expect("created");
    r.unwrap_or_else(|e| panic!("{e}\n{}\n{}", f.log(), c.log_tail()));
    // Read while the pod runs: containerd removes the bundle once the task is gone.
    let bundle = c
        .dir
        .join("state/io.containerd.runtime.v2.task/k8s.io")
        .join(&id);
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    wait_for("the pod's lines", || {
        c.log_lines("userns", "app").last().map(String::as_str) == Some("done")
    });

    // The pod ran in its user namespace and saw its volume, the seed file, what it wrote,
    // the file made for the image's /etc/localtime, and containerd's idmapped /etc/hosts
    // (left alone by the wrapper) as its own.
    let lines = c.log_lines("userns", "app");
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        map,
        ["0", &USERNS_HOST_ID.to_string(), "65536"],
        "{lines:?}"
    );
    assert_eq!(
        lines[1..],
        [
            "/data 0:0 directory",
            "/data/seed 0:0 regular file",
            "/data/out 0:0 regular file",
            "/etc/localtime 0:0 regular empty file",
            "/etc/hosts 0:0 regular file",
            "done",
        ],
        "{}",
        f.log()
    );
    // On the host: the pod's writes are root's through the idmapped mount, nothing was given
    // to the pod's range, the file is a file.
    assert_eq!(owner_of(&data), (0, 0));
    assert_eq!(owner_of(&data.join("out")), (0, 0));
    assert_eq!(
        std::fs::read_to_string(data.join("seed")).unwrap(),
        "platform\npod\n"
    );
    assert!(is_file(&lt));
    assert_eq!(owner_of(&lt), (0, 0));
    // What containerd handed the runtime: idmapped bind mounts of the chroot's paths (the
    // pod's 0:0 above says runc still made them idmapped), which the wrapper pinned.
    for dest in ["/data", "/etc/localtime"] {
        let m = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap_or_else(|| panic!("{dest} in {spec}"));
        assert_eq!(m["uidMappings"][0]["hostID"], USERNS_HOST_ID, "{m}");
        assert_eq!(m["gidMappings"][0]["hostID"], USERNS_HOST_ID, "{m}");
    }
    assert!(f.log().contains("2 source(s) pinned"), "{}", f.log());
    assert_unchanged(&before_other, &snapshot(&other), "the other tenant");
    assert_unchanged(&before_host, &snapshot(&host), "the host directory");
    assert!(
        !f.log().contains(&format!("to {USERNS_HOST_ID}")),
        "{}",
        f.log()
    );
}
