//! Registration through a real containerd (1.6 with config version 2 on the host; 2.1 with
//! version 3 in tests/e2e.sh's sid stage): the runc the operator's runc handler named
//! (`BinaryName`) is the one the wrapper runs, for features, create and start, and for stop
//! and remove also once the tool's own configuration no longer parses.

mod common;
#[path = "common/cri.rs"]
#[allow(dead_code)]
mod cri;

use std::os::unix::fs::PermissionsExt;

use common::*;
use cri::{Cri, HANDLER};
use serde_json::json;

/// Fails on the code before: the handler took the runc handler's settings but the wrapper
/// ran `runc` from PATH (Debian 12's 1.1.5), never the operator's runc.
#[test]
fn the_runc_the_handler_named_runs_behind_the_wrapper_even_with_a_broken_config() {
    let test = "registration_named_runc";
    let Some(containerd) = engine(test, "containerd") else {
        return;
    };
    let Some(ctr) = engine(test, "ctr") else {
        return;
    };
    let Some(runc) = engine(test, "runc") else {
        return;
    };
    let Some(python) = cri::python(test) else {
        return;
    };
    let f = Fixture::new();
    // The operator's runc: says it ran, then is the real one.
    let named = f.path().join("patched/runc");
    let calls = f.path().join("patched/calls");
    std::fs::create_dir_all(named.parent().unwrap()).unwrap();
    std::fs::write(
        &named,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            runc.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o755)).unwrap();
    // No `runtime` in the tool's configuration: registration records the handler's.
    let config = format!(
        "chroots = [\"{}/*\"]\nstaging_dir = \"{}\"\n[log]\nlevel = \"debug\"\ntarget = \"file\"\nfile = \"{}\"\n",
        f.base().display(),
        f.staging().display(),
        f.log_path().display()
    );
    std::fs::write(f.config_path(), &config).unwrap();
    let dir = f.path().join("ctd");
    let c = Cri::start_with_runc(
        &dir,
        &f.config_path(),
        &containerd,
        &ctr,
        python,
        Some(&named),
    );
    let said = std::fs::read_to_string(dir.join("configure.out")).unwrap();
    let line = format!("the wrapper runs {}", named.display());
    assert_eq!(said.matches(&line).count(), 1, "said in one line:\n{said}");
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
    // containerd 2.x asks each handler's runc for its `features` at start-up (the runc
    // handler's directly, the wrapper's passed on to the same runc); nothing else ran it yet.
    let before = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        before.lines().all(|l| l == "features"),
        "nothing ran the operator's runc yet: {before}"
    );
    if c.major >= 2 {
        assert_eq!(before.lines().count(), 2, "features of both handlers");
    }

    let pod = c.run_pod("named-runc", HANDLER, json!({}));
    let (id, started) = c.run(&pod, "sleeper", "ovh-test:latest", "sleep 1000", json!([]));
    let id = id.expect("created");
    started.unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));
    let ran = |verb: &str| {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == verb) && l.ends_with(&id))
    };
    assert!(
        ran("create") && ran("start"),
        "{:?}",
        std::fs::read_to_string(&calls)
    );

    // The tool's configuration stops parsing: stop and remove still reach the operator's runc.
    std::fs::write(
        f.config_path(),
        format!(
            "{}\nchroots = [\n",
            std::fs::read_to_string(f.config_path()).unwrap()
        ),
    )
    .unwrap();
    c.call("StopContainer", json!({"container_id": id, "timeout": 1}))
        .unwrap();
    assert_eq!(c.status(&id)["state"], "CONTAINER_EXITED");
    c.call("RemoveContainer", json!({"container_id": id}))
        .unwrap();
    let calls_text = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls_text
            .lines()
            .any(|l| l.contains(" kill ") && l.contains(&id))
            && calls_text
                .lines()
                .any(|l| l.contains("delete") && l.contains(&id)),
        "stop and remove went elsewhere:\n{calls_text}"
    );
}
