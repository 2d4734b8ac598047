//! containerd and dockerd started by a test, with private roots, sockets and state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Daemons {
    pub dir: PathBuf,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    pub docker: PathBuf,
    pub ctr: PathBuf,
}

impl Daemons {
    pub fn ctd_sock(&self) -> PathBuf {
        self.dir.join("ctd/sock")
    }
    pub fn docker_sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts containerd (environment `env` reaches the runtimes it starts) and, when
    /// `daemon_json` is given, dockerd on top of it.
    pub fn start(
        dir: &Path,
        env: &[(&str, &Path)],
        daemon_json: Option<serde_json::Value>,
        bins: [PathBuf; 4],
    ) -> Daemons {
        let [containerd, dockerd, docker, ctr] = bins;
        std::fs::create_dir_all(dir.join("ctd")).unwrap();
        let conf = dir.join("containerd.toml");
        std::fs::write(
            &conf,
            format!(
                "version = 2\nroot = \"{0}/ctd/root\"\nstate = \"{0}/ctd/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{0}/ctd/sock\"\n[debug]\nlevel = \"info\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let mut cmd = Command::new(&containerd);
        cmd.arg("--config")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut d = Daemons {
            dir: dir.to_path_buf(),
            containerd: Some(cmd.spawn().unwrap()),
            dockerd: None,
            docker,
            ctr,
        };
        d.wait_for(
            |d| d.ctd_sock().exists() && d.ctr(&["version"]).status.success(),
            "containerd",
        );
        if let Some(json) = daemon_json {
            let dj = dir.join("daemon.json");
            std::fs::write(&dj, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
            let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
            let child = Command::new(&dockerd)
                .arg("--config-file")
                .arg(&dj)
                .arg(format!("--containerd={}", d.ctd_sock().display()))
                .arg(format!("--data-root={}", dir.join("docker").display()))
                .arg(format!("--exec-root={}", dir.join("dexec").display()))
                .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
                .arg("-H")
                .arg(format!("unix://{}", d.docker_sock().display()))
                .args([
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=vfs",
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            d.dockerd = Some(child);
            d.wait_for(
                |d| d.docker_sock().exists() && d.docker(&["version"]).status.success(),
                "dockerd",
            );
        }
        d
    }

    fn wait_for(&mut self, ready: impl Fn(&Daemons) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready(self) {
            if Instant::now() > deadline {
                let logs = std::fs::read_to_string(self.dir.join(format!("{what}.log")))
                    .unwrap_or_default();
                panic!(
                    "{what} did not start:\n{}",
                    logs.lines().rev().take(30).collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(&self.docker)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_sock().display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("docker-client"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker run --rm --network none --runtime RUNTIME -v VOLUME IMAGE /bin/sh -c SCRIPT`.
    pub fn docker_sh(&self, runtime: &str, volume: &str, image: &str, script: &str) -> Output {
        self.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            runtime,
            "-v",
            volume,
            image,
            "/bin/sh",
            "-c",
            script,
        ])
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("--address")
            .arg(self.ctd_sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker import` of a rootfs directory.
    pub fn import(&self, rootfs: &Path, tag: &str) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new(&self.docker)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_sock().display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("docker-client"))
            .args(["import", "-", tag])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of {}", rootfs.display());
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in [self.dockerd.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        // Whatever the daemons left mounted below the test directory.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The usual Docker set-up of the end-to-end tests: containerd and dockerd with
/// `userns-remap: default` and the wrapper registered as runtime `ovh`, containerd's
/// environment pointing the wrapper at `config`. `None` (a skip, or a failure under CI)
/// when an engine is missing.
#[allow(dead_code)] // not every test binary starts Docker
pub fn docker_with_wrapper(test: &str, dir: &Path, config: &Path) -> Option<Daemons> {
    let names = ["containerd", "dockerd", "docker", "ctr", "runc"];
    let bins = names
        .iter()
        .map(|n| crate::common::engine(test, n))
        .collect::<Option<Vec<PathBuf>>>()?;
    let [containerd, dockerd, docker, ctr, _runc] = <[PathBuf; 5]>::try_from(bins).ok()?;
    Some(Daemons::start(
        dir,
        &[("OCI_VOLUME_HOOK_CONFIG", config)],
        Some(serde_json::json!({
            "runtimes": {"ovh": {"path": crate::common::wrapper_bin()}},
            "userns-remap": "default"
        })),
        [containerd, dockerd, docker, ctr],
    ))
}

/// The host uid container root maps to under `userns-remap: default`.
#[allow(dead_code)]
pub fn dockremap_root() -> u32 {
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let line = subuid
        .lines()
        .find(|l| l.starts_with("dockremap:"))
        .expect("dockerd created dockremap");
    line.split(':').nth(1).unwrap().parse().unwrap()
}
