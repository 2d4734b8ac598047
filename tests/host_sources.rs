//! `host_sources`: with the list set, a bind source in no chroot is mounted only if it is
//! listed, as given and where it leads on the host. config.json is written as containerd's
//! CRI writes it after resolving a tenant's `<chroot>/vol -> /host/dir` itself: naming the
//! host directory. Through the real runc.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A bundle whose container runs `script` with `mounts`, in a user namespace.
fn bundle(f: &Fixture, name: &str, script: &str, mounts: Vec<Value>) -> PathBuf {
    let b = f.bundle(name);
    write_config_json(&b, &runc_config(script, mounts, Some(100000)));
    b
}

/// The fixture's directory as the kernel names it (the list is matched on real paths too).
fn real(f: &Fixture) -> PathBuf {
    std::fs::canonicalize(f.path()).unwrap()
}

#[test]
fn a_host_dir_containerd_resolved_from_a_tenant_link_is_refused_unless_listed() {
    let Some(runc) = engine("host_sources", "runc") else {
        return;
    };
    let f = Fixture::new();
    let root = real(&f);
    let platform = root.join("platform");
    f.write_config(&format!(
        "runtime = \"{}\"\nhost_sources = [\"{}/pods/*/volumes/**\"]",
        runc.display(),
        platform.display()
    ));
    let host = root.join("host-private");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "host-secret\n").unwrap();
    let before = snapshot(&host);
    let t = f.tenant("user-toto");

    // What config.json says once containerd followed `<chroot>/vol -> host-private`: the
    // host directory itself, in no chroot. Unlisted: refused before runc runs (on the
    // previous code runc mounted it and the container printed "host-secret").
    let b = bundle(
        &f,
        "resolved",
        "cat /data/secret",
        vec![bind(&host, "/data", true)],
    );
    let o = wrapper_run(&f, &b, "ovh-hs-resolved");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("host-secret"));
    assert_one_line_error(
        &o,
        "oci-volume-runtime",
        &[
            "mount /data",
            host.to_str().unwrap(),
            "in no chroot",
            "host_sources",
        ],
    );
    assert!(!b.join("state/ovh-hs-resolved").exists(), "runc never ran");
    assert!(f.log().contains("host_sources"), "the refusal is logged");
    assert_unchanged(&before, &snapshot(&host), "the host directory");

    // `plan` shows the same, in text and JSON.
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.contains("/data")).unwrap();
    assert!(
        line.starts_with("refuse") && line.contains("host_sources"),
        "{text}"
    );
    let o = f.hook(&["plan", "--bundle", b.to_str().unwrap(), "--json"], b"");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap()
        .clone();
    assert_eq!(m["action"], "refuse");
    assert!(
        m["reason"].as_str().unwrap().contains("host_sources"),
        "{m}"
    );

    // A listed pod volume and a source in a chroot, side by side: the container runs.
    let vol = platform.join("pods/uid-1/volumes/kubernetes.io~empty-dir/scratch");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), "pod-volume\n").unwrap();
    let b = bundle(
        &f,
        "listed",
        "cat /data/f && test -d /tmp && echo chroot-ok",
        vec![
            bind(&vol, "/data", true),
            bind(&t.join("home"), "/tmp", false),
        ],
    );
    let o = wrapper_run(&f, &b, "ovh-hs-listed");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "pod-volume\nchroot-ok\n"
    );
    assert_eq!(owner_of(&t.join("home")), (100000, 100000));

    // Listed as given, but a link on the host leads off the list; or `..` climbs out.
    let vols = platform.join("pods/uid-1/volumes");
    std::os::unix::fs::symlink(&host, vols.join("link")).unwrap();
    let climb = vols.join("../../../../host-private");
    for (name, source, why) in [
        ("link", vols.join("link"), "leads through a symlink"),
        ("climb", climb, "contains `..`"),
    ] {
        let b = bundle(
            &f,
            name,
            "cat /data/secret",
            vec![bind(&source, "/data", true)],
        );
        let o = wrapper_run(&f, &b, &format!("ovh-hs-{name}"));
        assert!(!String::from_utf8_lossy(&o.stdout).contains("host-secret"));
        assert_one_line_error(&o, "oci-volume-runtime", &["mount /data", why]);
    }
    assert_unchanged(&before, &snapshot(&host), "the host directory");

    // Unset (the default): sources in no chroot are the platform's, as before.
    f.write_config(&format!("runtime = \"{}\"", runc.display()));
    let b = bundle(&f, "unset", "cat /data/f", vec![bind(&vol, "/data", true)]);
    let o = wrapper_run(&f, &b, "ovh-hs-unset");
    assert!(o.status.success(), "{}", stderr(&o));
}
