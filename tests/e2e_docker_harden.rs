//! Through Docker (private dockerd + containerd, userns-remap): `-v <chroot>/..` is refused
//! with one line in `docker run` (issue 17, item 1), and a new tenant's first container
//! starts (issue 9).

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use common::*;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn docker_refuses_the_chroot_base_and_starts_a_new_tenant() {
    let f = Fixture::new();
    f.write_config("runtime = \"runc\"");
    let Some(d) =
        daemons::docker_with_wrapper("docker_harden", &f.path().join("d"), &f.config_path())
    else {
        return;
    };
    let rootfs = f.bundle("img").join("rootfs");
    d.import(&rootfs, "ovh-harden:latest");
    let run = |runtime: &str, volume: &str, script: &str| {
        d.docker_sh(runtime, volume, "ovh-harden:latest", script)
    };
    let t = f.tenant("user-dd");
    let titi = f.tenant("user-titi");
    std::fs::write(titi.join("secret"), "titi's").unwrap();
    std::os::unix::fs::chown(titi.join("secret"), Some(daemons::dockremap_root()), None).unwrap();
    let volume = format!("{}/..:/x", t.display());

    // Without the tool, the tenant reads another tenant's file.
    let o = run("runc", &volume, "cat /x/user-titi/secret");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "titi's", "{}", text(&o));

    let before = snapshot(&f.base());
    let o = run(
        "ovh",
        &volume,
        "cat /x/user-titi/secret; echo should-not-start",
    );
    let out = text(&o);
    eprintln!("refused: {out}");
    assert!(!o.status.success());
    assert!(
        !out.contains("titi's") && !out.contains("should-not-start"),
        "{out}"
    );
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("oci-volume-runtime"))
        .collect();
    assert_eq!(ours.len(), 1, "one line: {out}");
    assert!(
        ours[0].contains("oci-volume-runtime: mount /x")
            && (ours[0].contains("`..`") || ours[0].contains("refuse_chroot_bases")),
        "{out}"
    );
    assert_unchanged(&before, &snapshot(&f.base()), "refused container");
    assert_eq!(f.staging_left(), (vec![], vec![]));

    // A new tenant: its chroot does not exist yet; the first container starts, its
    // /etc/localtime a file of the remapped root.
    let tata = f.base().join("user-tata");
    let volume = format!("{}:/etc/localtime", tata.join("etc/localtime").display());
    let o = run("ovh", &volume, "test -f /etc/localtime && echo app-line");
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("app-line"));
    let remapped = daemons::dockremap_root();
    assert!(is_file(&tata.join("etc/localtime")));
    assert_eq!(owner_of(&tata.join("etc/localtime")), (remapped, remapped));
    // (dockerd itself makes a missing `-v` path, the chroot included, for the remapped root
    // before the runtime runs: only a runtime-level caller leaves it to the tool.)
}
