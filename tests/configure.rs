//! `oci-volume-hook configure docker` through the binary: merge, idempotence, backup, and
//! the failure contract on bad input.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn configure(args: &[&str]) -> std::process::Output {
    Command::new(hook_bin())
        .args(["configure", "docker"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn configure_docker_merges_once_and_refuses_bad_json() {
    let t = tempfile::tempdir().unwrap();
    let dj = t.path().join("daemon.json");
    let path = dj.to_str().unwrap();
    std::fs::write(
        &dj,
        r#"{"userns-remap": "default", "runtimes": {"oci-volume": {"path": "/old"}}}"#,
    )
    .unwrap();

    let o = configure(&["--path", path, "--default"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restart dockerd"));
    let v: Value = serde_json::from_slice(&std::fs::read(&dj).unwrap()).unwrap();
    assert_eq!(v["userns-remap"], "default");
    assert_eq!(
        v["runtimes"]["oci-volume"]["path"], "/usr/bin/oci-volume-runtime",
        "an old entry is brought up to date"
    );
    assert_eq!(v["default-runtime"], "oci-volume");
    let backup = t.path().join("daemon.json.oci-volume-hook.bak");
    assert!(std::fs::read_to_string(&backup).unwrap().contains("/old"));

    // Idempotent: nothing written the second time.
    let before = std::fs::metadata(&dj).unwrap().modified().unwrap();
    let o = configure(&["--path", path, "--default"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    assert_eq!(std::fs::metadata(&dj).unwrap().modified().unwrap(), before);

    // Invalid JSON: one clear line, the file as it was.
    std::fs::write(&dj, "{\"log-level\": ").unwrap();
    let o = configure(&["--path", path]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[path, "not valid JSON", "left unchanged"],
    );
    assert_eq!(std::fs::read_to_string(&dj).unwrap(), "{\"log-level\": ");
}

/// `configure ENGINE ARGS` with the tool's defaults (an empty configuration of its own, not
/// the machine's /etc/oci-volume-hook).
fn configure_cri(engine: &str, args: &[&str]) -> std::process::Output {
    let t = tempfile::tempdir().unwrap();
    configure_cri_with(&t.path().join("ovh.toml"), "", engine, args)
}

/// `configure ENGINE ARGS` with the tool's configuration `config` written at `at`.
fn configure_cri_with(
    at: &std::path::Path,
    config: &str,
    engine: &str,
    args: &[&str],
) -> std::process::Output {
    std::fs::write(at, config).unwrap();
    Command::new(hook_bin())
        .env("OCI_VOLUME_HOOK_CONFIG", at)
        .args(["configure", engine])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn registrations_pass_exactly_the_annotations_the_operator_allows() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("ovh.toml");
    let ctd = t.path().join("config.toml");
    // A handler registered by an older version let every io.oci-volume-hook.* key through.
    std::fs::write(
        &ctd,
        CONTAINERD_V2.replace(
            "[\"example.com/*\"]",
            "[\"example.com/*\", \"io.oci-volume-hook.*\"]",
        ),
    )
    .unwrap();
    let crio = t.path().join("crio.conf");
    let lists = |ctd: &std::path::Path, crio: &std::path::Path| {
        let strs = |v: &toml::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let c: toml::Value = toml::from_str(&std::fs::read_to_string(ctd).unwrap()).unwrap();
        let h = &c["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["oci-volume"];
        let r: toml::Value = toml::from_str(&std::fs::read_to_string(crio).unwrap()).unwrap();
        let handler = &r["crio"]["runtime"]["runtimes"]["oci-volume"];
        (
            strs(&h["pod_annotations"]),
            strs(&h["container_annotations"]),
            strs(&handler["allowed_annotations"]),
        )
    };
    let run = |config: &str| {
        for (engine, path) in [("containerd", &ctd), ("crio", &crio)] {
            let o = configure_cri_with(&conf, config, engine, &["--path", path.to_str().unwrap()]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
    };
    // The defaults: only the keys that narrow.
    run("");
    let narrow = ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"];
    let (pods, containers, crio_allowed) = lists(&ctd, &crio);
    assert_eq!(pods, ["example.com/*", narrow[0], narrow[1]]);
    assert_eq!(containers, narrow);
    assert_eq!(crio_allowed, narrow);
    // The operator's list, values stripped (the tool checks those itself).
    run(
        "allowed_annotations = [\"io.oci-volume-hook.owner=process-user\", \"io.oci-volume-hook.enabled\"]",
    );
    let want = ["io.oci-volume-hook.owner", "io.oci-volume-hook.enabled"];
    let (pods, containers, crio_allowed) = lists(&ctd, &crio);
    assert_eq!(pods, ["example.com/*", want[0], want[1]]);
    assert_eq!(containers, want);
    assert_eq!(crio_allowed, want);
    // allow_annotations = false: none.
    run("allow_annotations = false");
    let (pods, containers, crio_allowed) = lists(&ctd, &crio);
    assert_eq!(pods, ["example.com/*"]);
    assert!(containers.is_empty() && crio_allowed.is_empty());
    // A configuration the tool would refuse registers nothing.
    let before = std::fs::read_to_string(&ctd).unwrap();
    let o = configure_cri_with(
        &conf,
        "allowed_annotations = [\"io.oci-volume-hook.*\"]",
        "containerd",
        &["--path", ctd.to_str().unwrap()],
    );
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &["allowed_annotations", "io.oci-volume-hook.*"],
    );
    assert_eq!(std::fs::read_to_string(&ctd).unwrap(), before);
}

/// A node's containerd 1.6/1.7 configuration, comments and all.
const CONTAINERD_V2: &str = r#"# kubeadm's node config
version = 2
root = "/var/lib/containerd"  # kept

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["example.com/*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        Root = "/run/containerd/runc"

[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
"#;

#[test]
fn configure_containerd_v2_in_place_keeps_the_rest_and_removes_exactly() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.toml");
    let path = p.to_str().unwrap();
    std::fs::write(&p, CONTAINERD_V2).unwrap();

    let o = configure_cri("containerd", &["--path", path, "--wrapper", "/opt/w"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("systemctl restart containerd"), "{out}");
    let text = std::fs::read_to_string(&p).unwrap();
    // Everything that was there, in order and with its comments, is still there.
    let mut rest = text.as_str();
    for line in CONTAINERD_V2.lines().filter(|l| !l.is_empty()) {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} lost or moved:\n{text}"));
        rest = &rest[at + line.len()..];
    }
    let v: toml::Value = toml::from_str(&text).unwrap();
    let cri = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    let h = &cri["oci-volume"];
    assert_eq!(h["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(h["options"]["BinaryName"].as_str(), Some("/opt/w"));
    assert_eq!(h["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(h["options"]["Root"].as_str(), Some("/run/containerd/runc"));
    let pods: Vec<&str> = h["pod_annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        pods,
        [
            "example.com/*",
            "io.oci-volume-hook.enabled",
            "io.oci-volume-hook.ownership"
        ]
    );
    assert!(
        cri["runc"]["options"].get("BinaryName").is_none(),
        "runc untouched"
    );
    let backup = t.path().join("config.toml.oci-volume-hook.bak");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), CONTAINERD_V2);

    // Idempotent: nothing written the second time.
    let before = std::fs::metadata(&p).unwrap().modified().unwrap();
    let o = configure_cri("containerd", &["--path", path, "--wrapper", "/opt/w"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);

    // --remove gives the file back byte for byte.
    let o = configure_cri("containerd", &["--path", path, "--remove"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), CONTAINERD_V2);

    // Invalid TOML: one line naming the file; neither it nor its backup written.
    std::fs::remove_file(&backup).unwrap();
    let bad = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n";
    std::fs::write(&p, bad).unwrap();
    let o = configure_cri("containerd", &["--path", path]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[path, "not valid TOML", "line 2", "left unchanged"],
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), bad);
    assert!(!backup.exists());

    // Version 1 (no `version`) is refused, not guessed at.
    std::fs::write(&p, "[plugins.cri]\n").unwrap();
    let o = configure_cri("containerd", &["--path", path]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[path, "version 1", "containerd config migrate"],
    );
}

#[test]
fn configure_containerd_v3_uses_a_drop_in_named_in_imports() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.toml");
    let path = p.to_str().unwrap();
    let main = "version = 3\n\n# containerd 2.x\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n";
    std::fs::write(&p, main).unwrap();
    let o = configure_cri("containerd", &["--path", path, "--name", "ovh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dropin = t.path().join("conf.d/99-ovh.toml");
    let d: toml::Value = toml::from_str(&std::fs::read_to_string(&dropin).unwrap()).unwrap();
    assert_eq!(d["version"].as_integer(), Some(3));
    let h = &d["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["ovh"];
    assert_eq!(
        h["options"]["BinaryName"].as_str(),
        Some("/usr/bin/oci-volume-runtime")
    );
    assert_eq!(h["options"]["SystemdCgroup"].as_bool(), Some(true));
    let m: toml::Value = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(
        m["imports"].as_array().unwrap()[0].as_str(),
        dropin.to_str()
    );
    assert!(
        m["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
            .get("ovh")
            .is_none()
    );

    let o = configure_cri("containerd", &["--path", path, "--name", "ovh", "--remove"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dropin.exists());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), main);

    // A glob in `imports` already takes the drop-in: the main file is left alone.
    let globbed = "version = 3\nimports = [\"conf.d/*.toml\"]\n";
    std::fs::write(&p, globbed).unwrap();
    let o = configure_cri("containerd", &["--path", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), globbed);
    assert!(t.path().join("conf.d/99-oci-volume.toml").exists());
}

/// The keys of a `[crio.runtime.runtimes.NAME]` table, as crio.conf(5) documents them
/// ("CRIO.RUNTIME.RUNTIMES TABLE"; `runtime_type` is "oci" or "vm").
const CRIO_RUNTIME_KEYS: &[&str] = &[
    "runtime_path",
    "runtime_root",
    "runtime_type",
    "runtime_config_path",
    "privileged_without_host_devices",
    "allowed_annotations",
    "platform_runtime_paths",
];

#[test]
fn configure_crio_writes_a_drop_in_with_documented_keys() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("crio.conf.d/50-oci-volume.conf");
    let path = p.to_str().unwrap();
    let o = configure_cri("crio", &["--path", path, "--wrapper", "/opt/w"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("systemctl restart crio"));
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v.as_table().unwrap().keys().collect::<Vec<_>>(), ["crio"]);
    let runtimes = v["crio"]["runtime"]["runtimes"].as_table().unwrap();
    assert_eq!(runtimes.keys().collect::<Vec<_>>(), ["oci-volume"]);
    let h = runtimes["oci-volume"].as_table().unwrap();
    for k in h.keys() {
        assert!(
            CRIO_RUNTIME_KEYS.contains(&k.as_str()),
            "{k} is not a CRI-O runtime key"
        );
    }
    assert_eq!(h["runtime_path"].as_str(), Some("/opt/w"));
    assert!(["oci", "vm"].contains(&h["runtime_type"].as_str().unwrap()));
    assert_eq!(h["runtime_type"].as_str(), Some("oci"));
    assert!(h["runtime_root"].as_str().unwrap().starts_with('/'));
    let allowed: Vec<&str> = h["allowed_annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        allowed,
        ["io.oci-volume-hook.enabled", "io.oci-volume-hook.ownership"]
    );

    // Idempotent; an operator's other settings in the same drop-in survive add and remove.
    let o = configure_cri("crio", &["--path", path, "--wrapper", "/opt/w"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("\n[crio.runtime]\nlog_level = \"debug\"  # operator's\n");
    std::fs::write(&p, &text).unwrap();
    let o = configure_cri("crio", &["--path", path, "--remove"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left = std::fs::read_to_string(&p).unwrap();
    assert!(
        left.contains("log_level = \"debug\"  # operator's") && !left.contains("oci-volume"),
        "{left}"
    );
    // A drop-in that held only the handler is removed with it.
    std::fs::remove_file(&p).unwrap();
    configure_cri("crio", &["--path", path]);
    let o = configure_cri("crio", &["--path", path, "--remove"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!p.exists());
    std::fs::write(&p, "[crio.runtime\n").unwrap();
    let o = configure_cri("crio", &["--path", path]);
    assert_one_line_error(&o, "oci-volume-hook", &[path, "not valid TOML"]);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[crio.runtime\n");
}

/// containerd reads the file's `runtimes` instead of its built-in ones: registering on a node
/// without a config file must not take `runc`, every other pod's handler, away. Checked with
/// containerd's own `config dump`; `--remove` then leaves nothing of ours.
#[test]
fn configure_containerd_on_a_node_without_config_keeps_runc() {
    let Some(containerd) = engine("containerd-dump", "containerd") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.toml");
    let path = p.to_str().unwrap();
    let o = configure_cri("containerd", &["--path", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dump = Command::new(&containerd)
        .args(["--config", path, "config", "dump"])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    let v: toml::Value = toml::from_str(&String::from_utf8_lossy(&dump.stdout)).unwrap();
    let runtimes = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    assert_eq!(
        runtimes
            .get("runc")
            .and_then(|r| r.get("runtime_type"))
            .and_then(|v| v.as_str()),
        Some("io.containerd.runc.v2"),
        "containerd still has its runc handler:\n{}",
        String::from_utf8_lossy(&dump.stdout)
    );
    assert_eq!(
        runtimes["oci-volume"]["options"]["BinaryName"].as_str(),
        Some("/usr/bin/oci-volume-runtime")
    );
    let o = configure_cri("containerd", &["--path", path, "--remove"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "version = 2\n");
}

/// containerd 1.6/1.7: an imported file's CRI section replaces the main file's, so a handler
/// added to the main file would silently vanish. Refused, naming the file to use instead.
#[test]
fn configure_containerd_v2_refuses_when_an_import_holds_the_cri_section() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("config.toml");
    let path = p.to_str().unwrap();
    std::fs::create_dir_all(t.path().join("conf.d")).unwrap();
    let main = "version = 2\nimports = [\"conf.d/*.toml\"]\n";
    std::fs::write(&p, main).unwrap();
    let cri = t.path().join("conf.d/10-cri.toml");
    std::fs::write(
        &cri,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n",
    )
    .unwrap();
    let o = configure_cri("containerd", &["--path", path]);
    assert_one_line_error(
        &o,
        "oci-volume-hook",
        &[
            path,
            cri.to_str().unwrap(),
            "replaces this file's",
            "left unchanged",
        ],
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), main);
    // Registered in that file instead, it holds.
    let o = configure_cri("containerd", &["--path", cri.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(&cri)
            .unwrap()
            .contains("runtimes.oci-volume")
    );
}

/// A private containerd (own root, state and sockets under `dir`, named in the file) started
/// on `config`, asked through `ctr plugins ls` whether its CRI plugin loaded: "ok", or the
/// error containerd logged for it.
fn cri_plugin(containerd: &Path, ctr: &Path, config: &Path, dir: &Path) -> String {
    let log = dir.join("containerd.log");
    let mut child = Command::new(containerd)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let o = Command::new(ctr)
            .arg("--address")
            .arg(dir.join("sock"))
            .args(["plugins", "ls"])
            .output()
            .unwrap();
        if o.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            break format!("containerd exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    // containerd 1.6: `io.containerd.grpc.v1 cri`; 2.x adds `io.containerd.cri.v1 runtime`
    // and `images`, which the first needs.
    let cri: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.len() >= 4
                && ((f[0] == "io.containerd.grpc.v1" && f[1] == "cri")
                    || f[0] == "io.containerd.cri.v1")
        })
        .collect();
    if !cri.is_empty() && cri.iter().all(|f| f[f.len() - 1] == "ok") {
        return "ok".into();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let why = text
        .lines()
        .find(|l| l.contains("failed to load plugin") && l.contains("cri"))
        .unwrap_or(listed.as_str());
    format!("CRI not ok: {why}")
}

/// What an operator does to containerd's file between the tool's steps.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Register,
    /// Another handler added by hand, as nvidia-ctk, kata-deploy or gVisor's docs do.
    AddOther,
    Remove,
}

/// Another handler, as nvidia-ctk or kata-deploy add one, in a file of version 2 or 3.
fn other_handler(plugin: &str) -> String {
    format!(
        "\n[plugins.\"{plugin}\".containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"{plugin}\".containerd.runtimes.nvidia.options]\n    BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
    )
}

/// The CRI plugin's section name in a file of `version`.
fn cri_plugin_name(version: u8) -> &'static str {
    if version == 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    }
}

/// A file for a private containerd: nothing of this project in it; `runc`: the operator's
/// runc handler's lines, if any.
fn private_config(dir: &Path, version: u8, runc: &str) -> String {
    let plugin = cri_plugin_name(version);
    let v2_only = if version == 2 {
        "  disable_apparmor = true\n"
    } else {
        ""
    };
    format!(
        "version = {version}\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\n[grpc]\n  address = \"{d}/sock\"\n\n[ttrpc]\n  address = \"{d}/ttrpc.sock\"\n\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\n[plugins.\"{plugin}\"]\n{v2_only}  [plugins.\"{plugin}\".containerd]\n    default_runtime_name = \"runc\"\n{runc}",
        d = dir.display()
    )
}

fn private_v2(dir: &Path, runc: &str) -> String {
    private_config(dir, 2, runc)
}

/// Register, another handler added by hand, and remove, in every order, from a file naming
/// no runtime and from one with the operator's own runc handler: after each of the tool's
/// steps containerd itself loads the file with its CRI plugin `ok` (a removal never breaks
/// a file that loaded), remove leaves nothing of ours, and remove right after register gives
/// a file that loaded back byte for byte (but for a written-out `runc` another handler needs).
fn register_other_remove_in_every_order(containerd: &Path, ctr: &Path, version: u8) {
    let plugin = cri_plugin_name(version);
    let operator_runc = format!(
        "    [plugins.\"{plugin}\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n      [plugins.\"{plugin}\".containerd.runtimes.runc.options]\n        BinaryName = \"/usr/local/sbin/runc-patched\"\n"
    );
    use Step::*;
    let orders = [
        [Register, AddOther, Remove],
        [Register, Remove, AddOther],
        [AddOther, Register, Remove],
        [AddOther, Remove, Register],
        [Remove, Register, AddOther],
        [Remove, AddOther, Register],
    ];
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ctd");
    std::fs::create_dir_all(&dir).unwrap();
    let p = t.path().join("config.toml");
    let path = p.to_str().unwrap();
    let hook = t.path().join("hook.toml");
    // Version 3's handler is in a drop-in: the files containerd reads, together, are the key.
    let dropin = t.path().join("conf.d/99-oci-volume.toml");
    let files = || {
        let d = std::fs::read_to_string(&dropin).unwrap_or_default();
        format!("{}\n# drop-in:\n{d}", std::fs::read_to_string(&p).unwrap())
    };
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    let mut cri = |key: String| {
        seen.entry(key)
            .or_insert_with(|| cri_plugin(containerd, ctr, &p, &dir))
            .clone()
    };
    let starts = [
        ("no runtime", String::new()),
        ("the operator's runc", operator_runc),
    ];
    for (start, runc) in &starts {
        for order in orders {
            let what = format!("containerd {version} file, {start}, {order:?}");
            std::fs::write(&p, private_config(&dir, version, runc)).unwrap();
            let _ = std::fs::remove_file(&dropin);
            std::fs::write(&hook, "").unwrap();
            let mut state = cri(files());
            let mut last: Option<(Step, String, &str)> = None;
            for step in order {
                let before = files();
                match step {
                    AddOther => {
                        let text = std::fs::read_to_string(&p).unwrap();
                        std::fs::write(&p, format!("{text}{}", other_handler(plugin))).unwrap()
                    }
                    Register | Remove => {
                        let mut args = vec!["--path", path, "--wrapper", "/opt/w"];
                        args.extend(["--config", hook.to_str().unwrap()]);
                        if step == Remove {
                            args.push("--remove");
                        }
                        let o = configure_cri("containerd", &args);
                        assert!(o.status.success(), "{what}: {step:?}: {}", stderr(&o));
                    }
                }
                let now_files = files();
                let now = cri(now_files.clone());
                match step {
                    Register => assert_eq!(now, "ok", "{what}: after {step:?}:\n{now_files}"),
                    Remove if state == "ok" => {
                        assert_eq!(now, "ok", "{what}: after {step:?}:\n{now_files}")
                    }
                    _ => {}
                }
                if step == Remove {
                    assert!(
                        !now_files.contains("runtimes.oci-volume"),
                        "{what}:\n{now_files}"
                    );
                    // (A file that did not load before is not given back broken.) The `runc`
                    // written out beside another handler stays: containerd 1.6 needs it, 2.x
                    // does not, and nothing in the file says which one reads it.
                    if let Some((Register, registered_from, "ok")) = &last {
                        let written_runc = format!(
                            "\n# Added by oci-volume-hook with its handler: containerd's built-in runc handler,\n# which containerd forgets once this file names any other runtime.\n[plugins.\"{plugin}\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n"
                        );
                        let given_back = if registered_from.contains("runtimes.nvidia") {
                            now_files.replacen(&written_runc, "", 1)
                        } else {
                            now_files.clone()
                        };
                        assert_eq!(
                            &given_back, registered_from,
                            "{what}: not given back exactly"
                        );
                    }
                }
                last = Some((step, before, if state == "ok" { "ok" } else { "broken" }));
                state = now;
            }
        }
    }
    // Registered over the operator's runc handler, the wrapper runs that runc.
    let c: toml::Value = toml::from_str(&std::fs::read_to_string(&hook).unwrap()).unwrap();
    assert_eq!(c["runtime"].as_str(), Some("/usr/local/sbin/runc-patched"));
}

/// containerd 1.6 (Debian 12's). Fails on the code before: remove took the written-out
/// `runc` away from under the other handler ("no corresponding runtime configured in
/// `containerd.runtimes` for `containerd` `default_runtime_name = \"runc\"`").
#[test]
fn configure_containerd_register_other_handler_remove_in_every_order_keeps_cri_loading() {
    let Some(containerd) = engine("configure_orders", "containerd") else {
        return;
    };
    let Some(ctr) = engine("configure_orders", "ctr") else {
        return;
    };
    register_other_remove_in_every_order(&containerd, &ctr, 2);
}

/// containerd 2.1 (Debian sid's, from the tree tests/sid/tree.sh builds; it runs on this
/// host), on files of version 3 (a drop-in) and of version 2 (migrated by containerd).
#[test]
fn configure_containerd_2_register_other_handler_remove_in_every_order_keeps_cri_loading() {
    if !root_or_skip("configure_orders_2") {
        return;
    }
    let tree = std::env::var_os("OCI_VOLUME_HOOK_SID_TREE")
        .unwrap_or_else(|| "/var/tmp/oci-volume-hook-sid".into());
    let bin = Path::new(&tree).join("usr/bin");
    if !Path::new(&tree).join(".ready").exists() {
        assert!(
            !required(),
            "configure_orders_2: no containerd 2 tree at {} (tests/sid/tree.sh builds it)",
            Path::new(&tree).display()
        );
        eprintln!("SKIP configure_orders_2: no containerd 2 tree");
        return;
    }
    for version in [3, 2] {
        register_other_remove_in_every_order(&bin.join("containerd"), &bin.join("ctr"), version);
    }
}

/// A 0600 file (registry credentials live in containerd's and dockerd's files) keeps its
/// mode and owner, and so does its backup, an old world-readable backup included. Fails on
/// the code before (the backup was written 0644).
#[test]
fn backups_keep_the_originals_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let root = nix::unistd::geteuid().is_root();
    for (engine, name, text) in [
        ("containerd", "config.toml", CONTAINERD_V2),
        (
            "docker",
            "daemon.json",
            "{\"registry-mirrors\": [\"https://u:secret@m\"]}",
        ),
    ] {
        let p = t.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        if root {
            std::os::unix::fs::chown(&p, Some(4321), Some(8765)).unwrap();
        }
        let want = std::fs::metadata(&p).unwrap();
        let backup = t.path().join(format!("{name}.oci-volume-hook.bak"));
        std::fs::write(&backup, "old").unwrap();
        std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o644)).unwrap();
        let hook = t.path().join("hook.toml");
        let mut args = vec!["--path", p.to_str().unwrap()];
        if engine == "containerd" {
            args.extend(["--config", hook.to_str().unwrap()]);
        }
        let o = configure_cri(engine, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), text);
        for f in [&p, &backup] {
            let m = std::fs::metadata(f).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o600, "{}", f.display());
            assert_eq!(
                (m.uid(), m.gid()),
                (want.uid(), want.gid()),
                "{}",
                f.display()
            );
        }
    }
}

/// k3s and RKE2 write config.toml afresh at every start: `--k3s` puts the handler into the
/// template extending k3s's base one. Rendered as k3s would (the base in place of its
/// `template` call), containerd 1.6 loads it with the CRI plugin `ok` and the handler there;
/// an operator's template keeps its lines through register and remove; one that does not
/// extend the base is left alone and the block to add printed.
#[test]
fn configure_containerd_k3s_writes_the_template() {
    let Some(containerd) = engine("configure_k3s", "containerd") else {
        return;
    };
    let Some(ctr) = engine("configure_k3s", "ctr") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ctd");
    std::fs::create_dir_all(&dir).unwrap();
    let etc = t.path().join("agent/etc/containerd");
    std::fs::create_dir_all(&etc).unwrap();
    let generated = etc.join("config.toml");
    let k3s_runc = "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n      SystemdCgroup = false\n";
    let base = private_v2(&dir, k3s_runc);
    std::fs::write(&generated, &base).unwrap();
    let hook = t.path().join("hook.toml");
    let args = [
        "--k3s",
        "--path",
        generated.to_str().unwrap(),
        "--wrapper",
        "/opt/w",
        "--config",
        hook.to_str().unwrap(),
    ];
    let tmpl = etc.join("config.toml.tmpl");
    let o = configure_cri("containerd", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restart k3s"));
    let text = std::fs::read_to_string(&tmpl).unwrap();
    assert!(text.starts_with("{{ template \"base\" . }}\n"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&generated).unwrap(),
        base,
        "k3s's own file untouched"
    );
    // k3s renders it: the base in place of the call.
    let rendered = text.replace("{{ template \"base\" . }}", &base);
    std::fs::write(&generated, &rendered).unwrap();
    assert_eq!(
        cri_plugin(&containerd, &ctr, &generated, &dir),
        "ok",
        "{rendered}"
    );
    let v: toml::Value = toml::from_str(&rendered).unwrap();
    let h = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["oci-volume"];
    assert_eq!(h["options"]["BinaryName"].as_str(), Some("/opt/w"));
    assert_eq!(h["options"]["SystemdCgroup"].as_bool(), Some(false));
    std::fs::write(&generated, &base).unwrap();
    let o = configure_cri("containerd", &args);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    // Ours alone: removed with the block.
    let mut remove = args.to_vec();
    remove.push("--remove");
    let o = configure_cri("containerd", &remove);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!tmpl.exists());

    // The operator's own template extending the base: kept line for line.
    let mine = "{{ template \"base\" . }}\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://mirror\"]\n";
    std::fs::write(&tmpl, mine).unwrap();
    let o = configure_cri("containerd", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&tmpl).unwrap();
    assert!(
        text.starts_with(mine) && text.contains("runtimes.oci-volume"),
        "{text}"
    );
    let o = configure_cri("containerd", &remove);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), mine);

    // A whole template of the operator's: left alone, the lines to add printed.
    let whole = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n";
    std::fs::write(&tmpl, whole).unwrap();
    let o = configure_cri("containerd", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), whole);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("add these lines")
            && out
                .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.oci-volume]"),
        "{out}"
    );
    std::fs::remove_file(&tmpl).unwrap();

    // containerd 2.x under k3s: version 3, its own template and plugin name.
    std::fs::write(&generated, "version = 3\n").unwrap();
    let o = configure_cri("containerd", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v3 = std::fs::read_to_string(etc.join("config-v3.toml.tmpl")).unwrap();
    assert!(
        v3.contains("io.containerd.cri.v1.runtime\".containerd.runtimes.oci-volume"),
        "{v3}"
    );
    assert!(!tmpl.exists());
}
