//! containerd's CRI plugin driven the way kubelet drives it: a private containerd (own root,
//! state, sockets, runc state) whose configuration `oci-volume-hook configure containerd`
//! wrote from a plain one, and a CRI client (tests/cri/cri.py over grpcio).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{hook_bin, required, wrapper_bin};

pub const HANDLER: &str = "oci-volume";

/// The CRI client's Python (a venv under target/, made by tests/cri/setup.sh); skips the
/// test when it cannot be had, unless end-to-end tests are required.
pub fn python(test: &str) -> Option<PathBuf> {
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cri/setup.sh");
    let out = Command::new("bash").arg(&setup).output().unwrap();
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !required(),
        "{test}: no CRI client (tests/cri/setup.sh): {why}"
    );
    eprintln!("SKIP {test}: no CRI client: {why}");
    None
}

pub struct Cri {
    pub dir: PathBuf,
    containerd: Option<Child>,
    python: PathBuf,
    ctr: PathBuf,
    pods: RefCell<Vec<String>>,
    /// containerd's major version.
    pub major: u32,
}

/// Where Debian's containernetworking-plugins keep their plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
const CNI_USED: [&str; 3] = ["loopback", "bridge", "host-local"];

/// Whether the CNI plugins a pod network here needs are installed.
pub fn cni_plugins() -> bool {
    CNI_USED
        .iter()
        .all(|p| Path::new(CNI_PLUGINS).join(p).exists())
}

/// A pod network as a node's usual one: `bridge` with `host-local` addresses (leases under
/// the test's directory), containerd adds `loopback`. Its bridge and veths are made in
/// containerd's own network namespace ([`Cri::start`]), never the host's. In the test's CNI
/// directories, when the plugins are installed; containerd loads them at start-up, pods on
/// the node's network never use them.
fn cni_network(dir: &Path) {
    if !cni_plugins() {
        return;
    }
    let (bin, conf) = (dir.join("cni/bin"), dir.join("cni/conf"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    for p in CNI_USED {
        std::os::unix::fs::symlink(Path::new(CNI_PLUGINS).join(p), bin.join(p)).unwrap();
    }
    let ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.250.0.0/24"}]],
        "dataDir": dir.join("cni/leases"),
    });
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [{"type": "bridge", "bridge": "cni-test0", "ipam": ipam}],
    });
    std::fs::write(conf.join("10-pods.conflist"), list.to_string()).unwrap();
}

/// containerd's major version (`containerd --version`: `containerd <module> v1.6.20 ...` or
/// `containerd <module>/v2 2.1.9 ...`): 1.x takes config version 2, 2.x version 3.
pub fn major_version(containerd: &Path) -> u32 {
    let out = Command::new(containerd).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.trim_start_matches('v').split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("containerd --version: {text}"))
}

/// A plain containerd configuration for that major version: nothing of this project in it;
/// `runc`: the operator's runc, named by the runc handler (`BinaryName`). The CNI directories
/// are the test's own (pods on the node's network never use them).
fn base_config(dir: &Path, runc: Option<&Path>, major: u32) -> String {
    let binary = runc.map_or(String::new(), |r| {
        format!("\n        BinaryName = \"{}\"", r.display())
    });
    let common = format!(
        r#"root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/sock"

[ttrpc]
  address = "{d}/ttrpc.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
        d = dir.display()
    );
    // Same keys in both versions, under the plugin that holds them there.
    let runtime = |plugin: &str, snapshotter: &str, bin_dir: &str| {
        format!(
            r#"  disable_apparmor = true
  # This VM lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."{plugin}".containerd]{snapshotter}
    default_runtime_name = "runc"
    [plugins."{plugin}".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."{plugin}".containerd.runtimes.runc.options]
        Root = "{d}/runc"{binary}
  [plugins."{plugin}".cni]
    {bin_dir}
    conf_dir = "{d}/cni/conf"
"#,
            d = dir.display()
        )
    };
    if major >= 2 {
        let plugin = "io.containerd.cri.v1.runtime";
        format!(
            r#"version = 3
{common}
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "docker.io/library/ovh-pause:latest"

[plugins."{plugin}"]
  # A pod's network namespace under this test's directory, not /run/netns.
  netns_mounts_under_state_dir = true
{runtime}
# Its socket would be shared by every containerd in this mount namespace.
[plugins."io.containerd.nri.v1.nri"]
  disable = true
"#,
            runtime = runtime(
                plugin,
                "",
                &format!("bin_dirs = [\"{}/cni/bin\"]", dir.display())
            )
        )
    } else {
        let plugin = "io.containerd.grpc.v1.cri";
        format!(
            r#"version = 2
{common}
[plugins."{plugin}"]
  sandbox_image = "docker.io/library/ovh-pause:latest"
{runtime}"#,
            runtime = runtime(
                plugin,
                "\n    snapshotter = \"native\"",
                &format!("bin_dir = \"{}/cni/bin\"", dir.display())
            )
        )
    }
}

