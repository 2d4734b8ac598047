//! `oci-volume-hook install-node` against a fake host root, without a cluster: what it
//! installs, what it keeps, and what it refuses. (Run as a CRI container, with systemd's
//! restart and SIGTERM: tests/e2e_cri.rs.)

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn install_node(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(hook_bin())
        .args(["install-node", "--host-root"])
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn install_node_for_crio_then_uninstall() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("host");
    std::fs::create_dir_all(root.join("etc/crio")).unwrap();
    let cm = t.path().join("config.toml");
    std::fs::write(&cm, "chroots = [\"/srv/tenants/*\"]\n").unwrap();
    let cm_s = cm.to_str().unwrap();

    let o = install_node(&root, &["--once", "--config-source", cm_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("crio not restarted (no systemd on the host)"),
        "{out}"
    );
    for b in ["oci-volume-hook", "oci-volume-runtime"] {
        let installed = root.join("opt/oci-volume-hook/bin").join(b);
        let source = Path::new(hook_bin()).with_file_name(b);
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(&source).unwrap()
        );
    }
    let dropin = root.join("etc/crio/crio.conf.d/50-oci-volume.conf");
    let v: toml::Value = toml::from_str(&read(&dropin)).unwrap();
    assert_eq!(
        v["crio"]["runtime"]["runtimes"]["oci-volume"]["runtime_path"].as_str(),
        Some("/opt/oci-volume-hook/bin/oci-volume-runtime"),
        "the host's path, not the container's view of it"
    );
    let cfg = read(&root.join("etc/oci-volume-hook/config.toml"));
    assert!(cfg.ends_with("chroots = [\"/srv/tenants/*\"]\n"), "{cfg}");

    // A second run changes nothing; a changed ConfigMap replaces the file the installer wrote.
    let o = install_node(&root, &["--once", "--config-source", cm_s]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already as asked"));
    std::fs::write(&cm, "chroots = [\"/srv/other/*\"]\n").unwrap();
    install_node(&root, &["--once", "--config-source", cm_s]);
    assert!(read(&root.join("etc/oci-volume-hook/config.toml")).contains("/srv/other/*"));

    let o = install_node(&root, &["--uninstall"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dropin.exists(), "the registration is gone");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("binaries kept in /opt/oci-volume-hook/bin"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        root.join("opt/oci-volume-hook/bin/oci-volume-runtime")
            .exists()
    );
}

#[test]
fn install_node_keeps_the_hosts_config_and_refuses_a_bad_configmap() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("host");
    std::fs::create_dir_all(root.join("etc/oci-volume-hook")).unwrap();
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    let own = "# the operator's\nchroots = [\"/data/*\"]\n";
    std::fs::write(root.join("etc/oci-volume-hook/config.toml"), own).unwrap();
    let cm = t.path().join("config.toml");
    std::fs::write(&cm, "chroots = [\"/srv/*\"]\n").unwrap();
    let o = install_node(
        &root,
        &[
            "--once",
            "--restart",
            "none",
            "--config-source",
            cm.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&root.join("etc/oci-volume-hook/config.toml")), own);
    let ctd: toml::Value = toml::from_str(&read(&root.join("etc/containerd/config.toml"))).unwrap();
    assert_eq!(
        ctd["version"].as_integer(),
        Some(2),
        "a node without a config gets version 2"
    );
    install_node(&root, &["--uninstall"]);

    // A bad ConfigMap: one line naming it, nothing on the host changed.
    let empty = t.path().join("empty");
    std::fs::create_dir_all(empty.join("etc/containerd")).unwrap();
    let before = snapshot(&empty);
    std::fs::write(&cm, "chroots = [\"/srv/*\"]\nunknown_key = 1\n").unwrap();
    let o = install_node(&empty, &["--once", "--config-source", cm.to_str().unwrap()]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[cm.to_str().unwrap(), "unknown_key", "nothing installed"],
    );
    assert_unchanged(&before, &snapshot(&empty), "bad ConfigMap");

    // No runtime found: said so.
    let none = t.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    let o = install_node(&none, &["--once"]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["neither containerd nor CRI-O", "--runtime"],
    );
}

/// The ConfigMap's config.toml, as shipped in deploy/kubernetes/configmap.yaml.
fn configmap_config() -> String {
    let yaml =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/configmap.yaml"));
    let body = yaml.split("config.toml: |\n").nth(1).unwrap();
    body.lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

#[test]
fn install_node_registers_only_the_annotations_the_hosts_config_allows() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("host");
    std::fs::create_dir_all(root.join("etc/crio")).unwrap();
    let cm = t.path().join("config.toml");
    std::fs::write(&cm, configmap_config()).unwrap();
    let cm_s = cm.to_str().unwrap();
    let dropin = root.join("etc/crio/crio.conf.d/50-oci-volume.conf");
    let allowed = || -> Vec<String> {
        let v: toml::Value = toml::from_str(&read(&dropin)).unwrap();
        v["crio"]["runtime"]["runtimes"]["oci-volume"]["allowed_annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    // The shipped ConfigMap lets pods only narrow: no owner, ownership only as `none`.
    let o = install_node(&root, &["--once", "--config-source", cm_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        allowed(),
        ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"]
    );
    let cfg = read(&root.join("etc/oci-volume-hook/config.toml"));
    assert!(
        cfg.contains("\"io.oci-volume-hook.ownership=none\""),
        "{cfg}"
    );
    assert!(!cfg.contains("io.oci-volume-hook.owner\""), "{cfg}");
    // A host's own configuration is kept, and the registration follows it.
    std::fs::write(
        root.join("etc/oci-volume-hook/config.toml"),
        "allowed_annotations = [\"io.oci-volume-hook.owner\"]\n",
    )
    .unwrap();
    let o = install_node(&root, &["--once", "--config-source", cm_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(allowed(), ["io.oci-volume-hook.owner"]);
}

/// The runc the node's runc handler names becomes the wrapper's `runtime` in the host's
/// configuration, and stays there when the DaemonSet starts again with the same ConfigMap:
/// nothing rewritten, no moment where kill and delete would go to PATH's runc.
#[test]
fn install_node_records_the_nodes_runc_and_keeps_it_across_restarts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("host");
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(
        root.join("etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nBinaryName = \"/opt/patched/runc\"\n",
    )
    .unwrap();
    let cm = t.path().join("config.toml");
    std::fs::write(&cm, "chroots = [\"/srv/*\"]\n[log]\nlevel = \"info\"\n").unwrap();
    let args = [
        "--once",
        "--restart",
        "none",
        "--config-source",
        cm.to_str().unwrap(),
    ];
    let o = install_node(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let host = root.join("etc/oci-volume-hook/config.toml");
    let c: toml::Value = toml::from_str(&read(&host)).unwrap();
    assert_eq!(c["runtime"].as_str(), Some("/opt/patched/runc"));
    let before = read(&host);
    let modified = std::fs::metadata(&host).unwrap().modified().unwrap();
    let o = install_node(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already as asked"));
    assert_eq!(read(&host), before);
    let again = std::fs::metadata(&host).unwrap().modified().unwrap();
    assert_eq!(again, modified, "not rewritten");
    // A ConfigMap that names a runtime of its own wins.
    std::fs::write(&cm, "runtime = \"/usr/local/sbin/runc\"\n").unwrap();
    install_node(&root, &args);
    let c: toml::Value = toml::from_str(&read(&host)).unwrap();
    assert_eq!(c["runtime"].as_str(), Some("/usr/local/sbin/runc"));
}

/// k3s and RKE2 rewrite containerd's config.toml at every start: `--k3s` registers the
/// handler in k3s's template, restarts the k3s unit the host has, and takes it back.
#[test]
fn install_node_k3s_registers_in_the_template_then_uninstalls() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("host");
    let dir = root.join("var/lib/rancher/k3s/agent/etc/containerd");
    std::fs::create_dir_all(&dir).unwrap();
    let generated = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n";
    std::fs::write(dir.join("config.toml"), generated).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::write(root.join("etc/systemd/system/k3s-agent.service"), "").unwrap();
    let cm = t.path().join("config.toml");
    std::fs::write(&cm, "chroots = [\"/srv/*\"]\n").unwrap();
    let args = ["--k3s", "--once", "--config-source", cm.to_str().unwrap()];

    let o = install_node(&root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("k3s-agent not restarted (no systemd on the host)"),
        "the host's k3s unit: {out}"
    );
    let template = read(&dir.join("config.toml.tmpl"));
    assert!(
        template.starts_with("{{ template \"base\" . }}"),
        "{template}"
    );
    let block = template.split_once("# BEGIN oci-volume-hook").unwrap().1;
    let block = block.split_once('\n').unwrap().1;
    let v: toml::Value = toml::from_str(block.split("# END").next().unwrap()).unwrap();
    let handler =
        &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["oci-volume"];
    assert_eq!(
        handler["options"]["BinaryName"].as_str(),
        Some("/opt/oci-volume-hook/bin/oci-volume-runtime")
    );
    assert_eq!(handler["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(
        read(&dir.join("config.toml")),
        generated,
        "k3s's own file untouched"
    );
    assert!(
        !root.join("etc/containerd").exists(),
        "no plain containerd file"
    );

    let o = install_node(&root, &args);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already as asked"));

    let o = install_node(&root, &["--k3s", "--uninstall"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !dir.join("config.toml.tmpl").exists(),
        "the template it made is gone"
    );
    assert_eq!(read(&dir.join("config.toml")), generated);

    // Without --k3s on such a node: told to pass it, nothing changed.
    std::fs::create_dir_all(root.join("run/k3s/containerd")).unwrap();
    std::fs::write(root.join("run/k3s/containerd/containerd.sock"), "").unwrap();
    let before = snapshot(&root);
    let o = install_node(&root, &["--once", "--config-source", cm.to_str().unwrap()]);
    assert_one_line_error(&o, "oci-volume-hook", &["k3s or RKE2", "pass --k3s"]);
    assert_unchanged(&before, &snapshot(&root), "a k3s node without --k3s");
}