impl Cri {
    /// Writes the base configuration, registers the wrapper with `configure containerd`,
    /// starts containerd (in a network namespace of its own) with
    /// `OCI_VOLUME_HOOK_CONFIG=hook_config`.
    pub fn start(
        dir: &Path,
        hook_config: &Path,
        containerd: &Path,
        ctr: &Path,
        python: PathBuf,
    ) -> Cri {
        Cri::start_with_runc(dir, hook_config, containerd, ctr, python, None)
    }

    /// [`Cri::start`] with the runc handler naming `runc` as its binary.
    pub fn start_with_runc(
        dir: &Path,
        hook_config: &Path,
        containerd: &Path,
        ctr: &Path,
        python: PathBuf,
        runc: Option<&Path>,
    ) -> Cri {
        std::fs::create_dir_all(dir).unwrap();
        let major = major_version(containerd);
        let config = dir.join("config.toml");
        std::fs::write(&config, base_config(dir, runc, major)).unwrap();
        cni_network(dir);
        // The registration passes the annotations the tool's own configuration allows.
        let out = Command::new(hook_bin())
            .env("OCI_VOLUME_HOOK_CONFIG", hook_config)
            .args(["configure", "containerd", "--path"])
            .arg(&config)
            .arg("--wrapper")
            .arg(wrapper_bin())
            .arg("--config")
            .arg(hook_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "configure containerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("configure.out"), &out.stdout).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // In a network namespace of its own: pod networks stay off the host's (pods on the
        // node's network share containerd's).
        let child = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(containerd)
            .arg("--config")
            .arg(&config)
            .env("OCI_VOLUME_HOOK_CONFIG", hook_config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let cri = Cri {
            dir: dir.to_path_buf(),
            containerd: Some(child),
            python,
            ctr: ctr.to_path_buf(),
            pods: RefCell::new(Vec::new()),
            major,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while cri.call("Version", json!({})).is_err() {
            if Instant::now() > deadline {
                panic!("containerd did not start:\n{}", cri.log_tail());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        cri
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One CRI call: the response, or the gRPC error's text.
    pub fn call(&self, method: &str, body: Value) -> Result<Value, String> {
        let out = Command::new(&self.python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cri/cri.py"))
            .arg(self.sock())
            .arg(method)
            .arg(body.to_string())
            .env(
                "CRI_GEN_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cri-gen"),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{method}: no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        match v.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(v),
        }
    }

    /// `ctr images import` of a docker-archive tar into the CRI's namespace.
    pub fn import(&self, tar: &Path) {
        let mut ctr = Command::new(&self.ctr);
        ctr.arg("--address").arg(self.sock()).args([
            "-n",
            "k8s.io",
            "images",
            "import",
            "--snapshotter",
            "native",
        ]);
        // ctr 2.x goes through the transfer service by default, which unpacks only for the
        // snapshotters its own configuration lists (none here): import on the client side.
        if self.major >= 2 {
            ctr.arg("--local");
        }
        let out = ctr.arg(tar).output().unwrap();
        assert!(
            out.status.success(),
            "ctr import {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// RunPodSandbox on the host network (no CNI, so no hostname either). Returns the pod id
    /// and its config, which CreateContainer repeats.
    pub fn run_pod(&self, name: &str, handler: &str, annotations: Value) -> (String, Value) {
        let linux = json!({"security_context": {"namespace_options": {"network": "NODE"}}});
        self.run_pod_linux(name, handler, annotations, linux)
    }

    /// RunPodSandbox with the pod's `linux` settings as given (namespaces, user namespace).
    pub fn run_pod_linux(
        &self,
        name: &str,
        handler: &str,
        annotations: Value,
        linux: Value,
    ) -> (String, Value) {
        let logs = self.dir.join("pods").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        let config = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "default"},
            "log_directory": logs,
            "annotations": annotations,
            "linux": linux,
        });
        let r = self
            .call(
                "RunPodSandbox",
                json!({"config": config, "runtime_handler": handler}),
            )
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log_tail()));
        let id = r["pod_sandbox_id"].as_str().unwrap().to_string();
        self.pods.borrow_mut().push(id.clone());
        (id, config)
    }

    /// CreateContainer then StartContainer; the error of whichever failed.
    pub fn run(
        &self,
        pod: &(String, Value),
        name: &str,
        image: &str,
        script: &str,
        mounts: Value,
    ) -> (Option<String>, Result<(), String>) {
        let config = json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "command": ["/bin/sh", "-c", script],
            "log_path": format!("{name}.log"),
            "mounts": mounts,
        });
        self.run_config(pod, config)
    }

    /// CreateContainer of a whole ContainerConfig, then StartContainer.
    pub fn run_config(
        &self,
        pod: &(String, Value),
        config: Value,
    ) -> (Option<String>, Result<(), String>) {
        let id = match self.create(pod, config) {
            Ok(id) => id,
            Err(e) => return (None, Err(e)),
        };
        let started = self.start_container(&id);
        (Some(id), started)
    }

    /// CreateContainer alone (containerd writes the spec; no runtime call yet).
    pub fn create(&self, pod: &(String, Value), config: Value) -> Result<String, String> {
        let r = self.call(
            "CreateContainer",
            json!({"pod_sandbox_id": pod.0, "config": config, "sandbox_config": pod.1}),
        )?;
        Ok(r["container_id"].as_str().unwrap().to_string())
    }

    /// StartContainer: where the runtime (the wrapper) creates and starts the container.
    pub fn start_container(&self, id: &str) -> Result<(), String> {
        self.call("StartContainer", json!({"container_id": id}))
            .map(|_| ())
    }

    pub fn status(&self, id: &str) -> Value {
        self.call("ContainerStatus", json!({"container_id": id}))
            .unwrap()["status"]
            .clone()
    }

    /// Waits for the container to exit; returns its status.
    pub fn wait_exit(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status(id);
            if s["state"] == "CONTAINER_EXITED" || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// ExecSync: exit code and stdout.
    pub fn exec(&self, id: &str, script: &str) -> (i64, String) {
        let r = self
            .call(
                "ExecSync",
                json!({"container_id": id, "cmd": ["/bin/sh", "-c", script], "timeout": 30}),
            )
            .unwrap();
        let stdout = r["stdout"].as_str().map(b64).unwrap_or_default();
        (r["exit_code"].as_i64().unwrap_or(0), stdout)
    }

    /// The lines the container wrote, as kubelet's log readers see them (the CRI log
    /// format: time, stream, tag, then the line).
    pub fn log_lines(&self, pod: &str, name: &str) -> Vec<String> {
        let p = self.dir.join("pods").join(pod).join(format!("{name}.log"));
        std::fs::read_to_string(&p)
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        for id in self.pods.borrow().iter() {
            let _ = self.call("StopPodSandbox", json!({"pod_sandbox_id": id}));
            let _ = self.call("RemovePodSandbox", json!({"pod_sandbox_id": id}));
        }
        if let Some(mut child) = self.containerd.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        super::unmount_below(&self.dir);
    }
}

/// Base64 (protobuf's JSON for bytes), decoded.
fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = A.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A docker-archive tar made by hand: one layer (`rootfs`), one image config per tag with
/// the given command. `ctr images import` takes it without a registry.
pub fn image_tar(rootfs: &Path, out: &Path, images: &[(&str, Value)]) {
    let work = out.with_extension("d");
    std::fs::create_dir_all(&work).unwrap();
    let layer = work.join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let layer_sum = sha256(&layer);
    let mut manifest = Vec::new();
    let mut files = vec!["manifest.json".to_string(), "layer.tar".to_string()];
    for (tag, cmd) in images {
        let cfg = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sum}")]}
        });
        let tmp = work.join("config.tmp");
        std::fs::write(&tmp, cfg.to_string()).unwrap();
        let name = format!("{}.json", sha256(&tmp));
        std::fs::rename(&tmp, work.join(&name)).unwrap();
        manifest.push(json!({"Config": name, "RepoTags": [tag], "Layers": ["layer.tar"]}));
        files.push(name);
    }
    std::fs::write(
        work.join("manifest.json"),
        Value::Array(manifest).to_string(),
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(out)
        .args(&files)
        .status()
        .unwrap();
    assert!(st.success());
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
